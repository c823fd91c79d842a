// u8×s8 indirect GEMM on AVX-512 VNNI (vpdpbusd): tiles of 1–8 rows × 32 columns.
#if defined(__x86_64__)
#pragma STDC FP_CONTRACT OFF
#include "avx512.h"

/// One tile of MR rows (a compile-time constant after inlining: no work on missing rows) × 32 columns from
/// column j (16 when `pair` is 0). Accumulators start at the bias.
KILN_TARGET static inline __attribute__((always_inline)) void
igemm_tile(const int MR, int pair, int j, int n, int groups, int taps, const uint8_t *const *rows, const int8_t *b0,
           const int8_t *b1, uint8_t *c, size_t ldc, size_t row0, const kiln_requant *rq) {
    __mmask16 mask0 = mask16(n - j), mask1 = pair ? mask16(n - j - 16) : 0;
    __m512i acc0[8], acc1[8];
    {
        __m512i bias0 = _mm512_maskz_loadu_epi32(mask0, rq->bias + j);
        __m512i bias1 = _mm512_maskz_loadu_epi32(mask1, rq->bias + j + 16);
        KILN_UNROLL for (int t = 0; t < MR; t++) {
            acc0[t] = bias0;
            acc1[t] = bias1;
        }
    }
    for (int tap = 0; tap < taps; tap++) {
        const uint8_t *p[8];
        KILN_UNROLL for (int t = 0; t < MR; t++) p[t] = rows[(size_t)t * taps + tap];
        const int8_t *wb0 = b0 + (size_t)tap * groups * 64, *wb1 = b1 + (size_t)tap * groups * 64;
        if (pair) {
            for (int g = 0; g < groups; g++) {
                __m512i w0 = _mm512_loadu_si512(wb0 + (size_t)g * 64), w1 = _mm512_loadu_si512(wb1 + (size_t)g * 64);
                KILN_UNROLL for (int t = 0; t < MR; t++) {
                    __m512i x = broadcast4(p[t] + g * 4);
                    acc0[t] = _mm512_dpbusd_epi32(acc0[t], x, w0);
                    acc1[t] = _mm512_dpbusd_epi32(acc1[t], x, w1);
                }
            }
        } else {
            for (int g = 0; g < groups; g++) {
                __m512i w0 = _mm512_loadu_si512(wb0 + (size_t)g * 64);
                KILN_UNROLL for (int t = 0; t < MR; t++) acc0[t] = _mm512_dpbusd_epi32(acc0[t], broadcast4(p[t] + g * 4), w0);
            }
        }
    }
    __m512 m0 = _mm512_maskz_loadu_ps(mask0, rq->multiplier + j), m1 = _mm512_maskz_loadu_ps(mask1, rq->multiplier + j + 16);
    KILN_UNROLL for (int t = 0; t < MR; t++) {
        size_t row = row0 + t;
        const uint8_t *res = rq->residual ? rq->residual + row * rq->ldr + j : NULL;
        store16(acc0[t], m0, mask0, rq, res, c + row * ldc + j);
        if (pair) store16(acc1[t], m1, mask1, rq, res ? res + 16 : NULL, c + row * ldc + j + 16);
    }
}

KILN_TARGET void kiln_qu8s8_igemm_8x32c4__avx512vnni(int m, int n, int kc, int taps, const uint8_t *const *rows,
                                                     const int8_t *packed, uint8_t *c, size_t ldc,
                                                     const kiln_requant *rq) {
    int groups = kc / KILN_KGROUP;
    size_t panel_bytes = (size_t)KILN_PANEL * kc * taps;
    // Column panels outside, row tiles inside: a panel of B stays in cache for all of the caller's rows. A last
    // tile of fewer than 8 rows runs a kernel of its own height.
    for (int j = 0; j < n; j += 32) {
        int pair = j + 16 < n;
        const int8_t *b0 = packed + (size_t)(j / KILN_PANEL) * panel_bytes;
        const int8_t *b1 = pair ? b0 + panel_bytes : b0;
        for (int i0 = 0; i0 < m; i0 += 8) {
            const uint8_t *const *r = rows + (size_t)i0 * taps;
            switch (m - i0 < 8 ? m - i0 : 8) {
#define KILN_TILE(MR) case MR: igemm_tile(MR, pair, j, n, groups, taps, r, b0, b1, c, ldc, (size_t)i0, rq); break;
            KILN_TILE(8) KILN_TILE(7) KILN_TILE(6) KILN_TILE(5) KILN_TILE(4) KILN_TILE(3) KILN_TILE(2) KILN_TILE(1)
#undef KILN_TILE
            }
        }
    }
}

// Depthwise 3×3 on vpdpbusd. Each 32-bit lane holds one channel and four bytes: the three rows of one kernel
// column plus a zero-weight fourth. Interleaving four rows of 64 channels with byte and word unpacks leaves the
// channels of 128-bit lane L, quarter q at 16·L + 4·q + 0…3 ("quarter order"); the weights, bias and multipliers
// are put in the same order, and the final signed/unsigned packs undo it. An input column's interleaved form serves
// the three output pixels whose windows contain it.

#endif
