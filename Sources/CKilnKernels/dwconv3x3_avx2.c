// 3×3 depthwise convolution on AVX2: 16 channels a block, each input column's three kernel rows paired as 16-bit
// (row 0, row 1) and (row 2, 0) for vpmaddwd — the exact product, 16 multiply-adds an instruction — and the
// columns carried from one output pixel to the next.
#if defined(__x86_64__)
#pragma STDC FP_CONTRACT OFF
#include "avx2.h"
#include "dwconv3x3.h"

/// One column of 16 channels, rows given as 16-bit vectors (channels 0–7 | 8–15), as pairs in quarter order:
/// [0] rows (0, 1) of channels 0–3 | 8–11, [1] the same of channels 4–7 | 12–15, [2] and [3] (row 2, 0) likewise.
KILN_AVX2 static inline void dw_pairs(__m256i r0, __m256i r1, __m256i r2, __m256i out[4]) {
    __m256i zero = _mm256_setzero_si256();
    out[0] = _mm256_unpacklo_epi16(r0, r1);
    out[1] = _mm256_unpackhi_epi16(r0, r1);
    out[2] = _mm256_unpacklo_epi16(r2, zero);
    out[3] = _mm256_unpackhi_epi16(r2, zero);
}

/// Eight int32 of channels 0–7 and eight of 8–15 (natural order) in quarter order: 0–3 | 8–11 and 4–7 | 12–15.
KILN_AVX2 static inline void dw_quarters16(__m256i v0, __m256i v1, __m256i out[2]) {
    out[0] = _mm256_permute2x128_si256(v0, v1, 0x20);
    out[1] = _mm256_permute2x128_si256(v0, v1, 0x31);
}

KILN_AVX2 static inline __m256i widen16(const uint8_t *p) {
    return _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)p));
}

/// Requantizes quarter-order accumulators (bias included) of 16 channels, with the optional residual, and stores
/// them in natural order.
KILN_AVX2 static inline void dw_store16(const __m256i acc[2], const __m256 multiplier[2], const kiln_requant *rq,
                                        const uint8_t *residual, uint8_t *out) {
    __m256i level[2];
    if (residual) {
        __m256i r16 = widen16(residual), zero = _mm256_setzero_si256();
        __m256i r[2] = {_mm256_unpacklo_epi16(r16, zero), _mm256_unpackhi_epi16(r16, zero)};
        for (int q = 0; q < 2; q++) level[q] = level8(_mm256_mul_ps(_mm256_cvtepi32_ps(acc[q]), multiplier[q]), &r[q], rq);
    } else {
        for (int q = 0; q < 2; q++) level[q] = level8(_mm256_mul_ps(_mm256_cvtepi32_ps(acc[q]), multiplier[q]), NULL, rq);
    }
    // Levels are within 0…255, so the saturating packs are exact; packing the two quarters restores natural order.
    __m256i words = _mm256_packs_epi32(level[0], level[1]);
    _mm_storeu_si128((__m128i *)out, _mm_packus_epi16(_mm256_castsi256_si128(words), _mm256_extracti128_si256(words, 1)));
}

KILN_AVX2 void kiln_dwconv3x3_channels__avx2(const uint8_t *x, int h, int w, int c, int oy, int ow, int stride,
                                             int pad_top, int pad_left, uint8_t input_zero, const int8_t *weights,
                                             uint8_t *y, const kiln_requant *rq, int first) {
    int inside[3];
    const uint8_t *line[3];
    kiln_dw3x3_rows(x, h, w, c, oy, stride, pad_top, inside, line);
    const __m256i padding = _mm256_set1_epi16(input_zero);
    int ch = first;
    for (; ch + 16 <= c; ch += 16) {
        // Weights of kernel column j, paired like the input.
        __m256i wt[3][4];
        for (int j = 0; j < 3; j++) {
            dw_pairs(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(weights + (size_t)j * c + ch))),
                     _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(weights + (size_t)(3 + j) * c + ch))),
                     _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(weights + (size_t)(6 + j) * c + ch))),
                     wt[j]);
        }
        __m256i bias[2], m[2];
        __m256 multiplier[2];
        dw_quarters16(_mm256_loadu_si256((const __m256i *)(rq->bias + ch)),
                      _mm256_loadu_si256((const __m256i *)(rq->bias + ch + 8)), bias);
        dw_quarters16(_mm256_loadu_si256((const __m256i *)(rq->multiplier + ch)),
                      _mm256_loadu_si256((const __m256i *)(rq->multiplier + ch + 8)), m);
        multiplier[0] = _mm256_castsi256_ps(m[0]);
        multiplier[1] = _mm256_castsi256_ps(m[1]);
        // Paired input columns x0, x0 + 1, x0 + 2 of the current window (a, b, cc).
        __m256i a[4], b[4], cc[4];
#define KILN_DW_COLUMN16(ix, out) { \
            int ix_ = (ix); \
            if (ix_ < 0 || ix_ >= w) { \
                dw_pairs(padding, padding, padding, out); \
            } else { \
                size_t at_ = (size_t)ix_ * c + ch; \
                dw_pairs(inside[0] ? widen16(line[0] + at_) : padding, inside[1] ? widen16(line[1] + at_) : padding, \
                         inside[2] ? widen16(line[2] + at_) : padding, out); \
            } }
        for (int ox = 0; ox < ow; ox++) {
            KILN_DW3X3_ADVANCE(ox, stride, pad_left, KILN_DW_COLUMN16)
            __m256i acc[2];
            for (int q = 0; q < 2; q++) {
                __m256i s0 = _mm256_add_epi32(_mm256_madd_epi16(a[q], wt[0][q]), _mm256_madd_epi16(a[q + 2], wt[0][q + 2]));
                __m256i s1 = _mm256_add_epi32(_mm256_madd_epi16(b[q], wt[1][q]), _mm256_madd_epi16(b[q + 2], wt[1][q + 2]));
                __m256i s2 = _mm256_add_epi32(_mm256_madd_epi16(cc[q], wt[2][q]), _mm256_madd_epi16(cc[q + 2], wt[2][q + 2]));
                acc[q] = _mm256_add_epi32(_mm256_add_epi32(bias[q], s0), _mm256_add_epi32(s1, s2));
            }
            const uint8_t *res = rq->residual ? rq->residual + (size_t)ox * c + ch : NULL;
            dw_store16(acc, multiplier, rq, res, y + (size_t)ox * c + ch);
        }
#undef KILN_DW_COLUMN16
    }
    // The last channels (fewer than 16): the portable kernel's arithmetic.
    for (; ch < c; ch++) {
        for (int ox = 0; ox < ow; ox++) {
            int32_t acc = kiln_dwconv3x3_one(x, h, w, c, oy, ox, ch, stride, pad_top, pad_left, input_zero, weights, rq);
            uint8_t residual = rq->residual ? rq->residual[(size_t)ox * c + ch] : 0;
            y[(size_t)ox * c + ch] = kiln_requant_one(acc, ch, residual, rq);
        }
    }
}

KILN_AVX2 void kiln_qu8s8_dwconv3x3_16c2__avx2(const uint8_t *x, int h, int w, int c, int oy, int ow, int stride,
                                               int pad_top, int pad_left, uint8_t input_zero, const int8_t *weights,
                                               uint8_t *y, const kiln_requant *rq) {
    kiln_dwconv3x3_channels__avx2(x, h, w, c, oy, ow, stride, pad_top, pad_left, input_zero, weights, y, rq, 0);
}
#endif
