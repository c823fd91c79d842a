// 3×3 depthwise convolution on AVX2 (also the AVX-VNNI tier's).
#if defined(__x86_64__)
#pragma STDC FP_CONTRACT OFF
#include "avx2.h"

KILN_AVX2 void kiln_qu8s8_dwconv3x3__avx2(const uint8_t *x, int h, int w, int c, int oy, int ow, int stride,
                                          int pad_top, int pad_left, uint8_t input_zero, const int8_t *weights,
                                          uint8_t *y, const kiln_requant *rq) {
    __m256i zero = _mm256_set1_epi32(input_zero);
    for (int ox = 0; ox < ow; ox++) {
        int ch = 0;
        for (; ch + 8 <= c; ch += 8) {
            __m256i acc = _mm256_setzero_si256();
            for (int i = 0; i < 3; i++) {
                int iy = oy * stride - pad_top + i;
                for (int j = 0; j < 3; j++) {
                    int ix = ox * stride - pad_left + j;
                    __m256i v = zero;
                    if (iy >= 0 && iy < h && ix >= 0 && ix < w) {
                        int64_t bytes;
                        memcpy(&bytes, x + ((size_t)iy * w + ix) * c + ch, 8);
                        v = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(bytes));
                    }
                    int64_t wb;
                    memcpy(&wb, weights + (i * 3 + j) * c + ch, 8);
                    acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(v, _mm256_cvtepi8_epi32(_mm_cvtsi64_si128(wb))));
                }
            }
            const uint8_t *res = rq->residual ? rq->residual + (size_t)ox * c + ch : NULL;
            store8(acc, ch, 8, rq, res, y + (size_t)ox * c + ch);
        }
        for (; ch < c; ch++) {
            int32_t acc = kiln_dwconv3x3_one(x, h, w, c, oy, ox, ch, stride, pad_top, pad_left, input_zero, weights, rq);
            uint8_t residual = rq->residual ? rq->residual[(size_t)ox * c + ch] : 0;
            y[(size_t)ox * c + ch] = kiln_requant_one(acc, ch, residual, rq);
        }
    }
}
#endif
