// The input quantizer on AVX-512 (float NCHW → u8 NHWC; RGB interleaved with byte shuffles).
#pragma STDC FP_CONTRACT OFF
#include "kiln_kernels.h"

#if defined(__x86_64__)
#include <immintrin.h>

/// 16 levels of channel `ch` from pixel `p` on: the scalar rule lane by lane (NaN → the −1e6 limit → 0).
__attribute__((target("avx512f,avx512bw,avx512vl"))) static inline __m128i quantize16(const float *x, __mmask16 mask,
                                                                                     __m512 scale, __m512i zero_point) {
    __m512 s = _mm512_roundscale_ps(_mm512_div_ps(_mm512_maskz_loadu_ps(mask, x), scale),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    s = _mm512_min_ps(_mm512_max_ps(s, _mm512_set1_ps(-1e6f)), _mm512_set1_ps(1e6f));
    __m512i level = _mm512_add_epi32(_mm512_cvttps_epi32(s), zero_point);
    level = _mm512_min_epi32(_mm512_max_epi32(level, _mm512_setzero_si512()), _mm512_set1_epi32(255));
    return _mm512_cvtepi32_epi8(level);
}

/// For output bytes part·16 … part·16 + 15 of 16 RGB pixels: the byte of channel k's levels each takes (0x80: none).
static const uint8_t rgb_select[3][3][16] = {
    {{0, 0x80, 0x80, 1, 0x80, 0x80, 2, 0x80, 0x80, 3, 0x80, 0x80, 4, 0x80, 0x80, 5},
     {0x80, 0, 0x80, 0x80, 1, 0x80, 0x80, 2, 0x80, 0x80, 3, 0x80, 0x80, 4, 0x80, 0x80},
     {0x80, 0x80, 0, 0x80, 0x80, 1, 0x80, 0x80, 2, 0x80, 0x80, 3, 0x80, 0x80, 4, 0x80}},
    {{0x80, 0x80, 6, 0x80, 0x80, 7, 0x80, 0x80, 8, 0x80, 0x80, 9, 0x80, 0x80, 10, 0x80},
     {5, 0x80, 0x80, 6, 0x80, 0x80, 7, 0x80, 0x80, 8, 0x80, 0x80, 9, 0x80, 0x80, 10},
     {0x80, 5, 0x80, 0x80, 6, 0x80, 0x80, 7, 0x80, 0x80, 8, 0x80, 0x80, 9, 0x80, 0x80}},
    {{0x80, 11, 0x80, 0x80, 12, 0x80, 0x80, 13, 0x80, 0x80, 14, 0x80, 0x80, 15, 0x80, 0x80},
     {0x80, 0x80, 11, 0x80, 0x80, 12, 0x80, 0x80, 13, 0x80, 0x80, 14, 0x80, 0x80, 15, 0x80},
     {10, 0x80, 0x80, 11, 0x80, 0x80, 12, 0x80, 0x80, 13, 0x80, 0x80, 14, 0x80, 0x80, 15}}
};

__attribute__((target("avx512f,avx512bw,avx512vl"))) void
kiln_qu8_quantize_nchw__avx512(const float *x, int c, int plane, float scale, int32_t zero_point, uint8_t *y) {
    __m512 vscale = _mm512_set1_ps(scale);
    __m512i vzero = _mm512_set1_epi32(zero_point);
    for (int p = 0; p < plane; p += 16) {
        int count = plane - p < 16 ? plane - p : 16;
        __mmask16 mask = (__mmask16)((1u << count) - 1);
        if (c == 1) {
            _mm_mask_storeu_epi8(y + p, mask, quantize16(x + p, mask, vscale, vzero));
            continue;
        }
        if (c == 3) {
            // RGB: interleave the three channels' 16 levels with byte shuffles (output byte 3i + k is channel k's i).
            __m128i levels[3];
            for (int k = 0; k < 3; k++) levels[k] = quantize16(x + (size_t)k * plane + p, mask, vscale, vzero);
            uint8_t *out = y + (size_t)p * 3;
            int bytes = count * 3;
            for (int part = 0; part < 3; part++) {
                const uint8_t (*select)[16] = rgb_select[part];
                __m128i chunk = _mm_or_si128(
                    _mm_or_si128(_mm_shuffle_epi8(levels[0], _mm_loadu_si128((const __m128i *)select[0])),
                                 _mm_shuffle_epi8(levels[1], _mm_loadu_si128((const __m128i *)select[1]))),
                    _mm_shuffle_epi8(levels[2], _mm_loadu_si128((const __m128i *)select[2])));
                int left = bytes - part * 16;
                if (left <= 0) break;
                __mmask16 store = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
                _mm_mask_storeu_epi8(out + part * 16, store, chunk);
            }
            continue;
        }
        // NCHW → NHWC: quantize 16 pixels of each channel, then interleave.
        uint8_t block[16 * 16];
        for (int ch0 = 0; ch0 < c; ch0 += 16) {
            int channels = c - ch0 < 16 ? c - ch0 : 16;
            for (int k = 0; k < channels; k++) {
                _mm_storeu_si128((__m128i *)(block + k * 16),
                                 quantize16(x + (size_t)(ch0 + k) * plane + p, mask, vscale, vzero));
            }
            for (int i = 0; i < count; i++) {
                for (int k = 0; k < channels; k++) y[(size_t)(p + i) * c + ch0 + k] = block[k * 16 + i];
            }
        }
    }
}
#endif
