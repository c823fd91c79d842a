// Shared by the 256-bit x86 kernels (AVX2 and AVX-VNNI): target attributes and the 8-lane requantizing store.
#ifndef KILN_AVX2_H
#define KILN_AVX2_H

#include <immintrin.h>
#include <string.h>
#include "kiln_kernels.h"
#include "requant.h"
#include "scratch.h"

#define KILN_AVX2 __attribute__((target("avx2,fma")))
#define KILN_AVXVNNI __attribute__((target("avx2,fma,avxvnni")))

/// Output levels (0…255 as int32) of 8 accumulator lanes already scaled by their multipliers (f = acc · m), with the
/// optional fused residual add (`residual`: the other input's bytes widened to int32, lane for lane).
KILN_AVX2 static inline __m256i level8(__m256 f, const __m256i *residual, const kiln_requant *rq) {
    // clamp(rint(f) + zp, low, high) = rint(clamp(f, low − zp, high − zp)) + zp: the bounds are integers within
    // ±255, so clamping first, in float, is exact and leaves the ±1e6 limit nothing to do.
    f = _mm256_max_ps(f, _mm256_set1_ps((float)(rq->low - rq->zero_point)));
    f = _mm256_min_ps(f, _mm256_set1_ps((float)(rq->high - rq->zero_point)));
    f = _mm256_round_ps(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256i q = _mm256_add_epi32(_mm256_cvttps_epi32(f), _mm256_set1_epi32(rq->zero_point));
    if (residual) {
        __m256 a = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(q, _mm256_set1_epi32(rq->zero_point))),
                                 _mm256_set1_ps(rq->scale));
        __m256 b = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(*residual, _mm256_set1_epi32(rq->residual_zero_point))),
                                 _mm256_set1_ps(rq->residual_scale));
        __m256 s = _mm256_div_ps(_mm256_add_ps(a, b), _mm256_set1_ps(rq->output_scale));
        s = _mm256_round_ps(s, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        s = _mm256_min_ps(_mm256_max_ps(s, _mm256_set1_ps(-1e6f)), _mm256_set1_ps(1e6f));
        q = _mm256_add_epi32(_mm256_cvttps_epi32(s), _mm256_set1_epi32(rq->output_zero_point));
        q = _mm256_min_epi32(_mm256_max_epi32(q, _mm256_setzero_si256()), _mm256_set1_epi32(255));
        q = _mm256_min_epi32(_mm256_max_epi32(q, _mm256_set1_epi32(rq->add_low)), _mm256_set1_epi32(rq->add_high));
    }
    return q;
}

/// Requantizes 8 accumulators (columns j..j+7, bias not yet added) and stores the first `count` of them.
KILN_AVX2 static inline void store8(__m256i acc, int j, int count, const kiln_requant *rq, const uint8_t *residual,
                                    uint8_t *out) {
    if (count < 8) {
        // Partial tail: the scalar epilogue gives the same bits.
        int32_t lanes[8];
        _mm256_storeu_si256((__m256i *)lanes, acc);
        for (int t = 0; t < count; t++) {
            out[t] = kiln_requant_one(lanes[t] + rq->bias[j + t], j + t, residual ? residual[t] : 0, rq);
        }
        return;
    }
    acc = _mm256_add_epi32(acc, _mm256_loadu_si256((const __m256i *)(rq->bias + j)));
    __m256 f = _mm256_mul_ps(_mm256_cvtepi32_ps(acc), _mm256_loadu_ps(rq->multiplier + j));
    __m256i other;
    if (residual) {
        int64_t bytes;
        memcpy(&bytes, residual, 8);
        other = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(bytes));
    }
    __m256i q = level8(f, residual ? &other : NULL, rq);
    // Pack 8 × i32 (0..255) to bytes.
    __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
    __m128i words = _mm_packus_epi32(lo, hi);
    __m128i bytes8 = _mm_packus_epi16(words, words);
    _mm_storel_epi64((__m128i *)out, bytes8);
}

/// Requantizes a GEMM tile row of 16 accumulators (columns j..j+15, bias not yet added) and stores the first
/// `count` of them, with the optional residual.
KILN_AVX2 static inline void store_tile16(__m256i acc0, __m256i acc1, int j, int count, const kiln_requant *rq,
                                          const uint8_t *residual, uint8_t *out) {
    if (count < 16) {
        store8(acc0, j, count < 8 ? count : 8, rq, residual, out);
        if (count > 8) store8(acc1, j + 8, count - 8, rq, residual ? residual + 8 : NULL, out + 8);
        return;
    }
    acc0 = _mm256_add_epi32(acc0, _mm256_loadu_si256((const __m256i *)(rq->bias + j)));
    acc1 = _mm256_add_epi32(acc1, _mm256_loadu_si256((const __m256i *)(rq->bias + j + 8)));
    __m256 f0 = _mm256_mul_ps(_mm256_cvtepi32_ps(acc0), _mm256_loadu_ps(rq->multiplier + j));
    __m256 f1 = _mm256_mul_ps(_mm256_cvtepi32_ps(acc1), _mm256_loadu_ps(rq->multiplier + j + 8));
    __m256i q0, q1;
    if (residual) {
        __m128i bytes = _mm_loadu_si128((const __m128i *)residual);
        __m256i r0 = _mm256_cvtepu8_epi32(bytes), r1 = _mm256_cvtepu8_epi32(_mm_srli_si128(bytes, 8));
        q0 = level8(f0, &r0, rq);
        q1 = level8(f1, &r1, rq);
    } else {
        q0 = level8(f0, NULL, rq);
        q1 = level8(f1, NULL, rq);
    }
    // Levels are within 0…255: the saturating packs are exact; the permute undoes their lane interleave.
    __m256i words = _mm256_permute4x64_epi64(_mm256_packs_epi32(q0, q1), 0xD8);
    _mm_storeu_si128((__m128i *)out, _mm_packus_epi16(_mm256_castsi256_si128(words), _mm256_extracti128_si256(words, 1)));
}

/// Four rows of 32 bytes (one channel each) as 4-byte groups for 256-bit vpdpbusd, in quarter order: [0] channels
/// 0–3 | 16–19, [1] 4–7 | 20–23, [2] 8–11 | 24–27, [3] 12–15 | 28–31 (the 3×3 depthwise kernels' kernel columns).
KILN_AVX2 static inline void kiln_dw_groups32(__m256i r0, __m256i r1, __m256i r2, __m256i r3, __m256i out[4]) {
    __m256i lo01 = _mm256_unpacklo_epi8(r0, r1), hi01 = _mm256_unpackhi_epi8(r0, r1);
    __m256i lo23 = _mm256_unpacklo_epi8(r2, r3), hi23 = _mm256_unpackhi_epi8(r2, r3);
    out[0] = _mm256_unpacklo_epi16(lo01, lo23);
    out[1] = _mm256_unpackhi_epi16(lo01, lo23);
    out[2] = _mm256_unpacklo_epi16(hi01, hi23);
    out[3] = _mm256_unpackhi_epi16(hi01, hi23);
}

/// Four natural-order vectors of 8 int32 (channels 0–7, 8–15, 16–23, 24–31) in the quarter order of kiln_dw_groups32.
KILN_AVX2 static inline void kiln_dw_quarters32(__m256i v0, __m256i v1, __m256i v2, __m256i v3, __m256i out[4]) {
    out[0] = _mm256_permute2x128_si256(v0, v2, 0x20);
    out[1] = _mm256_permute2x128_si256(v0, v2, 0x31);
    out[2] = _mm256_permute2x128_si256(v1, v3, 0x20);
    out[3] = _mm256_permute2x128_si256(v1, v3, 0x31);
}

/// Output bytes, in natural channel order, of 32 accumulators in the quarter order of kiln_dw_groups32 (bias
/// included), with the optional fused residual add of `residual` (the other input's 32 bytes, natural order).
KILN_AVX2 static inline __m256i kiln_dw_levels32(const __m256i acc[4], const __m256 multiplier[4], const __m256i *residual,
                                                 const kiln_requant *rq) {
    __m256i level[4];
    if (residual) {
        __m256i zero = _mm256_setzero_si256();
        __m256i lo = _mm256_unpacklo_epi8(*residual, zero), hi = _mm256_unpackhi_epi8(*residual, zero);
        __m256i r[4] = {_mm256_unpacklo_epi16(lo, zero), _mm256_unpackhi_epi16(lo, zero),
                        _mm256_unpacklo_epi16(hi, zero), _mm256_unpackhi_epi16(hi, zero)};
        for (int q = 0; q < 4; q++) level[q] = level8(_mm256_mul_ps(_mm256_cvtepi32_ps(acc[q]), multiplier[q]), &r[q], rq);
    } else {
        for (int q = 0; q < 4; q++) level[q] = level8(_mm256_mul_ps(_mm256_cvtepi32_ps(acc[q]), multiplier[q]), NULL, rq);
    }
    // Levels are within 0…255, so the saturating packs are exact; they also restore natural channel order.
    return _mm256_packus_epi16(_mm256_packs_epi32(level[0], level[1]), _mm256_packs_epi32(level[2], level[3]));
}

/// Channels `first` … c − 1 of one output row of a 3×3 depthwise convolution (the AVX2 kernel's arithmetic), for
/// the wider kernels' last channels.
KILN_AVX2 void kiln_dwconv3x3_channels__avx2(const uint8_t *x, int h, int w, int c, int oy, int ow, int stride,
                                             int pad_top, int pad_left, uint8_t input_zero, const int8_t *weights,
                                             uint8_t *y, const kiln_requant *rq, int first);

KILN_AVX2 static inline int32_t load4(const uint8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

/// The indirect GEMM's rows widened to 16 bits in this thread's scratch: row i's taps one after another (k = taps ·
/// kc values a row), for the GEMMs that multiply 16-bit operands (vpmaddwd).
KILN_AVX2 static inline int16_t *widen_rows(int m, int kc, int taps, const uint8_t *const *rows) {
    size_t k = (size_t)kc * taps;
    int16_t *a16 = kiln_thread_scratch((size_t)m * k * sizeof(int16_t));
    for (int i = 0; i < m; i++) {
        for (int tap = 0; tap < taps; tap++) {
            const uint8_t *segment = rows[(size_t)i * taps + tap];
            int16_t *to = a16 + (size_t)i * k + (size_t)tap * kc;
            int e = 0;
            for (; e + 16 <= kc; e += 16) {
                _mm256_storeu_si256((__m256i *)(to + e), _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(segment + e))));
            }
            for (; e < kc; e++) to[e] = segment[e];
        }
    }
    return a16;
}

#endif
