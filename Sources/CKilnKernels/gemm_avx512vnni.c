// u8×s8 GEMM and depthwise kernels for AVX-512 (VNNI vpdpbusd for the GEMM).
#if defined(__x86_64__)
#pragma STDC FP_CONTRACT OFF
#include <immintrin.h>
#include <string.h>
#include "kiln_kernels.h"
#include "requant.h"

#define KILN_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")))

/// Requantizes 16 accumulators of columns j..j+15 (bias not yet added) and stores the valid ones.
KILN_TARGET static inline void store16(__m512i acc, int j, __mmask16 mask, const kiln_requant *rq,
                                       const uint8_t *residual, uint8_t *out) {
    acc = _mm512_add_epi32(acc, _mm512_maskz_loadu_epi32(mask, rq->bias + j));
    __m512 f = _mm512_mul_ps(_mm512_cvtepi32_ps(acc), _mm512_maskz_loadu_ps(mask, rq->multiplier + j));
    f = _mm512_roundscale_ps(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    f = _mm512_min_ps(_mm512_max_ps(f, _mm512_set1_ps(-1e6f)), _mm512_set1_ps(1e6f));
    __m512i q = _mm512_add_epi32(_mm512_cvttps_epi32(f), _mm512_set1_epi32(rq->zero_point));
    q = _mm512_min_epi32(_mm512_max_epi32(q, _mm512_set1_epi32(rq->low)), _mm512_set1_epi32(rq->high));
    if (residual) {
        __m512i r = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(mask, residual));
        __m512 a = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(q, _mm512_set1_epi32(rq->zero_point))),
                                 _mm512_set1_ps(rq->scale));
        __m512 b = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(r, _mm512_set1_epi32(rq->residual_zero_point))),
                                 _mm512_set1_ps(rq->residual_scale));
        __m512 s = _mm512_div_ps(_mm512_add_ps(a, b), _mm512_set1_ps(rq->output_scale));
        s = _mm512_roundscale_ps(s, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        s = _mm512_min_ps(_mm512_max_ps(s, _mm512_set1_ps(-1e6f)), _mm512_set1_ps(1e6f));
        q = _mm512_add_epi32(_mm512_cvttps_epi32(s), _mm512_set1_epi32(rq->output_zero_point));
        q = _mm512_min_epi32(_mm512_max_epi32(q, _mm512_setzero_si512()), _mm512_set1_epi32(255));
        q = _mm512_min_epi32(_mm512_max_epi32(q, _mm512_set1_epi32(rq->add_low)), _mm512_set1_epi32(rq->add_high));
    }
    _mm_mask_storeu_epi8(out, mask, _mm512_cvtepi32_epi8(q));
}

KILN_TARGET static inline __m512i broadcast4(const uint8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

/// Multiply-accumulates one k-group of row `p` against two weight vectors.
#define KILN_ROW2(acc0, acc1, p) { __m512i x_ = broadcast4(p); acc0 = _mm512_dpbusd_epi32(acc0, x_, w0); acc1 = _mm512_dpbusd_epi32(acc1, x_, w1); }
#define KILN_ROW1(acc0, p) { acc0 = _mm512_dpbusd_epi32(acc0, broadcast4(p), w0); }

KILN_TARGET void kiln_qu8s8_igemm_8x32c4__avx512vnni(int m, int n, int kc, int taps, const uint8_t *const *rows,
                                                     const int8_t *packed, uint8_t *c, size_t ldc,
                                                     const kiln_requant *rq) {
    int groups = kc / KILN_KGROUP;
    size_t panel_bytes = (size_t)KILN_PANEL * kc * taps;
    // Column panels outside, row tiles inside: a panel of B stays in cache for all of the caller's rows.
    for (int j = 0; j < n; j += 32) {
        int pair = j + 16 < n;
        const int8_t *b0 = packed + (size_t)(j / KILN_PANEL) * panel_bytes;
        const int8_t *b1 = b0 + panel_bytes;
        for (int i0 = 0; i0 < m; i0 += 8) {
            int mr = m - i0 < 8 ? m - i0 : 8;
            const uint8_t *const *r[8];
            for (int t = 0; t < 8; t++) r[t] = rows + (size_t)(i0 + (t < mr ? t : mr - 1)) * taps;
            if (pair) {
                __m512i c00 = _mm512_setzero_si512(), c10 = c00, c20 = c00, c30 = c00, c40 = c00, c50 = c00, c60 = c00, c70 = c00;
                __m512i c01 = c00, c11 = c00, c21 = c00, c31 = c00, c41 = c00, c51 = c00, c61 = c00, c71 = c00;
                for (int tap = 0; tap < taps; tap++) {
                    const uint8_t *p0 = r[0][tap], *p1 = r[1][tap], *p2 = r[2][tap], *p3 = r[3][tap];
                    const uint8_t *p4 = r[4][tap], *p5 = r[5][tap], *p6 = r[6][tap], *p7 = r[7][tap];
                    const int8_t *wb0 = b0 + (size_t)tap * groups * 64, *wb1 = b1 + (size_t)tap * groups * 64;
                    for (int g = 0; g < groups; g++) {
                        __m512i w0 = _mm512_loadu_si512(wb0 + (size_t)g * 64);
                        __m512i w1 = _mm512_loadu_si512(wb1 + (size_t)g * 64);
                        int o = g * 4;
                        KILN_ROW2(c00, c01, p0 + o) KILN_ROW2(c10, c11, p1 + o) KILN_ROW2(c20, c21, p2 + o) KILN_ROW2(c30, c31, p3 + o)
                        KILN_ROW2(c40, c41, p4 + o) KILN_ROW2(c50, c51, p5 + o) KILN_ROW2(c60, c61, p6 + o) KILN_ROW2(c70, c71, p7 + o)
                    }
                }
                __m512i acc0[8] = {c00, c10, c20, c30, c40, c50, c60, c70};
                __m512i acc1[8] = {c01, c11, c21, c31, c41, c51, c61, c71};
                int left1 = n - j - 16 < 16 ? n - j - 16 : 16;
                __mmask16 mask1 = (__mmask16)((1u << left1) - 1);
                for (int t = 0; t < mr; t++) {
                    size_t row = (size_t)(i0 + t);
                    const uint8_t *res = rq->residual ? rq->residual + row * rq->ldr + j : NULL;
                    store16(acc0[t], j, 0xFFFF, rq, res, c + row * ldc + j);
                    store16(acc1[t], j + 16, mask1, rq, res ? res + 16 : NULL, c + row * ldc + j + 16);
                }
            } else {
                // One panel left: 8 rows × 16 columns.
                __m512i c0 = _mm512_setzero_si512(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0;
                for (int tap = 0; tap < taps; tap++) {
                    const uint8_t *p0 = r[0][tap], *p1 = r[1][tap], *p2 = r[2][tap], *p3 = r[3][tap];
                    const uint8_t *p4 = r[4][tap], *p5 = r[5][tap], *p6 = r[6][tap], *p7 = r[7][tap];
                    const int8_t *wb0 = b0 + (size_t)tap * groups * 64;
                    for (int g = 0; g < groups; g++) {
                        __m512i w0 = _mm512_loadu_si512(wb0 + (size_t)g * 64);
                        int o = g * 4;
                        KILN_ROW1(c0, p0 + o) KILN_ROW1(c1, p1 + o) KILN_ROW1(c2, p2 + o) KILN_ROW1(c3, p3 + o)
                        KILN_ROW1(c4, p4 + o) KILN_ROW1(c5, p5 + o) KILN_ROW1(c6, p6 + o) KILN_ROW1(c7, p7 + o)
                    }
                }
                __m512i acc[8] = {c0, c1, c2, c3, c4, c5, c6, c7};
                __mmask16 mask = (__mmask16)((1u << (n - j)) - 1);
                for (int t = 0; t < mr; t++) {
                    size_t row = (size_t)(i0 + t);
                    const uint8_t *res = rq->residual ? rq->residual + row * rq->ldr + j : NULL;
                    store16(acc[t], j, mask, rq, res, c + row * ldc + j);
                }
            }
        }
    }
}

KILN_TARGET void kiln_qu8s8_dwconv3x3__avx512(const uint8_t *x, int h, int w, int c, int oy, int ow, int stride,
                                              int pad_top, int pad_left, uint8_t input_zero, const int8_t *weights,
                                              uint8_t *y, const kiln_requant *rq) {
    __m512i zero = _mm512_set1_epi32(input_zero);
    for (int ox = 0; ox < ow; ox++) {
        for (int ch = 0; ch < c; ch += 16) {
            __mmask16 mask = (__mmask16)((c - ch >= 16) ? 0xFFFF : ((1u << (c - ch)) - 1));
            __m512i acc = _mm512_setzero_si512();
            for (int i = 0; i < 3; i++) {
                int iy = oy * stride - pad_top + i;
                for (int j = 0; j < 3; j++) {
                    int ix = ox * stride - pad_left + j;
                    __m512i v = (iy >= 0 && iy < h && ix >= 0 && ix < w)
                        ? _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(mask, x + ((size_t)iy * w + ix) * c + ch))
                        : zero;
                    __m512i wt = _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(mask, weights + (i * 3 + j) * c + ch));
                    acc = _mm512_add_epi32(acc, _mm512_mullo_epi32(v, wt));
                }
            }
            const uint8_t *res = rq->residual ? rq->residual + (size_t)ox * c + ch : NULL;
            store16(acc, ch, mask, rq, res, y + (size_t)ox * c + ch);
        }
    }
}
#endif
