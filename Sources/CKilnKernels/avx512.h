// Shared by the AVX-512 kernels: target attributes, masks and the 16-lane requantizing store.
#ifndef KILN_AVX512_H
#define KILN_AVX512_H

#include <immintrin.h>
#include <string.h>
#include "kiln_kernels.h"
#include "requant.h"

#define KILN_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")))
/// AVX-512 without VNNI (Skylake-SP, Cascade Lake's predecessors): the helpers below need no more.
#define KILN_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")))

/// clamp(rint(f) + zero_point, low, high) for 16 scaled accumulators. Clamping f to [low − zp, high − zp] before
/// rounding equals clamping after it (the bounds are integers), and makes Requantize's ±1e6 limit moot: the
/// bounds lie well inside it for any uint8 zero point.
KILN_AVX512 static inline __m512i requant16(__m512 f, const kiln_requant *rq) {
    f = _mm512_max_ps(f, _mm512_set1_ps((float)(rq->low - rq->zero_point)));
    f = _mm512_min_ps(f, _mm512_set1_ps((float)(rq->high - rq->zero_point)));
    return _mm512_add_epi32(_mm512_cvt_roundps_epi32(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC),
                            _mm512_set1_epi32(rq->zero_point));
}

/// The output levels of 16 scaled accumulators f = acc · multiplier; with `residual` (the other input's levels),
/// of the fused add that follows: dequantize both, add, quantize to the sum's levels and clamp.
KILN_AVX512 static inline __m512i level16(__m512 f, const __m512i *residual, const kiln_requant *rq) {
    if (!residual) return requant16(f, rq);
    // The conv's level minus its zero point, q − zp, is clamp(rint(f), low − zp, high − zp): kept in float.
    __m512 centred = _mm512_roundscale_ps(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    centred = _mm512_max_ps(centred, _mm512_set1_ps((float)(rq->low - rq->zero_point)));
    centred = _mm512_min_ps(centred, _mm512_set1_ps((float)(rq->high - rq->zero_point)));
    __m512 a = _mm512_mul_ps(centred, _mm512_set1_ps(rq->scale));
    __m512 b = _mm512_mul_ps(_mm512_sub_ps(_mm512_cvtepi32_ps(*residual), _mm512_set1_ps((float)rq->residual_zero_point)),
                             _mm512_set1_ps(rq->residual_scale));
    __m512 s = _mm512_div_ps(_mm512_add_ps(a, b), _mm512_set1_ps(rq->output_scale));
    // clamp(clamp(rint(s) + zo, 0, 255), add_low, add_high), with 0 ≤ add_low ≤ add_high ≤ 255 (validated):
    // one clamp in float before rounding, as in requant16.
    s = _mm512_max_ps(s, _mm512_set1_ps((float)(rq->add_low - rq->output_zero_point)));
    s = _mm512_min_ps(s, _mm512_set1_ps((float)(rq->add_high - rq->output_zero_point)));
    return _mm512_add_epi32(_mm512_cvt_roundps_epi32(s, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC),
                            _mm512_set1_epi32(rq->output_zero_point));
}

/// Requantizes 16 accumulators (bias included) with their multipliers, applies the optional fused residual add,
/// and stores the lanes in `mask`.
KILN_AVX512 static inline void store16(__m512i acc, __m512 multiplier, __mmask16 mask, const kiln_requant *rq,
                                       const uint8_t *residual, uint8_t *out) {
    __m512i other = residual ? _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(mask, residual)) : _mm512_setzero_si512();
    __m512i q = level16(_mm512_mul_ps(_mm512_cvtepi32_ps(acc), multiplier), residual ? &other : NULL, rq);
    _mm_mask_storeu_epi8(out, mask, _mm512_cvtepi32_epi8(q));
}

KILN_AVX512 static inline __m512i broadcast4(const uint8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

static inline __mmask16 mask16(int left) {
    return left >= 16 ? (__mmask16)0xFFFF : (left <= 0 ? 0 : (__mmask16)((1u << left) - 1));
}

#define KILN_UNROLL _Pragma("clang loop unroll(full)")

#endif
