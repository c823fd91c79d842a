// u8×s8 GEMM for arm64 with the dot-product extension. NEON's udot/sdot multiply same-signed bytes, so the u8
// activations are shifted to s8 (x − 128) and 128 · Σw is added back: exact in int32.
#include "kiln_kernels.h"
#include "requant.h"

#if defined(__aarch64__)
#include <arm_neon.h>
#include <string.h>

__attribute__((target("dotprod")))
void kiln_qu8s8_igemm_1x16c4__neondot(int m, int n, int kc, int taps, const uint8_t *const *rows,
                                      const int8_t *packed, uint8_t *c, size_t ldc, const kiln_requant *rq) {
    int groups = kc / KILN_KGROUP;
    size_t panel_bytes = (size_t)KILN_PANEL * kc * taps;
    for (int i = 0; i < m; i++) {
        for (int j = 0; j < n; j += KILN_PANEL) {
            const int8_t *b = packed + (size_t)(j / KILN_PANEL) * panel_bytes;
            int32x4_t acc[4] = {vdupq_n_s32(0), vdupq_n_s32(0), vdupq_n_s32(0), vdupq_n_s32(0)};
            int32x4_t wsum[4] = {vdupq_n_s32(0), vdupq_n_s32(0), vdupq_n_s32(0), vdupq_n_s32(0)};
            int8x16_t ones = vdupq_n_s8(1);
            for (int tap = 0; tap < taps; tap++) {
                const uint8_t *segment = rows[(size_t)i * taps + tap];
                for (int g = 0; g < groups; g++) {
                    uint32_t quad;
                    memcpy(&quad, segment + g * 4, 4);
                    int8x16_t x = veorq_s8(vreinterpretq_s8_u32(vdupq_n_u32(quad)), vdupq_n_s8((int8_t)0x80));
                    const int8_t *wg = b + ((size_t)tap * groups + g) * 64;
                    for (int q = 0; q < 4; q++) {
                        int8x16_t w = vld1q_s8(wg + q * 16);
                        acc[q] = vdotq_s32(acc[q], x, w);
                        wsum[q] = vdotq_s32(wsum[q], ones, w);
                    }
                }
            }
            for (int q = 0; q < 4; q++) {
                int32_t lanes[4], sums[4];
                vst1q_s32(lanes, acc[q]);
                vst1q_s32(sums, wsum[q]);
                for (int t = 0; t < 4; t++) {
                    int col = j + q * 4 + t;
                    if (col >= n) continue;
                    uint8_t residual = rq->residual ? rq->residual[(size_t)i * rq->ldr + col] : 0;
                    c[(size_t)i * ldc + col] = kiln_requant_one(lanes[t] + 128 * sums[t] + rq->bias[col], col, residual, rq);
                }
            }
        }
    }
}
#endif
