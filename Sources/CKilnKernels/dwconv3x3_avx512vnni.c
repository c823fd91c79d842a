// 3×3 depthwise convolution on AVX-512 VNNI: kernel columns as 4-byte groups on vpdpbusd.
#if defined(__x86_64__)
#pragma STDC FP_CONTRACT OFF
#include "avx2.h"
#include "avx512.h"
#include "dwconv3x3.h"

/// Four rows of 64 bytes (one channel each) as four quarter-order vectors of 4-byte groups.
KILN_TARGET static inline void dw_interleave(__m512i r0, __m512i r1, __m512i r2, __m512i r3, __m512i out[4]) {
    __m512i lo01 = _mm512_unpacklo_epi8(r0, r1), hi01 = _mm512_unpackhi_epi8(r0, r1);
    __m512i lo23 = _mm512_unpacklo_epi8(r2, r3), hi23 = _mm512_unpackhi_epi8(r2, r3);
    out[0] = _mm512_unpacklo_epi16(lo01, lo23);
    out[1] = _mm512_unpackhi_epi16(lo01, lo23);
    out[2] = _mm512_unpacklo_epi16(hi01, hi23);
    out[3] = _mm512_unpackhi_epi16(hi01, hi23);
}

/// Four natural-order vectors of 16 dwords (channels 0–15, 16–31, …) in quarter order.
KILN_TARGET static inline void dw_quarters(__m512i v0, __m512i v1, __m512i v2, __m512i v3, __m512i out[4]) {
    __m512i t0 = _mm512_shuffle_i32x4(v0, v1, 0x44), t1 = _mm512_shuffle_i32x4(v0, v1, 0xEE);
    __m512i t2 = _mm512_shuffle_i32x4(v2, v3, 0x44), t3 = _mm512_shuffle_i32x4(v2, v3, 0xEE);
    out[0] = _mm512_shuffle_i32x4(t0, t2, 0x88);
    out[1] = _mm512_shuffle_i32x4(t0, t2, 0xDD);
    out[2] = _mm512_shuffle_i32x4(t1, t3, 0x88);
    out[3] = _mm512_shuffle_i32x4(t1, t3, 0xDD);
}

/// Mask of the channels of a 64-channel block present in a tensor of `left` remaining channels.
static inline __mmask64 dw_mask64(int left) { return left >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << left) - 1); }
static inline __mmask16 dw_mask16(int left) {
    return left >= 16 ? (__mmask16)0xFFFF : (left <= 0 ? 0 : (__mmask16)((1u << left) - 1));
}

/// Requantizes quarter-order accumulators (bias included) like store16, with the optional residual, and stores the
/// 64 channels in natural order.
KILN_TARGET static inline void dw_store(const __m512i acc[4], const __m512 multiplier[4], __mmask64 mask,
                                        const kiln_requant *rq, const uint8_t *residual, uint8_t *out) {
    __m512i level[4], r[4];
    if (residual) {
        __m512i bytes = _mm512_maskz_loadu_epi8(mask, residual), zero = _mm512_setzero_si512();
        __m512i lo = _mm512_unpacklo_epi8(bytes, zero), hi = _mm512_unpackhi_epi8(bytes, zero);
        r[0] = _mm512_unpacklo_epi16(lo, zero);
        r[1] = _mm512_unpackhi_epi16(lo, zero);
        r[2] = _mm512_unpacklo_epi16(hi, zero);
        r[3] = _mm512_unpackhi_epi16(hi, zero);
    }
    for (int q = 0; q < 4; q++) {
        level[q] = level16(_mm512_mul_ps(_mm512_cvtepi32_ps(acc[q]), multiplier[q]), residual ? &r[q] : NULL, rq);
    }
    // Every level is within 0…255, so the saturating packs are exact; they also restore natural channel order.
    __m512i packed = _mm512_packus_epi16(_mm512_packs_epi32(level[0], level[1]), _mm512_packs_epi32(level[2], level[3]));
    _mm512_mask_storeu_epi8(out, mask, packed);
}

// The same scheme 32 channels wide (two 128-bit lanes), for a last block of at most 32 channels: a 64-wide block
// there would leave up to half its lanes idle.

/// Channels ch … c − 1 (at most 32) of one output row; `inside`/`line` as in the 64-wide kernel.
KILN_TARGET static void dw_block32(const int inside[3], const uint8_t *const line[3], int w, int c, int ch, int ow,
                                   int stride, int pad_left, uint8_t input_zero, const int8_t *weights, uint8_t *y,
                                   const kiln_requant *rq) {
    __mmask32 mask = c - ch >= 32 ? 0xFFFFFFFFu : ((1u << (c - ch)) - 1);
    __m256i padding = _mm256_set1_epi8((char)input_zero), zero = _mm256_setzero_si256();
    __m256i wt[3][4];
    for (int j = 0; j < 3; j++) {
        kiln_dw_groups32(_mm256_maskz_loadu_epi8(mask, weights + (size_t)j * c + ch),
                         _mm256_maskz_loadu_epi8(mask, weights + (size_t)(3 + j) * c + ch),
                         _mm256_maskz_loadu_epi8(mask, weights + (size_t)(6 + j) * c + ch), zero, wt[j]);
    }
    __m256i bias[4];
    __m256 multiplier[4];
    {
        __m256i b[4], m[4], mq[4];
        for (int k = 0; k < 4; k++) {
            int left = c - ch - 8 * k;
            __mmask8 part = left >= 8 ? 0xFF : (left <= 0 ? 0 : (__mmask8)((1u << left) - 1));
            b[k] = _mm256_maskz_loadu_epi32(part, rq->bias + ch + 8 * k);
            m[k] = _mm256_castps_si256(_mm256_maskz_loadu_ps(part, rq->multiplier + ch + 8 * k));
        }
        kiln_dw_quarters32(b[0], b[1], b[2], b[3], bias);
        kiln_dw_quarters32(m[0], m[1], m[2], m[3], mq);
        for (int q = 0; q < 4; q++) multiplier[q] = _mm256_castsi256_ps(mq[q]);
    }
    __m256i a[4], b[4], cc[4];
#define KILN_DW_COLUMN32(ix, out) { \
        int ix_ = (ix); \
        if (ix_ < 0 || ix_ >= w) { \
            out[0] = out[1] = out[2] = out[3] = padding; \
        } else { \
            size_t at_ = (size_t)ix_ * c + ch; \
            kiln_dw_groups32(inside[0] ? _mm256_maskz_loadu_epi8(mask, line[0] + at_) : padding, \
                             inside[1] ? _mm256_maskz_loadu_epi8(mask, line[1] + at_) : padding, \
                             inside[2] ? _mm256_maskz_loadu_epi8(mask, line[2] + at_) : padding, zero, out); \
        } }
    for (int ox = 0; ox < ow; ox++) {
        KILN_DW3X3_ADVANCE(ox, stride, pad_left, KILN_DW_COLUMN32)
        __m256i acc[4];
        for (int q = 0; q < 4; q++) {
            acc[q] = _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(_mm256_dpbusd_epi32(bias[q], a[q], wt[0][q]), b[q], wt[1][q]),
                                         cc[q], wt[2][q]);
        }
        const uint8_t *res = rq->residual ? rq->residual + (size_t)ox * c + ch : NULL;
        __m256i other = res ? _mm256_maskz_loadu_epi8(mask, res) : _mm256_setzero_si256();
        _mm256_mask_storeu_epi8(y + (size_t)ox * c + ch, mask, kiln_dw_levels32(acc, multiplier, res ? &other : NULL, rq));
    }
#undef KILN_DW_COLUMN32
}

KILN_TARGET void kiln_qu8s8_dwconv3x3_64c4__avx512vnni(const uint8_t *x, int h, int w, int c, int oy, int ow,
                                                       int stride, int pad_top, int pad_left, uint8_t input_zero,
                                                       const int8_t *weights, uint8_t *y, const kiln_requant *rq) {
    int inside[3];
    const uint8_t *line[3];
    kiln_dw3x3_rows(x, h, w, c, oy, stride, pad_top, inside, line);
    __m512i padding = _mm512_set1_epi8((char)input_zero), zero = _mm512_setzero_si512();
    for (int ch = 0; ch < c; ch += 64) {
        if (c - ch <= 32) {
            dw_block32(inside, line, w, c, ch, ow, stride, pad_left, input_zero, weights, y, rq);
            break;
        }
        __mmask64 mask = dw_mask64(c - ch);
        // Weights of kernel column j: rows 0–2 and a zero fourth, in quarter order.
        __m512i wt[3][4];
        for (int j = 0; j < 3; j++) {
            dw_interleave(_mm512_maskz_loadu_epi8(mask, weights + (size_t)j * c + ch),
                          _mm512_maskz_loadu_epi8(mask, weights + (size_t)(3 + j) * c + ch),
                          _mm512_maskz_loadu_epi8(mask, weights + (size_t)(6 + j) * c + ch), zero, wt[j]);
        }
        __m512i bias[4];
        __m512 multiplier[4];
        {
            __m512i b[4], m[4];
            for (int k = 0; k < 4; k++) {
                __mmask16 part = dw_mask16(c - ch - 16 * k);
                b[k] = _mm512_maskz_loadu_epi32(part, rq->bias + ch + 16 * k);
                m[k] = _mm512_castps_si512(_mm512_maskz_loadu_ps(part, rq->multiplier + ch + 16 * k));
            }
            __m512i mq[4];
            dw_quarters(b[0], b[1], b[2], b[3], bias);
            dw_quarters(m[0], m[1], m[2], m[3], mq);
            for (int q = 0; q < 4; q++) multiplier[q] = _mm512_castsi512_ps(mq[q]);
        }
        // Interleaved input columns x0, x0 + 1, x0 + 2 of the current window (a, b, c), carried over from the
        // previous pixel where the windows overlap: named registers, not an indexed array, so they stay in registers.
        __m512i a[4], b[4], cc[4];
#define KILN_DW_COLUMN(ix, out) { \
            int ix_ = (ix); \
            if (ix_ < 0 || ix_ >= w) { \
                out[0] = out[1] = out[2] = out[3] = padding; \
            } else { \
                size_t at_ = (size_t)ix_ * c + ch; \
                dw_interleave(inside[0] ? _mm512_maskz_loadu_epi8(mask, line[0] + at_) : padding, \
                              inside[1] ? _mm512_maskz_loadu_epi8(mask, line[1] + at_) : padding, \
                              inside[2] ? _mm512_maskz_loadu_epi8(mask, line[2] + at_) : padding, zero, out); \
            } }
        for (int ox = 0; ox < ow; ox++) {
            KILN_DW3X3_ADVANCE(ox, stride, pad_left, KILN_DW_COLUMN)
            __m512i acc[4];
            for (int q = 0; q < 4; q++) {
                acc[q] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_dpbusd_epi32(bias[q], a[q], wt[0][q]), b[q], wt[1][q]),
                                             cc[q], wt[2][q]);
            }
            const uint8_t *res = rq->residual ? rq->residual + (size_t)ox * c + ch : NULL;
            dw_store(acc, multiplier, mask, rq, res, y + (size_t)ox * c + ch);
        }
#undef KILN_DW_COLUMN
    }
}
#endif
