// u8×s8 indirect GEMM on AVX2 for narrow products (low-bit students, or weights within ±64): vpmaddubsw, exact
// when every pair sum x0·w0 + x1·w1 fits in 16 bits, with `steps` such results summed in 16 bits before vpmaddwd
// widens them (the caller derives `steps` from the layer's largest input level and weight magnitude).
//
// Per 16 output channels and 4 k: two vpmaddubsw (8 channels × 4 k each) and two 16-bit adds per row, against
// four vpmaddwd, four 32-bit adds and the widening of the weights on the exact 8-bit path (igemm_avx2.c). The
// packed c4 layout puts channel c's four k in bytes 4c..4c+3, so pair lanes 2c and 2c+1 belong to channel c and
// vpmaddwd by ones leaves channel c's sum in lane c: no horizontal adds.
#if defined(__x86_64__)
#pragma STDC FP_CONTRACT OFF
#include "avx2.h"

enum { ROWS = 4 };

KILN_AVX2 void kiln_qu8s8_igemm_narrow_4x16c4__avx2(int m, int n, int kc, int taps, const uint8_t *const *rows,
                                                    const int8_t *packed, uint8_t *c, size_t ldc, const kiln_requant *rq,
                                                    int steps) {
    int groups = kc / KILN_KGROUP;
    size_t panel_bytes = (size_t)KILN_PANEL * kc * taps;
    const __m256i ones = _mm256_set1_epi16(1);
    for (int i0 = 0; i0 < m; i0 += ROWS) {
        int mr = m - i0 < ROWS ? m - i0 : ROWS;
        // Rows past the end repeat the last one (computed, not stored).
        const uint8_t *const *r[ROWS];
        for (int t = 0; t < ROWS; t++) r[t] = rows + (size_t)(i0 + (t < mr ? t : mr - 1)) * taps;
        for (int j = 0; j < n; j += KILN_PANEL) {
            const int8_t *b = packed + (size_t)(j / KILN_PANEL) * panel_bytes;
            __m256i acc[ROWS][2];
            for (int t = 0; t < ROWS; t++) acc[t][0] = acc[t][1] = _mm256_setzero_si256();
            if (steps <= 1) {
                // Each pair sum widened at once.
                for (int tap = 0; tap < taps; tap++) {
                    const uint8_t *p0 = r[0][tap], *p1 = r[1][tap], *p2 = r[2][tap], *p3 = r[3][tap];
                    const int8_t *wb = b + (size_t)tap * groups * 64;
                    for (int g = 0; g < groups; g++) {
                        __m256i w0 = _mm256_loadu_si256((const __m256i *)(wb + g * 64));
                        __m256i w1 = _mm256_loadu_si256((const __m256i *)(wb + g * 64 + 32));
                        __m256i x;
#define KILN_ROW(t, p)                                                                                   \
    x = _mm256_set1_epi32(load4(p + g * 4));                                                            \
    acc[t][0] = _mm256_add_epi32(acc[t][0], _mm256_madd_epi16(_mm256_maddubs_epi16(x, w0), ones));      \
    acc[t][1] = _mm256_add_epi32(acc[t][1], _mm256_madd_epi16(_mm256_maddubs_epi16(x, w1), ones));
                        KILN_ROW(0, p0) KILN_ROW(1, p1) KILN_ROW(2, p2) KILN_ROW(3, p3)
#undef KILN_ROW
                    }
                }
            } else {
                // Up to `steps` pair sums per lane gathered in 16 bits, then widened.
                __m256i s[ROWS][2];
                for (int t = 0; t < ROWS; t++) s[t][0] = s[t][1] = _mm256_setzero_si256();
                int pending = 0;
                for (int tap = 0; tap < taps; tap++) {
                    const uint8_t *p0 = r[0][tap], *p1 = r[1][tap], *p2 = r[2][tap], *p3 = r[3][tap];
                    const int8_t *wb = b + (size_t)tap * groups * 64;
                    for (int g = 0; g < groups;) {
                        int take = groups - g < steps - pending ? groups - g : steps - pending;
                        for (int e = g; e < g + take; e++) {
                            __m256i w0 = _mm256_loadu_si256((const __m256i *)(wb + e * 64));
                            __m256i w1 = _mm256_loadu_si256((const __m256i *)(wb + e * 64 + 32));
                            __m256i x;
#define KILN_ROW(t, p)                                                               \
    x = _mm256_set1_epi32(load4(p + e * 4));                                        \
    s[t][0] = _mm256_add_epi16(s[t][0], _mm256_maddubs_epi16(x, w0));               \
    s[t][1] = _mm256_add_epi16(s[t][1], _mm256_maddubs_epi16(x, w1));
                            KILN_ROW(0, p0) KILN_ROW(1, p1) KILN_ROW(2, p2) KILN_ROW(3, p3)
#undef KILN_ROW
                        }
                        g += take;
                        pending += take;
                        if (pending == steps) {
                            for (int t = 0; t < ROWS; t++) {
                                for (int h = 0; h < 2; h++) {
                                    acc[t][h] = _mm256_add_epi32(acc[t][h], _mm256_madd_epi16(s[t][h], ones));
                                    s[t][h] = _mm256_setzero_si256();
                                }
                            }
                            pending = 0;
                        }
                    }
                }
                for (int t = 0; t < ROWS; t++) {
                    for (int h = 0; h < 2; h++) acc[t][h] = _mm256_add_epi32(acc[t][h], _mm256_madd_epi16(s[t][h], ones));
                }
            }
            int left = n - j < 16 ? n - j : 16;
            for (int t = 0; t < mr; t++) {
                size_t row = (size_t)(i0 + t);
                const uint8_t *res = rq->residual ? rq->residual + row * rq->ldr + j : NULL;
                store_tile16(acc[t][0], acc[t][1], j, left, rq, res, c + row * ldc + j);
            }
        }
    }
}

#endif
