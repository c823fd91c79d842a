// 3×3 depthwise convolution on AVX-VNNI: 32 channels a block, each input column's three kernel rows (and a zero
// fourth) as 4-byte groups on 256-bit vpdpbusd, the columns carried from one output pixel to the next; the last
// channels (fewer than 32) go to the AVX2 kernel's block loop.
#if defined(__x86_64__)
#pragma STDC FP_CONTRACT OFF
#include "avx2.h"

/// Four rows of 32 bytes (one channel each) as 4-byte groups in quarter order: [0] channels 0–3 | 16–19,
/// [1] 4–7 | 20–23, [2] 8–11 | 24–27, [3] 12–15 | 28–31.
KILN_AVXVNNI static inline void dw_groups(__m256i r0, __m256i r1, __m256i r2, __m256i r3, __m256i out[4]) {
    __m256i lo01 = _mm256_unpacklo_epi8(r0, r1), hi01 = _mm256_unpackhi_epi8(r0, r1);
    __m256i lo23 = _mm256_unpacklo_epi8(r2, r3), hi23 = _mm256_unpackhi_epi8(r2, r3);
    out[0] = _mm256_unpacklo_epi16(lo01, lo23);
    out[1] = _mm256_unpackhi_epi16(lo01, lo23);
    out[2] = _mm256_unpacklo_epi16(hi01, hi23);
    out[3] = _mm256_unpackhi_epi16(hi01, hi23);
}

/// Four natural-order vectors of 8 int32 (channels 0–7, 8–15, 16–23, 24–31) in the quarter order of dw_groups.
KILN_AVXVNNI static inline void dw_quarters32(__m256i v0, __m256i v1, __m256i v2, __m256i v3, __m256i out[4]) {
    out[0] = _mm256_permute2x128_si256(v0, v2, 0x20);
    out[1] = _mm256_permute2x128_si256(v0, v2, 0x31);
    out[2] = _mm256_permute2x128_si256(v1, v3, 0x20);
    out[3] = _mm256_permute2x128_si256(v1, v3, 0x31);
}

KILN_AVXVNNI static inline __m256i load32(const void *p) { return _mm256_loadu_si256((const __m256i *)p); }

/// Requantizes quarter-order accumulators (bias included) of 32 channels, with the optional residual, and stores
/// them in natural order.
KILN_AVXVNNI static inline void dw_store32(const __m256i acc[4], const __m256 multiplier[4], const kiln_requant *rq,
                                           const uint8_t *residual, uint8_t *out) {
    __m256i level[4];
    if (residual) {
        __m256i bytes = load32(residual), zero = _mm256_setzero_si256();
        __m256i lo = _mm256_unpacklo_epi8(bytes, zero), hi = _mm256_unpackhi_epi8(bytes, zero);
        __m256i r[4] = {_mm256_unpacklo_epi16(lo, zero), _mm256_unpackhi_epi16(lo, zero),
                        _mm256_unpacklo_epi16(hi, zero), _mm256_unpackhi_epi16(hi, zero)};
        for (int q = 0; q < 4; q++) level[q] = level8(_mm256_mul_ps(_mm256_cvtepi32_ps(acc[q]), multiplier[q]), &r[q], rq);
    } else {
        for (int q = 0; q < 4; q++) level[q] = level8(_mm256_mul_ps(_mm256_cvtepi32_ps(acc[q]), multiplier[q]), NULL, rq);
    }
    // Levels are within 0…255, so the saturating packs are exact; they also restore natural channel order.
    _mm256_storeu_si256((__m256i *)out, _mm256_packus_epi16(_mm256_packs_epi32(level[0], level[1]),
                                                            _mm256_packs_epi32(level[2], level[3])));
}

KILN_AVXVNNI void kiln_qu8s8_dwconv3x3_32c4__avxvnni(const uint8_t *x, int h, int w, int c, int oy, int ow,
                                                     int stride, int pad_top, int pad_left, uint8_t input_zero,
                                                     const int8_t *weights, uint8_t *y, const kiln_requant *rq) {
    const int iy0 = oy * stride - pad_top;
    int inside[3];
    const uint8_t *line[3];
    for (int i = 0; i < 3; i++) {
        inside[i] = iy0 + i >= 0 && iy0 + i < h;
        line[i] = inside[i] ? x + (size_t)(iy0 + i) * w * c : x;
    }
    const __m256i padding = _mm256_set1_epi8((char)input_zero), zero = _mm256_setzero_si256();
    int ch = 0;
    for (; ch + 32 <= c; ch += 32) {
        // Weights of kernel column j: rows 0–2 and a zero fourth, grouped like the input.
        __m256i wt[3][4];
        for (int j = 0; j < 3; j++) {
            dw_groups(load32(weights + (size_t)j * c + ch), load32(weights + (size_t)(3 + j) * c + ch),
                      load32(weights + (size_t)(6 + j) * c + ch), zero, wt[j]);
        }
        __m256i bias[4], m[4];
        __m256 multiplier[4];
        dw_quarters32(load32(rq->bias + ch), load32(rq->bias + ch + 8), load32(rq->bias + ch + 16),
                      load32(rq->bias + ch + 24), bias);
        dw_quarters32(load32(rq->multiplier + ch), load32(rq->multiplier + ch + 8), load32(rq->multiplier + ch + 16),
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
                dw_groups(inside[0] ? load32(line[0] + at_) : padding, inside[1] ? load32(line[1] + at_) : padding, \
                          inside[2] ? load32(line[2] + at_) : padding, zero, out); \
            } }
        for (int ox = 0; ox < ow; ox++) {
            const int x0 = ox * stride - pad_left;
            if (ox > 0 && stride == 1) {
                for (int q = 0; q < 4; q++) { a[q] = b[q]; b[q] = cc[q]; }
                KILN_DW_COLUMN32(x0 + 2, cc)
            } else if (ox > 0 && stride == 2) {
                for (int q = 0; q < 4; q++) a[q] = cc[q];
                KILN_DW_COLUMN32(x0 + 1, b)
                KILN_DW_COLUMN32(x0 + 2, cc)
            } else {
                KILN_DW_COLUMN32(x0, a)
                KILN_DW_COLUMN32(x0 + 1, b)
                KILN_DW_COLUMN32(x0 + 2, cc)
            }
            __m256i acc[4];
            for (int q = 0; q < 4; q++) {
                acc[q] = _mm256_dpbusd_avx_epi32(
                    _mm256_dpbusd_avx_epi32(_mm256_dpbusd_avx_epi32(bias[q], a[q], wt[0][q]), b[q], wt[1][q]), cc[q], wt[2][q]);
            }
            const uint8_t *res = rq->residual ? rq->residual + (size_t)ox * c + ch : NULL;
            dw_store32(acc, multiplier, rq, res, y + (size_t)ox * c + ch);
        }
#undef KILN_DW_COLUMN32
    }
    if (ch < c) kiln_dwconv3x3_channels__avx2(x, h, w, c, oy, ow, stride, pad_top, pad_left, input_zero, weights, y, rq, ch);
}
#endif
