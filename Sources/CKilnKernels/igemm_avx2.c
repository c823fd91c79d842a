// u8×s8 indirect GEMM on AVX2, exact: products in vpmaddwd on operands widened to 16 bits (vpmaddubsw could
// saturate: 2 · 255 · 127 > 32767).
//
// From four rows on, both operands are widened once per call rather than once per use: the call's rows (at most a
// few dozen) into a 16-bit copy of A, and each 16-column panel of B into k-pairs of 16 channels. The inner loop is
// then one broadcast, two vpmaddwd and two adds per row and k-pair, on a 6 × 16 tile (12 accumulators, 2 weight
// registers, 1 input register of the 16); each accumulator lane is one channel, so no horizontal adds remain.
#if defined(__x86_64__)
#pragma STDC FP_CONTRACT OFF
#include "avx2.h"
#include "scratch.h"

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
    int left = n - j < 16 ? n - j : 16;
    for (int t = 0; t < MR; t++) {
        size_t row = row0 + t;
        const uint8_t *res = rq->residual ? rq->residual + row * rq->ldr + j : NULL;
        store8(acc[t][0], j, left < 8 ? left : 8, rq, res, c + row * ldc + j);
        if (left > 8) store8(acc[t][1], j + 8, left - 8, rq, res ? res + 8 : NULL, c + row * ldc + j + 8);
    }
}

/// Calls of one to three rows (a classifier or a squeeze-excite conv at batch 1), where widening a panel of B would
/// cost as much as using it: B is widened in registers, 4 k at a time, two rows per pass; each channel's two partial
/// sums are added at the end.
KILN_AVX2 static void few_rows(int m, int n, int kc, int taps, const uint8_t *const *rows, const int8_t *packed, uint8_t *c,
                               size_t ldc, const kiln_requant *rq) {
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

KILN_AVX2 void kiln_qu8s8_igemm_6x16c4__avx2(int m, int n, int kc, int taps, const uint8_t *const *rows,
                                             const int8_t *packed, uint8_t *c, size_t ldc, const kiln_requant *rq) {
    if (m < 4) {
        few_rows(m, n, kc, taps, rows, packed, c, ldc, rq);
        return;
    }
    int k = kc * taps, groups = k / KILN_KGROUP;
    int16_t *a16 = kiln_thread_scratch(((size_t)m * k + (size_t)KILN_PANEL * k) * sizeof(int16_t));
    int16_t *b16 = a16 + (size_t)m * k;
    // A: each row's taps, zero-extended.
    for (int i = 0; i < m; i++) {
        for (int tap = 0; tap < taps; tap++) {
            const uint8_t *segment = rows[(size_t)i * taps + tap];
            int16_t *to = a16 + (size_t)i * k + (size_t)tap * kc;
            int e = 0;
            for (; e + 16 <= kc; e += 16) {
                _mm256_storeu_si256((__m256i *)(to + e), _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(segment + e))));
            }
            for (; e < kc; e++) to[e] = segment[e];
        }
    }
    for (int j = 0; j < n; j += KILN_PANEL) {
        // B's panel: group g's bytes [channel][4 k] become k-pairs 2g and 2g + 1, each [channel][2], sign-extended.
        const int8_t *panel = packed + (size_t)(j / KILN_PANEL) * KILN_PANEL * k;
        // Each channel's 4 bytes are two 16-bit words: within each 128-bit lane the first words (k 0, 1) go to the
        // low 8 bytes and the second (k 2, 3) to the high, then the lanes' halves are paired up and sign-extended.
        const __m256i split = _mm256_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15,
                                               0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15);
        for (int g = 0; g < groups; g++) {
            int16_t *to = b16 + (size_t)g * 64;
            for (int half = 0; half < 2; half++) {
                __m256i bytes = _mm256_loadu_si256((const __m256i *)(panel + (size_t)g * 64 + half * 32));
                __m256i words = _mm256_permute4x64_epi64(_mm256_shuffle_epi8(bytes, split), 0xD8);
                _mm256_storeu_si256((__m256i *)(to + half * 16), _mm256_cvtepi8_epi16(_mm256_castsi256_si128(words)));
                _mm256_storeu_si256((__m256i *)(to + 32 + half * 16), _mm256_cvtepi8_epi16(_mm256_extracti128_si256(words, 1)));
            }
        }
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
