// u8×s8 GEMM for arm64 with the dot-product extension. sdot multiplies same-signed bytes, so the call's rows are
// copied once as s8 (x − 128) and 128 · Σw, computed once per panel, is added back: exact in int32.
//
// Tile 4 rows × 16 columns: 16 accumulators, 4 weight and 4 input registers of the 32. Per 4 k: 4 weight loads
// and 4 input loads (load-and-replicate) feed 16 sdot. On the cores users run (Cortex-A76/Neoverse N1: two 128-bit
// sdot and two loads per cycle; Neoverse V1: four sdot, three loads), that keeps the dot-product pipes the limit
// (8 cycles of sdot against 4 of loads on N1); a 1-row tile needs 4 weight loads per 4 sdot and is load-bound at
// half the sdot rate. To be measured on arm64 hardware; correct under qemu (the kernel-list test).
#include "kiln_kernels.h"
#include "requant.h"
#include "scratch.h"

#if defined(__aarch64__)
#include <arm_neon.h>
#include <string.h>

enum { TILE_ROWS = 4 };

__attribute__((target("dotprod"))) static inline __attribute__((always_inline)) void
tile(const int MR, int j, int n, int k, const int8_t *a8, const int8_t *b, const int32_t *correction, uint8_t *c,
     size_t ldc, size_t row0, const kiln_requant *rq) {
    int32x4_t acc[TILE_ROWS][4];
    for (int t = 0; t < MR; t++) {
        for (int q = 0; q < 4; q++) acc[t][q] = vdupq_n_s32(0);
    }
    for (int g = 0; g < k / KILN_KGROUP; g++) {
        int8x16_t w0 = vld1q_s8(b + (size_t)g * 64), w1 = vld1q_s8(b + (size_t)g * 64 + 16);
        int8x16_t w2 = vld1q_s8(b + (size_t)g * 64 + 32), w3 = vld1q_s8(b + (size_t)g * 64 + 48);
        for (int t = 0; t < MR; t++) {
            int32_t quad;
            memcpy(&quad, a8 + (size_t)t * k + g * 4, 4);
            int8x16_t x = vreinterpretq_s8_s32(vdupq_n_s32(quad));
            acc[t][0] = vdotq_s32(acc[t][0], x, w0);
            acc[t][1] = vdotq_s32(acc[t][1], x, w1);
            acc[t][2] = vdotq_s32(acc[t][2], x, w2);
            acc[t][3] = vdotq_s32(acc[t][3], x, w3);
        }
    }
    for (int t = 0; t < MR; t++) {
        size_t row = row0 + t;
        for (int q = 0; q < 4; q++) {
            int32_t lanes[4];
            vst1q_s32(lanes, acc[t][q]);
            for (int e = 0; e < 4; e++) {
                int col = j + q * 4 + e;
                if (col >= n) continue;
                uint8_t residual = rq->residual ? rq->residual[row * rq->ldr + col] : 0;
                c[row * ldc + col] = kiln_requant_one(lanes[e] + correction[q * 4 + e] + rq->bias[col], col, residual, rq);
            }
        }
    }
}

__attribute__((target("dotprod")))
void kiln_qu8s8_igemm_4x16c4__neondot(int m, int n, int kc, int taps, const uint8_t *const *rows,
                                      const int8_t *packed, uint8_t *c, size_t ldc, const kiln_requant *rq) {
    int k = kc * taps, groups = k / KILN_KGROUP;
    // The rows as s8: x − 128 (flipping the top bit), taps one after another.
    int8_t *a8 = kiln_thread_scratch((size_t)m * k);
    const uint8x16_t flip = vdupq_n_u8(0x80);
    for (int i = 0; i < m; i++) {
        for (int tap = 0; tap < taps; tap++) {
            const uint8_t *segment = rows[(size_t)i * taps + tap];
            int8_t *to = a8 + (size_t)i * k + (size_t)tap * kc;
            int e = 0;
            for (; e + 16 <= kc; e += 16) vst1q_s8(to + e, vreinterpretq_s8_u8(veorq_u8(vld1q_u8(segment + e), flip)));
            for (; e < kc; e++) to[e] = (int8_t)(segment[e] ^ 0x80);
        }
    }
    const int8x16_t ones = vdupq_n_s8(1);
    for (int j = 0; j < n; j += KILN_PANEL) {
        const int8_t *b = packed + (size_t)(j / KILN_PANEL) * KILN_PANEL * k;
        // 128 · Σw per channel of the panel: what the shift took away.
        int32x4_t sums[4] = {vdupq_n_s32(0), vdupq_n_s32(0), vdupq_n_s32(0), vdupq_n_s32(0)};
        for (int g = 0; g < groups; g++) {
            for (int q = 0; q < 4; q++) sums[q] = vdotq_s32(sums[q], ones, vld1q_s8(b + (size_t)g * 64 + q * 16));
        }
        int32_t correction[KILN_PANEL];
        for (int q = 0; q < 4; q++) vst1q_s32(correction + q * 4, vshlq_n_s32(sums[q], 7));
        for (int i0 = 0; i0 < m; i0 += TILE_ROWS) {
            const int8_t *a = a8 + (size_t)i0 * k;
            switch (m - i0 < TILE_ROWS ? m - i0 : TILE_ROWS) {
#define KILN_TILE(MR) case MR: tile(MR, j, n, k, a, b, correction, c, ldc, (size_t)i0, rq); break;
            KILN_TILE(4) KILN_TILE(3) KILN_TILE(2) KILN_TILE(1)
#undef KILN_TILE
            }
        }
    }
}
#endif
