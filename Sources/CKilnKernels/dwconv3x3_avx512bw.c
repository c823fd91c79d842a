// 3×3 depthwise convolution on AVX-512 without VNNI: the AVX2 kernel's scheme — each input column's kernel rows
// paired as 16-bit (row 0, row 1) and (row 2, 0) for vpmaddwd, the exact product, and the columns carried from one
// output pixel to the next — on 32 channels a block, the last block masked.
#if defined(__x86_64__)
#pragma STDC FP_CONTRACT OFF
#include "avx512.h"
#include "dwconv3x3.h"

/// One column of 32 channels, rows given as 16-bit vectors (128-bit lane l: channels 8l … 8l + 7), as pairs in
/// quarter order: [0] rows (0, 1) of channels 0–3 | 8–11 | 16–19 | 24–27, [1] the same of 4–7 | 12–15 | 20–23 |
/// 28–31, [2] and [3] (row 2, 0) likewise.
KILN_AVX512 static inline void dw_pairs32(__m512i r0, __m512i r1, __m512i r2, __m512i out[4]) {
    __m512i zero = _mm512_setzero_si512();
    out[0] = _mm512_unpacklo_epi16(r0, r1);
    out[1] = _mm512_unpackhi_epi16(r0, r1);
    out[2] = _mm512_unpacklo_epi16(r2, zero);
    out[3] = _mm512_unpackhi_epi16(r2, zero);
}

/// Sixteen int32 of channels 0–15 and sixteen of 16–31 (natural order) in the quarter order of dw_pairs32.
KILN_AVX512 static inline void dw_quarters32(__m512i v0, __m512i v1, __m512i out[2]) {
    out[0] = _mm512_shuffle_i32x4(v0, v1, 0x88);
    out[1] = _mm512_shuffle_i32x4(v0, v1, 0xDD);
}

KILN_AVX512 static inline __m512i widen_u8(__mmask32 mask, const uint8_t *p) {
    return _mm512_cvtepu8_epi16(_mm256_maskz_loadu_epi8(mask, p));
}

KILN_AVX512 static inline __m512i widen_s8(__mmask32 mask, const int8_t *p) {
    return _mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(mask, p));
}

/// Requantizes quarter-order accumulators (bias included) of 32 channels, with the optional residual, and stores the
/// channels in `mask` in natural order.
KILN_AVX512 static inline void dw_store32(const __m512i acc[2], const __m512 multiplier[2], __mmask32 mask,
                                          const kiln_requant *rq, const uint8_t *residual, uint8_t *out) {
    __m512i level[2];
    if (residual) {
        __m512i r16 = widen_u8(mask, residual), zero = _mm512_setzero_si512();
        __m512i r[2] = {_mm512_unpacklo_epi16(r16, zero), _mm512_unpackhi_epi16(r16, zero)};
        for (int q = 0; q < 2; q++) level[q] = level16(_mm512_mul_ps(_mm512_cvtepi32_ps(acc[q]), multiplier[q]), &r[q], rq);
    } else {
        for (int q = 0; q < 2; q++) level[q] = level16(_mm512_mul_ps(_mm512_cvtepi32_ps(acc[q]), multiplier[q]), NULL, rq);
    }
    // Levels are within 0…255: the saturating pack is exact and restores natural order within each 128-bit lane,
    // which is natural order overall; vpmovwb keeps each level's low byte.
    _mm256_mask_storeu_epi8(out, mask, _mm512_cvtepi16_epi8(_mm512_packs_epi32(level[0], level[1])));
}

KILN_AVX512 void kiln_qu8s8_dwconv3x3_32c2__avx512bw(const uint8_t *x, int h, int w, int c, int oy, int ow,
                                                     int stride, int pad_top, int pad_left, uint8_t input_zero,
                                                     const int8_t *weights, uint8_t *y, const kiln_requant *rq) {
    int inside[3];
    const uint8_t *line[3];
    kiln_dw3x3_rows(x, h, w, c, oy, stride, pad_top, inside, line);
    const __m512i padding = _mm512_set1_epi16(input_zero);
    for (int ch = 0; ch < c; ch += 32) {
        const __mmask32 mask = c - ch >= 32 ? 0xFFFFFFFFu : ((1u << (c - ch)) - 1);
        // Weights of kernel column j, paired like the input.
        __m512i wt[3][4];
        for (int j = 0; j < 3; j++) {
            dw_pairs32(widen_s8(mask, weights + (size_t)j * c + ch), widen_s8(mask, weights + (size_t)(3 + j) * c + ch),
                       widen_s8(mask, weights + (size_t)(6 + j) * c + ch), wt[j]);
        }
        __m512i bias[2], m[2];
        __m512 multiplier[2];
        const __mmask16 low = mask16(c - ch), high = mask16(c - ch - 16);
        dw_quarters32(_mm512_maskz_loadu_epi32(low, rq->bias + ch), _mm512_maskz_loadu_epi32(high, rq->bias + ch + 16), bias);
        dw_quarters32(_mm512_castps_si512(_mm512_maskz_loadu_ps(low, rq->multiplier + ch)),
                      _mm512_castps_si512(_mm512_maskz_loadu_ps(high, rq->multiplier + ch + 16)), m);
        multiplier[0] = _mm512_castsi512_ps(m[0]);
        multiplier[1] = _mm512_castsi512_ps(m[1]);
        // Paired input columns x0, x0 + 1, x0 + 2 of the current window (a, b, cc).
        __m512i a[4], b[4], cc[4];
#define KILN_DW_COLUMN(ix, out) { \
            int ix_ = (ix); \
            if (ix_ < 0 || ix_ >= w) { \
                dw_pairs32(padding, padding, padding, out); \
            } else { \
                size_t at_ = (size_t)ix_ * c + ch; \
                dw_pairs32(inside[0] ? widen_u8(mask, line[0] + at_) : padding, \
                           inside[1] ? widen_u8(mask, line[1] + at_) : padding, \
                           inside[2] ? widen_u8(mask, line[2] + at_) : padding, out); \
            } }
        for (int ox = 0; ox < ow; ox++) {
            KILN_DW3X3_ADVANCE(ox, stride, pad_left, KILN_DW_COLUMN)
            __m512i acc[2];
            for (int q = 0; q < 2; q++) {
                __m512i s0 = _mm512_add_epi32(_mm512_madd_epi16(a[q], wt[0][q]), _mm512_madd_epi16(a[q + 2], wt[0][q + 2]));
                __m512i s1 = _mm512_add_epi32(_mm512_madd_epi16(b[q], wt[1][q]), _mm512_madd_epi16(b[q + 2], wt[1][q + 2]));
                __m512i s2 = _mm512_add_epi32(_mm512_madd_epi16(cc[q], wt[2][q]), _mm512_madd_epi16(cc[q + 2], wt[2][q + 2]));
                acc[q] = _mm512_add_epi32(_mm512_add_epi32(bias[q], s0), _mm512_add_epi32(s1, s2));
            }
            const uint8_t *res = rq->residual ? rq->residual + (size_t)ox * c + ch : NULL;
            dw_store32(acc, multiplier, mask, rq, res, y + (size_t)ox * c + ch);
        }
#undef KILN_DW_COLUMN
    }
}
#endif
