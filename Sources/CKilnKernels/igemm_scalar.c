// The portable u8×s8 indirect GEMM: the reference every other igemm kernel is tested against.
#pragma STDC FP_CONTRACT OFF
#include "kiln_kernels.h"
#include "requant.h"

void kiln_qu8s8_igemm_1x16c4__scalar(int m, int n, int kc, int taps, const uint8_t *const *rows,
                                     const int8_t *packed, uint8_t *c, size_t ldc, const kiln_requant *rq) {
    int k = kc * taps;
    for (int i = 0; i < m; i++) {
        for (int p = 0; p * KILN_PANEL < n; p++) {
            const int8_t *panel = packed + (size_t)p * KILN_PANEL * k;
            int32_t acc[KILN_PANEL];
            for (int ch = 0; ch < KILN_PANEL; ch++) acc[ch] = 0;
            for (int tap = 0; tap < taps; tap++) {
                const uint8_t *segment = rows[(size_t)i * taps + tap];
                for (int g = 0; g < kc / KILN_KGROUP; g++) {
                    const int8_t *b = panel + ((size_t)tap * kc / KILN_KGROUP + g) * KILN_PANEL * KILN_KGROUP;
                    for (int t = 0; t < KILN_KGROUP; t++) {
                        int32_t av = segment[g * KILN_KGROUP + t];
                        for (int ch = 0; ch < KILN_PANEL; ch++) acc[ch] += av * (int32_t)b[ch * KILN_KGROUP + t];
                    }
                }
            }
            for (int ch = 0; ch < KILN_PANEL && p * KILN_PANEL + ch < n; ch++) {
                int j = p * KILN_PANEL + ch;
                uint8_t residual = rq->residual ? rq->residual[(size_t)i * rq->ldr + j] : 0;
                c[(size_t)i * ldc + j] = kiln_requant_one(acc[ch] + rq->bias[j], j, residual, rq);
            }
        }
    }
}

/// The portable narrow GEMM: the plain one (its 32-bit sums are exact for any inputs).
void kiln_qu8s8_igemm_narrow_1x16c4__scalar(int m, int n, int kc, int taps, const uint8_t *const *rows,
                                            const int8_t *packed, uint8_t *c, size_t ldc, const kiln_requant *rq,
                                            int steps) {
    (void)steps;
    kiln_qu8s8_igemm_1x16c4__scalar(m, n, kc, taps, rows, packed, c, ldc, rq);
}
