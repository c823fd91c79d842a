// u8×s8 GEMM kernels on 256-bit vectors: AVX-VNNI (vpdpbusd ymm) and plain AVX2. The AVX2 variant widens to 16
// bits and multiplies with vpmaddwd, which cannot saturate (vpmaddubsw could: 2 · 255 · 127 > 32767).
#if defined(__x86_64__)
#pragma STDC FP_CONTRACT OFF
#include <immintrin.h>
#include <string.h>
#include "kiln_kernels.h"
#include "requant.h"

#define KILN_AVX2 __attribute__((target("avx2,fma")))
#define KILN_AVXVNNI __attribute__((target("avx2,fma,avxvnni")))

/// Requantizes 8 accumulators (columns j..j+7, bias not yet added) and stores the first `count` of them.
KILN_AVX2 static inline void store8(__m256i acc, int j, int count, const kiln_requant *rq, const uint8_t *residual,
                                    uint8_t *out) {
    if (count < 8) {
        // Partial tail: the scalar epilogue gives the same bits.
        int32_t lanes[8];
        _mm256_storeu_si256((__m256i *)lanes, acc);
        for (int t = 0; t < count; t++) {
            out[t] = kiln_requant_one(lanes[t] + rq->bias[j + t], j + t, residual ? residual[t] : 0, rq);
        }
        return;
    }
    acc = _mm256_add_epi32(acc, _mm256_loadu_si256((const __m256i *)(rq->bias + j)));
    __m256 f = _mm256_mul_ps(_mm256_cvtepi32_ps(acc), _mm256_loadu_ps(rq->multiplier + j));
    f = _mm256_round_ps(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    f = _mm256_min_ps(_mm256_max_ps(f, _mm256_set1_ps(-1e6f)), _mm256_set1_ps(1e6f));
    __m256i q = _mm256_add_epi32(_mm256_cvttps_epi32(f), _mm256_set1_epi32(rq->zero_point));
    q = _mm256_min_epi32(_mm256_max_epi32(q, _mm256_set1_epi32(rq->low)), _mm256_set1_epi32(rq->high));
    if (residual) {
        int64_t bytes;
        memcpy(&bytes, residual, 8);
        __m256i r = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(bytes));
        __m256 a = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(q, _mm256_set1_epi32(rq->zero_point))),
                                 _mm256_set1_ps(rq->scale));
        __m256 b = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(r, _mm256_set1_epi32(rq->residual_zero_point))),
                                 _mm256_set1_ps(rq->residual_scale));
        __m256 s = _mm256_div_ps(_mm256_add_ps(a, b), _mm256_set1_ps(rq->output_scale));
        s = _mm256_round_ps(s, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        s = _mm256_min_ps(_mm256_max_ps(s, _mm256_set1_ps(-1e6f)), _mm256_set1_ps(1e6f));
        q = _mm256_add_epi32(_mm256_cvttps_epi32(s), _mm256_set1_epi32(rq->output_zero_point));
        q = _mm256_min_epi32(_mm256_max_epi32(q, _mm256_setzero_si256()), _mm256_set1_epi32(255));
        q = _mm256_min_epi32(_mm256_max_epi32(q, _mm256_set1_epi32(rq->add_low)), _mm256_set1_epi32(rq->add_high));
    }
    // Pack 8 × i32 (0..255) to bytes.
    __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
    __m128i words = _mm_packus_epi32(lo, hi);
    __m128i bytes8 = _mm_packus_epi16(words, words);
    _mm_storel_epi64((__m128i *)out, bytes8);
}

KILN_AVX2 static inline int32_t load4(const uint8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

KILN_AVXVNNI void kiln_qu8s8_igemm_4x16c4__avxvnni(int m, int n, int kc, int taps, const uint8_t *const *rows,
                                                   const int8_t *packed, uint8_t *c, size_t ldc,
                                                   const kiln_requant *rq) {
    int groups = kc / KILN_KGROUP;
    size_t panel_bytes = (size_t)KILN_PANEL * kc * taps;
    for (int i0 = 0; i0 < m; i0 += 4) {
        int mr = m - i0 < 4 ? m - i0 : 4;
        const uint8_t *const *r[4];
        for (int t = 0; t < 4; t++) r[t] = rows + (size_t)(i0 + (t < mr ? t : mr - 1)) * taps;
        for (int j = 0; j < n; j += KILN_PANEL) {
            const int8_t *b = packed + (size_t)(j / KILN_PANEL) * panel_bytes;
            __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
            for (int tap = 0; tap < taps; tap++) {
                const uint8_t *p0 = r[0][tap], *p1 = r[1][tap], *p2 = r[2][tap], *p3 = r[3][tap];
                const int8_t *wb = b + (size_t)tap * groups * 64;
                for (int g = 0; g < groups; g++) {
                    __m256i w0 = _mm256_loadu_si256((const __m256i *)(wb + (size_t)g * 64));
                    __m256i w1 = _mm256_loadu_si256((const __m256i *)(wb + (size_t)g * 64 + 32));
                    __m256i x;
                    x = _mm256_set1_epi32(load4(p0 + g * 4)); c00 = _mm256_dpbusd_avx_epi32(c00, x, w0); c01 = _mm256_dpbusd_avx_epi32(c01, x, w1);
                    x = _mm256_set1_epi32(load4(p1 + g * 4)); c10 = _mm256_dpbusd_avx_epi32(c10, x, w0); c11 = _mm256_dpbusd_avx_epi32(c11, x, w1);
                    x = _mm256_set1_epi32(load4(p2 + g * 4)); c20 = _mm256_dpbusd_avx_epi32(c20, x, w0); c21 = _mm256_dpbusd_avx_epi32(c21, x, w1);
                    x = _mm256_set1_epi32(load4(p3 + g * 4)); c30 = _mm256_dpbusd_avx_epi32(c30, x, w0); c31 = _mm256_dpbusd_avx_epi32(c31, x, w1);
                }
            }
            __m256i lo[4] = {c00, c10, c20, c30}, hi[4] = {c01, c11, c21, c31};
            int left = n - j < 16 ? n - j : 16;
            for (int t = 0; t < mr; t++) {
                size_t row = (size_t)(i0 + t);
                const uint8_t *res = rq->residual ? rq->residual + row * rq->ldr + j : NULL;
                store8(lo[t], j, left < 8 ? left : 8, rq, res, c + row * ldc + j);
                if (left > 8) store8(hi[t], j + 8, left - 8, rq, res ? res + 8 : NULL, c + row * ldc + j + 8);
            }
        }
    }
}

KILN_AVX2 void kiln_qu8s8_igemm_2x16c4__avx2(int m, int n, int kc, int taps, const uint8_t *const *rows,
                                             const int8_t *packed, uint8_t *c, size_t ldc, const kiln_requant *rq) {
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

KILN_AVX2 void kiln_qu8s8_dwconv3x3__avx2(const uint8_t *x, int h, int w, int c, int oy, int ow, int stride,
                                          int pad_top, int pad_left, uint8_t input_zero, const int8_t *weights,
                                          uint8_t *y, const kiln_requant *rq) {
    __m256i zero = _mm256_set1_epi32(input_zero);
    for (int ox = 0; ox < ow; ox++) {
        int ch = 0;
        for (; ch + 8 <= c; ch += 8) {
            __m256i acc = _mm256_setzero_si256();
            for (int i = 0; i < 3; i++) {
                int iy = oy * stride - pad_top + i;
                for (int j = 0; j < 3; j++) {
                    int ix = ox * stride - pad_left + j;
                    __m256i v = zero;
                    if (iy >= 0 && iy < h && ix >= 0 && ix < w) {
                        int64_t bytes;
                        memcpy(&bytes, x + ((size_t)iy * w + ix) * c + ch, 8);
                        v = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(bytes));
                    }
                    int64_t wb;
                    memcpy(&wb, weights + (i * 3 + j) * c + ch, 8);
                    acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(v, _mm256_cvtepi8_epi32(_mm_cvtsi64_si128(wb))));
                }
            }
            const uint8_t *res = rq->residual ? rq->residual + (size_t)ox * c + ch : NULL;
            store8(acc, ch, 8, rq, res, y + (size_t)ox * c + ch);
        }
        for (; ch < c; ch++) {
            int32_t acc = kiln_dwconv3x3_one(x, h, w, c, oy, ox, ch, stride, pad_top, pad_left, input_zero, weights, rq);
            uint8_t residual = rq->residual ? rq->residual[(size_t)ox * c + ch] : 0;
            y[(size_t)ox * c + ch] = kiln_requant_one(acc, ch, residual, rq);
        }
    }
}
#endif
