// u8×s8 indirect GEMM on AVX-VNNI (vpdpbusd on 256-bit vectors).
#if defined(__x86_64__)
#pragma STDC FP_CONTRACT OFF
#include "avx2.h"

KILN_AVXVNNI void kiln_qu8s8_igemm_4x16c4__avxvnni(int m, int n, int kc, int taps, const uint8_t *const *rows,
                                                   const int8_t *packed, uint8_t *c, size_t ldc,
                                                   const kiln_requant *rq) {
    int groups = kc / KILN_KGROUP;
    size_t panel_bytes = (size_t)KILN_PANEL * kc * taps;
    for (int i0 = 0; i0 < m; i0 += 4) {
        int mr = m - i0 < 4 ? m - i0 : 4;
        const uint8_t *const *r[4];
        for (int t = 0; t < 4; t++) r[t] = rows + (size_t)(i0 + (t < mr ? t : mr - 1)) * taps;
        for (int j = 0; j < n; j += KILN_PANEL) {
            const int8_t *b = packed + (size_t)(j / KILN_PANEL) * panel_bytes;
            __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
            for (int tap = 0; tap < taps; tap++) {
                const uint8_t *p0 = r[0][tap], *p1 = r[1][tap], *p2 = r[2][tap], *p3 = r[3][tap];
                const int8_t *wb = b + (size_t)tap * groups * 64;
                for (int g = 0; g < groups; g++) {
                    __m256i w0 = _mm256_loadu_si256((const __m256i *)(wb + (size_t)g * 64));
                    __m256i w1 = _mm256_loadu_si256((const __m256i *)(wb + (size_t)g * 64 + 32));
                    __m256i x;
                    x = _mm256_set1_epi32(load4(p0 + g * 4)); c00 = _mm256_dpbusd_avx_epi32(c00, x, w0); c01 = _mm256_dpbusd_avx_epi32(c01, x, w1);
                    x = _mm256_set1_epi32(load4(p1 + g * 4)); c10 = _mm256_dpbusd_avx_epi32(c10, x, w0); c11 = _mm256_dpbusd_avx_epi32(c11, x, w1);
                    x = _mm256_set1_epi32(load4(p2 + g * 4)); c20 = _mm256_dpbusd_avx_epi32(c20, x, w0); c21 = _mm256_dpbusd_avx_epi32(c21, x, w1);
                    x = _mm256_set1_epi32(load4(p3 + g * 4)); c30 = _mm256_dpbusd_avx_epi32(c30, x, w0); c31 = _mm256_dpbusd_avx_epi32(c31, x, w1);
                }
            }
            __m256i lo[4] = {c00, c10, c20, c30}, hi[4] = {c01, c11, c21, c31};
            int left = n - j < 16 ? n - j : 16;
            for (int t = 0; t < mr; t++) {
                size_t row = (size_t)(i0 + t);
                const uint8_t *res = rq->residual ? rq->residual + row * rq->ldr + j : NULL;
                store_tile16(lo[t], hi[t], j, left, rq, res, c + row * ldc + j);
            }
        }
    }
}

#endif
