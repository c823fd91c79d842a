// 3×3 depthwise convolution on AVX-VNNI: 32 channels a block, each input column's three kernel rows (and a zero
// fourth) as 4-byte groups on 256-bit vpdpbusd, the columns carried from one output pixel to the next; the last
// channels (fewer than 32) go to the AVX2 kernel's block loop.
#if defined(__x86_64__)
#pragma STDC FP_CONTRACT OFF
#include "avx2.h"
#include "dwconv3x3.h"

KILN_AVXVNNI static inline __m256i load32(const void *p) { return _mm256_loadu_si256((const __m256i *)p); }

KILN_AVXVNNI void kiln_qu8s8_dwconv3x3_32c4__avxvnni(const uint8_t *x, int h, int w, int c, int oy, int ow,
                                                     int stride, int pad_top, int pad_left, uint8_t input_zero,
                                                     const int8_t *weights, uint8_t *y, const kiln_requant *rq) {
    int inside[3];
    const uint8_t *line[3];
    kiln_dw3x3_rows(x, h, w, c, oy, stride, pad_top, inside, line);
    const __m256i padding = _mm256_set1_epi8((char)input_zero), zero = _mm256_setzero_si256();
    int ch = 0;
    for (; ch + 32 <= c; ch += 32) {
        // Weights of kernel column j: rows 0–2 and a zero fourth, grouped like the input.
        __m256i wt[3][4];
        for (int j = 0; j < 3; j++) {
            kiln_dw_groups32(load32(weights + (size_t)j * c + ch), load32(weights + (size_t)(3 + j) * c + ch),
                      load32(weights + (size_t)(6 + j) * c + ch), zero, wt[j]);
        }
        __m256i bias[4], m[4];
        __m256 multiplier[4];
        kiln_dw_quarters32(load32(rq->bias + ch), load32(rq->bias + ch + 8), load32(rq->bias + ch + 16),
                      load32(rq->bias + ch + 24), bias);
        kiln_dw_quarters32(load32(rq->multiplier + ch), load32(rq->multiplier + ch + 8), load32(rq->multiplier + ch + 16),
                      load32(rq->multiplier + ch + 24), m);
        for (int q = 0; q < 4; q++) multiplier[q] = _mm256_castsi256_ps(m[q]);
        // Grouped input columns x0, x0 + 1, x0 + 2 of the current window (a, b, cc).
        __m256i a[4], b[4], cc[4];
#define KILN_DW_COLUMN32(ix, out) { \
            int ix_ = (ix); \
            if (ix_ < 0 || ix_ >= w) { \
                out[0] = out[1] = out[2] = out[3] = padding; \
            } else { \
                size_t at_ = (size_t)ix_ * c + ch; \
                kiln_dw_groups32(inside[0] ? load32(line[0] + at_) : padding, inside[1] ? load32(line[1] + at_) : padding, \
                          inside[2] ? load32(line[2] + at_) : padding, zero, out); \
            } }
        for (int ox = 0; ox < ow; ox++) {
            KILN_DW3X3_ADVANCE(ox, stride, pad_left, KILN_DW_COLUMN32)
            __m256i acc[4];
            for (int q = 0; q < 4; q++) {
                acc[q] = _mm256_dpbusd_avx_epi32(
                    _mm256_dpbusd_avx_epi32(_mm256_dpbusd_avx_epi32(bias[q], a[q], wt[0][q]), b[q], wt[1][q]), cc[q], wt[2][q]);
            }
            const uint8_t *res = rq->residual ? rq->residual + (size_t)ox * c + ch : NULL;
            __m256i other = res ? load32(res) : _mm256_setzero_si256();
            _mm256_storeu_si256((__m256i *)(y + (size_t)ox * c + ch), kiln_dw_levels32(acc, multiplier, res ? &other : NULL, rq));
        }
#undef KILN_DW_COLUMN32
    }
    if (ch < c) kiln_dwconv3x3_channels__avx2(x, h, w, c, oy, ow, stride, pad_top, pad_left, input_zero, weights, y, rq, ch);
}
#endif
