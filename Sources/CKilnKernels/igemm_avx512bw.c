// u8×s8 indirect GEMMs on AVX-512 without VNNI (Skylake-SP and the like): tiles of 1–8 rows × 16 columns.
//
// Exact 8-bit products: both operands widened to 16 bits and multiplied with vpmaddwd (vpmaddubsw could saturate):
// the weights once at load (PAIRS16: 16 channels × 2 k per register, lanes in channel order), the call's rows once
// per call.
// Narrow products (low-bit students, weights within ±64): vpmaddubsw on 16 channels × 4 k per register, `steps`
// pair sums gathered in 16 bits before vpmaddwd by ones widens them; lanes stay in channel order.
#if defined(__x86_64__)
#pragma STDC FP_CONTRACT OFF
#include "avx2.h"
#include "avx512.h"

/// Requantizes and stores the tile's rows: accumulators `acc` (16 channels from column j, bias not included).
KILN_AVX512 static inline __attribute__((always_inline)) void
store_tile(const int MR, __m512i *acc, int j, int n, uint8_t *c, size_t ldc, size_t row0, const kiln_requant *rq) {
    __mmask16 mask = mask16(n - j);
    __m512i bias = _mm512_maskz_loadu_epi32(mask, rq->bias + j);
    __m512 multiplier = _mm512_maskz_loadu_ps(mask, rq->multiplier + j);
    KILN_UNROLL for (int t = 0; t < MR; t++) {
        size_t row = row0 + t;
        const uint8_t *res = rq->residual ? rq->residual + row * rq->ldr + j : NULL;
        store16(_mm512_add_epi32(acc[t], bias), multiplier, mask, rq, res, c + row * ldc + j);
    }
}

/// An exact tile: a16 holds the tile's rows widened (k per row), b16 the panel as [k/2][16 channels][2] (PAIRS16).
KILN_AVX512 static inline __attribute__((always_inline)) void
wide_tile(const int MR, int j, int n, int k, const int16_t *a16, const int16_t *b16, uint8_t *c, size_t ldc,
          size_t row0, const kiln_requant *rq) {
    __m512i acc[8];
    KILN_UNROLL for (int t = 0; t < MR; t++) acc[t] = _mm512_setzero_si512();
    for (int kp = 0; kp < k / 2; kp++) {
        __m512i w = _mm512_loadu_si512(b16 + (size_t)kp * 32);
        KILN_UNROLL for (int t = 0; t < MR; t++) {
            int32_t pair;
            memcpy(&pair, a16 + (size_t)t * k + 2 * kp, 4);
            acc[t] = _mm512_add_epi32(acc[t], _mm512_madd_epi16(_mm512_set1_epi32(pair), w));
        }
    }
    store_tile(MR, acc, j, n, c, ldc, row0, rq);
}

KILN_AVX512 static inline __attribute__((always_inline)) void
narrow_tile(const int MR, int j, int n, int groups, int taps, int steps, const uint8_t *const *rows, const int8_t *b,
            uint8_t *c, size_t ldc, size_t row0, const kiln_requant *rq) {
    const __m512i ones = _mm512_set1_epi16(1);
    __m512i acc[8], s[8];
    KILN_UNROLL for (int t = 0; t < MR; t++) acc[t] = s[t] = _mm512_setzero_si512();
    int pending = 0;
    for (int tap = 0; tap < taps; tap++) {
        const uint8_t *p[8];
        KILN_UNROLL for (int t = 0; t < MR; t++) p[t] = rows[(size_t)t * taps + tap];
        const int8_t *wb = b + (size_t)tap * groups * 64;
        if (steps <= 1) {
            for (int g = 0; g < groups; g++) {
                __m512i w = _mm512_loadu_si512(wb + (size_t)g * 64);
                KILN_UNROLL for (int t = 0; t < MR; t++) {
                    acc[t] = _mm512_add_epi32(acc[t], _mm512_madd_epi16(_mm512_maddubs_epi16(broadcast4(p[t] + g * 4), w), ones));
                }
            }
            continue;
        }
        for (int g = 0; g < groups;) {
            int take = groups - g < steps - pending ? groups - g : steps - pending;
            for (int e = g; e < g + take; e++) {
                __m512i w = _mm512_loadu_si512(wb + (size_t)e * 64);
                KILN_UNROLL for (int t = 0; t < MR; t++) {
                    s[t] = _mm512_add_epi16(s[t], _mm512_maddubs_epi16(broadcast4(p[t] + e * 4), w));
                }
            }
            g += take;
            pending += take;
            if (pending == steps) {
                KILN_UNROLL for (int t = 0; t < MR; t++) {
                    acc[t] = _mm512_add_epi32(acc[t], _mm512_madd_epi16(s[t], ones));
                    s[t] = _mm512_setzero_si512();
                }
                pending = 0;
            }
        }
    }
    KILN_UNROLL for (int t = 0; t < MR; t++) acc[t] = _mm512_add_epi32(acc[t], _mm512_madd_epi16(s[t], ones));
    store_tile(MR, acc, j, n, c, ldc, row0, rq);
}

/// Column panels outside, row tiles inside (a panel of B stays in cache for all of the call's rows); `narrow`, a
/// constant after inlining, picks the tile.
KILN_AVX512 static inline __attribute__((always_inline)) void
panels(const int narrow, int m, int n, int kc, int taps, int steps, const uint8_t *const *rows, const int8_t *packed,
       uint8_t *c, size_t ldc, const kiln_requant *rq) {
    int groups = kc / KILN_KGROUP, k = kc * taps;
    size_t panel_bytes = (size_t)KILN_PANEL * kc * taps * (narrow ? 1 : 2);
    // The exact GEMM's rows, widened once per call.
    const int16_t *a16 = narrow ? NULL : widen_rows(m, kc, taps, rows);
    for (int j = 0; j < n; j += KILN_PANEL) {
        const int8_t *b = packed + (size_t)(j / KILN_PANEL) * panel_bytes;
        for (int i0 = 0; i0 < m; i0 += 8) {
            const uint8_t *const *r = rows + (size_t)i0 * taps;
            switch (m - i0 < 8 ? m - i0 : 8) {
#define KILN_TILE(MR)                                                                                \
    case MR:                                                                                         \
        if (narrow) narrow_tile(MR, j, n, groups, taps, steps, r, b, c, ldc, (size_t)i0, rq);        \
        else wide_tile(MR, j, n, k, a16 + (size_t)i0 * k, (const int16_t *)b, c, ldc, (size_t)i0, rq); \
        break;
            KILN_TILE(8) KILN_TILE(7) KILN_TILE(6) KILN_TILE(5) KILN_TILE(4) KILN_TILE(3) KILN_TILE(2) KILN_TILE(1)
#undef KILN_TILE
            }
        }
    }
}

KILN_AVX512 void kiln_qu8s8_igemm_8x16c2__avx512bw(int m, int n, int kc, int taps, const uint8_t *const *rows,
                                                   const int8_t *packed, uint8_t *c, size_t ldc, const kiln_requant *rq) {
    panels(0, m, n, kc, taps, 0, rows, packed, c, ldc, rq);
}

KILN_AVX512 void kiln_qu8s8_igemm_narrow_8x16c4__avx512bw(int m, int n, int kc, int taps, const uint8_t *const *rows,
                                                          const int8_t *packed, uint8_t *c, size_t ldc,
                                                          const kiln_requant *rq, int steps) {
    panels(1, m, n, kc, taps, steps, rows, packed, c, ldc, rq);
}

#endif
