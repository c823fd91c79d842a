// The input quantizer on AVX2 (float NCHW → u8 NHWC), 8 pixels per step: the scalar rule lane by lane.
#pragma STDC FP_CONTRACT OFF
#include "kiln_kernels.h"

#if defined(__x86_64__)
#include <immintrin.h>
#include <math.h>

/// Levels of 8 values (NaN → the −1e6 limit → 0; ±∞ → the limits → 0 or 255), as 32-bit lanes.
__attribute__((target("avx2,fma"))) static inline __m256i quantize8(const float *x, __m256 scale, __m256i zero_point) {
    __m256 s = _mm256_round_ps(_mm256_div_ps(_mm256_loadu_ps(x), scale), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    // max/min return their second operand when the first is NaN.
    s = _mm256_min_ps(_mm256_max_ps(s, _mm256_set1_ps(-1e6f)), _mm256_set1_ps(1e6f));
    __m256i level = _mm256_add_epi32(_mm256_cvttps_epi32(s), zero_point);
    return _mm256_min_epi32(_mm256_max_epi32(level, _mm256_setzero_si256()), _mm256_set1_epi32(255));
}

/// The scalar rule for one value.
static inline uint8_t quantize1(float x, float scale, int32_t zero_point) {
    float s = rintf(x / scale);
    if (!isfinite(s)) return s > 0 ? 255 : 0;
    s = s > 1e6f ? 1e6f : (s < -1e6f ? -1e6f : s);
    int32_t level = (int32_t)s + zero_point;
    return (uint8_t)(level < 0 ? 0 : (level > 255 ? 255 : level));
}

__attribute__((target("avx2,fma"))) void
kiln_qu8_quantize_nchw__avx2(const float *x, int c, int plane, float scale, int32_t zero_point, uint8_t *y) {
    __m256 vscale = _mm256_set1_ps(scale);
    __m256i vzero = _mm256_set1_epi32(zero_point);
    int p = 0;
    for (; p + 8 <= plane; p += 8) {
        if (c == 1) {
            __m256i level = quantize8(x + p, vscale, vzero);
            __m128i words = _mm_packus_epi32(_mm256_castsi256_si128(level), _mm256_extracti128_si256(level, 1));
            _mm_storel_epi64((__m128i *)(y + p), _mm_packus_epi16(words, words));
            continue;
        }
        // Per channel 8 levels, then interleaved into 8 NHWC pixels.
        for (int ch = 0; ch < c; ch++) {
            int32_t lanes[8];
            _mm256_storeu_si256((__m256i *)lanes, quantize8(x + (size_t)ch * plane + p, vscale, vzero));
            for (int i = 0; i < 8; i++) y[(size_t)(p + i) * c + ch] = (uint8_t)lanes[i];
        }
    }
    for (; p < plane; p++) {
        for (int ch = 0; ch < c; ch++) y[(size_t)p * c + ch] = quantize1(x[(size_t)ch * plane + p], scale, zero_point);
    }
}
#endif
