// u8×s8 indirect GEMM on AVX2: widened to 16 bits and multiplied with vpmaddwd, which cannot saturate
// (vpmaddubsw could: 2 · 255 · 127 > 32767).
#if defined(__x86_64__)
#pragma STDC FP_CONTRACT OFF
#include "avx2.h"

KILN_AVX2 void kiln_qu8s8_igemm_2x16c4__avx2(int m, int n, int kc, int taps, const uint8_t *const *rows,
                                             const int8_t *packed, uint8_t *c, size_t ldc, const kiln_requant *rq) {
    int groups = kc / KILN_KGROUP;
    size_t panel_bytes = (size_t)KILN_PANEL * kc * taps;
    for (int i0 = 0; i0 < m; i0 += 2) {
        int mr = m - i0 < 2 ? m - i0 : 2;
        const uint8_t *const *r0 = rows + (size_t)i0 * taps, *const *r1 = rows + (size_t)(i0 + (mr > 1 ? 1 : 0)) * taps;
        for (int j = 0; j < n; j += KILN_PANEL) {
            const int8_t *b = packed + (size_t)(j / KILN_PANEL) * panel_bytes;
            // Per row, four accumulators of four channels each (pairs of partial sums per channel).
            __m256i a00 = _mm256_setzero_si256(), a01 = a00, a02 = a00, a03 = a00;
            __m256i a10 = a00, a11 = a00, a12 = a00, a13 = a00;
            for (int tap = 0; tap < taps; tap++) {
                const uint8_t *p0 = r0[tap], *p1 = r1[tap];
                const int8_t *wb = b + (size_t)tap * groups * 64;
                for (int g = 0; g < groups; g++) {
                    const int8_t *wg = wb + (size_t)g * 64;
                    __m256i x0 = _mm256_cvtepu8_epi16(_mm_set1_epi32(load4(p0 + g * 4)));
                    __m256i x1 = _mm256_cvtepu8_epi16(_mm_set1_epi32(load4(p1 + g * 4)));
                    __m256i w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(wg)));
                    __m256i w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(wg + 16)));
                    __m256i w2 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(wg + 32)));
                    __m256i w3 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(wg + 48)));
                    a00 = _mm256_add_epi32(a00, _mm256_madd_epi16(x0, w0));
                    a01 = _mm256_add_epi32(a01, _mm256_madd_epi16(x0, w1));
                    a02 = _mm256_add_epi32(a02, _mm256_madd_epi16(x0, w2));
                    a03 = _mm256_add_epi32(a03, _mm256_madd_epi16(x0, w3));
                    a10 = _mm256_add_epi32(a10, _mm256_madd_epi16(x1, w0));
                    a11 = _mm256_add_epi32(a11, _mm256_madd_epi16(x1, w1));
                    a12 = _mm256_add_epi32(a12, _mm256_madd_epi16(x1, w2));
                    a13 = _mm256_add_epi32(a13, _mm256_madd_epi16(x1, w3));
                }
            }
            __m256i out[2][2] = {
                {_mm256_permute4x64_epi64(_mm256_hadd_epi32(a00, a01), 0xD8), _mm256_permute4x64_epi64(_mm256_hadd_epi32(a02, a03), 0xD8)},
                {_mm256_permute4x64_epi64(_mm256_hadd_epi32(a10, a11), 0xD8), _mm256_permute4x64_epi64(_mm256_hadd_epi32(a12, a13), 0xD8)},
            };
            int left = n - j < 16 ? n - j : 16;
            for (int t = 0; t < mr; t++) {
                size_t row = (size_t)(i0 + t);
                const uint8_t *res = rq->residual ? rq->residual + row * rq->ldr + j : NULL;
                store8(out[t][0], j, left < 8 ? left : 8, rq, res, c + row * ldc + j);
                if (left > 8) store8(out[t][1], j + 8, left - 8, rq, res ? res + 8 : NULL, c + row * ldc + j + 8);
            }
        }
    }
}

#endif
