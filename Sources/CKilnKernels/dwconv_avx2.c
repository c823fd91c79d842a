// Depthwise convolution of any kernel size, stride, dilation and padding on AVX2 (also the tiers above it): 8
// channels per vector, 32 per step to keep four accumulators in flight, then 8, then one at a time.
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
        // 32 channels per step: four independent accumulators keep the multiplier busy. vpmaddwd multiplies the
        // low 16-bit halves (the input's high half is zero, so the weight's sign-extended high half adds nothing):
        // the exact product, at better latency than vpmulld.
        for (; ch + 32 <= c; ch += 32) {
            __m256i acc0 = _mm256_setzero_si256(), acc1 = _mm256_setzero_si256(), acc2 = _mm256_setzero_si256(),
                    acc3 = _mm256_setzero_si256();
            for (int i = 0; i < g->kh; i++) {
                const int iy = oy * g->stride_h - g->pad_top + i * g->dilation_h;
                const int row_inside = iy >= 0 && iy < g->h;
                for (int j = 0; j < g->kw; j++) {
                    const int ix = ox * g->stride_w - g->pad_left + j * g->dilation_w;
                    const int8_t *w = weights + (size_t)(i * g->kw + j) * c + ch;
                    if (row_inside && ix >= 0 && ix < g->w) {
                        const uint8_t *p = x + ((size_t)iy * g->w + ix) * c + ch;
                        acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(widen_u8(p), widen_s8(w)));
                        acc1 = _mm256_add_epi32(acc1, _mm256_madd_epi16(widen_u8(p + 8), widen_s8(w + 8)));
                        acc2 = _mm256_add_epi32(acc2, _mm256_madd_epi16(widen_u8(p + 16), widen_s8(w + 16)));
                        acc3 = _mm256_add_epi32(acc3, _mm256_madd_epi16(widen_u8(p + 24), widen_s8(w + 24)));
                    } else {
                        acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(zero, widen_s8(w)));
                        acc1 = _mm256_add_epi32(acc1, _mm256_madd_epi16(zero, widen_s8(w + 8)));
                        acc2 = _mm256_add_epi32(acc2, _mm256_madd_epi16(zero, widen_s8(w + 16)));
                        acc3 = _mm256_add_epi32(acc3, _mm256_madd_epi16(zero, widen_s8(w + 24)));
                    }
                }
            }
            const uint8_t *r = residual ? residual + ch : NULL;
            store8(acc0, ch, 8, rq, r, out + ch);
            store8(acc1, ch + 8, 8, rq, r ? r + 8 : NULL, out + ch + 8);
            store8(acc2, ch + 16, 8, rq, r ? r + 16 : NULL, out + ch + 16);
            store8(acc3, ch + 24, 8, rq, r ? r + 24 : NULL, out + ch + 24);
        }
        for (; ch + 8 <= c; ch += 8) {
            __m256i acc = _mm256_setzero_si256();
            for (int i = 0; i < g->kh; i++) {
                const int iy = oy * g->stride_h - g->pad_top + i * g->dilation_h;
                const int row_inside = iy >= 0 && iy < g->h;
                for (int j = 0; j < g->kw; j++) {
                    const int ix = ox * g->stride_w - g->pad_left + j * g->dilation_w;
                    __m256i v = row_inside && ix >= 0 && ix < g->w ? widen_u8(x + ((size_t)iy * g->w + ix) * c + ch) : zero;
                    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(v, widen_s8(weights + (size_t)(i * g->kw + j) * c + ch)));
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
