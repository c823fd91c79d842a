// u8×s8 indirect GEMM on AVX2, exact: products in vpmaddwd on operands widened to 16 bits (vpmaddubsw could
// saturate: 2 · 255 · 127 > 32767).
//
// The weights are widened once, at load (KILN_PACKING_PAIRS16: k-pairs of 16 channels), and the call's rows (at
// most a few dozen) once per call into a 16-bit copy. The inner loop is then one broadcast, two vpmaddwd and two
// adds per row and k-pair, on a 6 × 16 tile (12 accumulators, 2 weight registers, 1 input register of the 16);
// each accumulator lane is one channel, so no horizontal adds remain.
#if defined(__x86_64__)
#pragma STDC FP_CONTRACT OFF
#include "avx2.h"

enum { TILE_ROWS = 6 };

/// A tile of MR rows (a compile-time constant after inlining) × 16 columns from column j: a16 holds the rows'
/// 16-bit inputs (k contiguous, `k` per row), b16 the panel as [k/2][16 channels][2].
KILN_AVX2 static inline __attribute__((always_inline)) void
tile(const int MR, int j, int n, int k, const int16_t *a16, const int16_t *b16, uint8_t *c, size_t ldc, size_t row0,
     const kiln_requant *rq) {
    __m256i acc[TILE_ROWS][2];
    for (int t = 0; t < MR; t++) acc[t][0] = acc[t][1] = _mm256_setzero_si256();
    for (int kp = 0; kp < k / 2; kp++) {
        __m256i w0 = _mm256_loadu_si256((const __m256i *)(b16 + (size_t)kp * 32));
        __m256i w1 = _mm256_loadu_si256((const __m256i *)(b16 + (size_t)kp * 32 + 16));
        for (int t = 0; t < MR; t++) {
            int32_t pair;
            memcpy(&pair, a16 + (size_t)t * k + 2 * kp, 4);
            __m256i x = _mm256_set1_epi32(pair);
            acc[t][0] = _mm256_add_epi32(acc[t][0], _mm256_madd_epi16(x, w0));
            acc[t][1] = _mm256_add_epi32(acc[t][1], _mm256_madd_epi16(x, w1));
        }
    }
    const int left = n - j < 16 ? n - j : 16;
    for (int t = 0; t < MR; t++) {
        size_t row = row0 + t;
        const uint8_t *res = rq->residual ? rq->residual + row * rq->ldr + j : NULL;
        store_tile16(acc[t][0], acc[t][1], j, left, rq, res, c + row * ldc + j);
    }
}

KILN_AVX2 void kiln_qu8s8_igemm_6x16c2__avx2(int m, int n, int kc, int taps, const uint8_t *const *rows,
                                             const int8_t *packed, uint8_t *c, size_t ldc, const kiln_requant *rq) {
    int k = kc * taps;
    const int16_t *a16 = widen_rows(m, kc, taps, rows);
    for (int j = 0; j < n; j += KILN_PANEL) {
        const int16_t *b16 = (const int16_t *)packed + (size_t)(j / KILN_PANEL) * KILN_PANEL * k;
        for (int i0 = 0; i0 < m; i0 += TILE_ROWS) {
            const int16_t *a = a16 + (size_t)i0 * k;
            switch (m - i0 < TILE_ROWS ? m - i0 : TILE_ROWS) {
#define KILN_TILE(MR) case MR: tile(MR, j, n, k, a, b16, c, ldc, (size_t)i0, rq); break;
            KILN_TILE(6) KILN_TILE(5) KILN_TILE(4) KILN_TILE(3) KILN_TILE(2) KILN_TILE(1)
#undef KILN_TILE
            }
        }
    }
}

#endif
