// Depthwise convolution of any kernel size, stride, dilation and padding on AVX2 (also the tiers above it): 8
// channels per vector, 32 per step to keep four accumulators in flight.
#if defined(__x86_64__)
#pragma STDC FP_CONTRACT OFF
#include "avx2.h"

KILN_AVX2 static inline __m256i widen_u8(const uint8_t *p) {
    int64_t bytes;
    memcpy(&bytes, p, 8);
    return _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(bytes));
}

KILN_AVX2 static inline __m256i widen_s8(const int8_t *p) {
    int64_t bytes;
    memcpy(&bytes, p, 8);
    return _mm256_cvtepi8_epi32(_mm_cvtsi64_si128(bytes));
}

KILN_AVX2 void kiln_qu8s8_dwconv__avx2(const uint8_t *x, const kiln_dwconv_geometry *g, int oy, uint8_t input_zero,
                                       const int8_t *weights, uint8_t *y, const kiln_requant *rq) {
    const int c = g->c;
    const __m256i zero = _mm256_set1_epi32(input_zero);
    for (int ox = 0; ox < g->ow; ox++) {
        uint8_t *out = y + (size_t)ox * c;
        const uint8_t *residual = rq->residual ? rq->residual + (size_t)ox * c : NULL;
        int ch = 0;
        for (; ch + 8 <= c; ch += 8) {
            __m256i acc = _mm256_setzero_si256();
            for (int i = 0; i < g->kh; i++) {
                const int iy = oy * g->stride_h - g->pad_top + i * g->dilation_h;
                const int row_inside = iy >= 0 && iy < g->h;
                for (int j = 0; j < g->kw; j++) {
                    const int ix = ox * g->stride_w - g->pad_left + j * g->dilation_w;
                    __m256i v = row_inside && ix >= 0 && ix < g->w ? widen_u8(x + ((size_t)iy * g->w + ix) * c + ch) : zero;
                    acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(v, widen_s8(weights + (size_t)(i * g->kw + j) * c + ch)));
                }
            }
            store8(acc, ch, 8, rq, residual ? residual + ch : NULL, out + ch);
        }
        if (ch < c) {
            // The last channels: the portable kernel's arithmetic on a one-pixel view.
            for (; ch < c; ch++) {
                int32_t acc = rq->bias[ch];
                for (int i = 0; i < g->kh; i++) {
                    const int iy = oy * g->stride_h - g->pad_top + i * g->dilation_h;
                    for (int j = 0; j < g->kw; j++) {
                        const int ix = ox * g->stride_w - g->pad_left + j * g->dilation_w;
                        int32_t v = iy >= 0 && iy < g->h && ix >= 0 && ix < g->w ? x[((size_t)iy * g->w + ix) * c + ch] : input_zero;
                        acc += v * (int32_t)weights[(size_t)(i * g->kw + j) * c + ch];
                    }
                }
                out[ch] = kiln_requant_one(acc, ch, residual ? residual[ch] : 0, rq);
            }
        }
    }
}
#endif
