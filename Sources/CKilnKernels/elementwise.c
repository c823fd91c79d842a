// Elementwise int8 ops on NHWC u8 tensors (portable C).
#pragma STDC FP_CONTRACT OFF
#include "kiln_kernels.h"
#include <string.h>
#include "requant.h"

void kiln_qu8_mul(const uint8_t *a, const uint8_t *b, int pixels, int c, int broadcast, float multiplier, int32_t a_zero_point,
                  int32_t b_zero_point, int32_t output_zero_point, int32_t max_level, uint8_t *y) {
    for (int p = 0; p < pixels; p++) {
        const uint8_t *row = a + (size_t)p * c, *gate = broadcast ? b : b + (size_t)p * c;
        uint8_t *out = y + (size_t)p * c;
        for (int ch = 0; ch < c; ch++) {
            int32_t product = ((int32_t)row[ch] - a_zero_point) * ((int32_t)gate[ch] - b_zero_point);
            out[ch] = (uint8_t)kiln_clamp_i32(kiln_round_limited((float)product * multiplier) + output_zero_point, 0, max_level);
        }
    }
}

void kiln_qu8_copy_channels(const uint8_t *x, int ldx, int pixels, int cx, const uint8_t *table, uint8_t *y, int cy) {
    for (int p = 0; p < pixels; p++) {
        const uint8_t *in = x + (size_t)p * ldx;
        uint8_t *out = y + (size_t)p * cy;
        if (table) {
            for (int ch = 0; ch < cx; ch++) out[ch] = table[in[ch]];
        } else {
            for (int ch = 0; ch < cx; ch++) out[ch] = in[ch];
        }
    }
}

void kiln_qu8_permute_channels(const uint8_t *x, int pixels, int c, const int32_t *permutation, uint8_t *y) {
    for (int p = 0; p < pixels; p++) {
        const uint8_t *in = x + (size_t)p * c;
        uint8_t *out = y + (size_t)p * c;
        for (int ch = 0; ch < c; ch++) out[ch] = in[permutation[ch]];
    }
}

void kiln_qu8_upsample_nearest(const uint8_t *x, int h, int w, int c, int scale_h, int scale_w, int oy, uint8_t *y) {
    const uint8_t *row = x + (size_t)(oy / scale_h) * w * c;
    for (int ix = 0; ix < w; ix++) {
        for (int k = 0; k < scale_w; k++) memcpy(y + ((size_t)ix * scale_w + k) * c, row + (size_t)ix * c, (size_t)c);
    }
    (void)h;
}

void kiln_qu8_insert_zeros(const uint8_t *x, int w, int c, int stride_h, int stride_w, uint8_t zero, int oy, int ow, uint8_t *y) {
    memset(y, zero, (size_t)ow * c);
    if (oy % stride_h != 0) return;
    const uint8_t *row = x + (size_t)(oy / stride_h) * w * c;
    for (int ix = 0; ix < w; ix++) memcpy(y + (size_t)ix * stride_w * c, row + (size_t)ix * c, (size_t)c);
}

void kiln_qu8_resize_linear_row(const uint8_t *x, int w, int c, int y0, int y1, float fy, const int32_t *x0, const int32_t *x1,
                                const float *fx, int ow, int32_t max_level, uint8_t *y) {
    const uint8_t *top = x + (size_t)y0 * w * c, *bottom = x + (size_t)y1 * w * c;
    for (int ox = 0; ox < ow; ox++) {
        const uint8_t *a = top + (size_t)x0[ox] * c, *b = top + (size_t)x1[ox] * c;
        const uint8_t *d = bottom + (size_t)x0[ox] * c, *e = bottom + (size_t)x1[ox] * c;
        const float f = fx[ox];
        uint8_t *out = y + (size_t)ox * c;
        for (int ch = 0; ch < c; ch++) {
            float upper = (1 - f) * (float)a[ch] + f * (float)b[ch];
            float lower = (1 - f) * (float)d[ch] + f * (float)e[ch];
            int32_t level = kiln_round_limited((1 - fy) * upper + fy * lower);
            out[ch] = (uint8_t)kiln_clamp_i32(level, 0, max_level);
        }
    }
}

void kiln_qu8_channel_norm(const uint8_t *x, int pixels, int c, float input_scale, int32_t input_zero_point, float epsilon,
                           const float *scale, const float *shift, float output_scale, int32_t output_zero_point,
                           int32_t max_level, uint8_t *y) {
    for (int p = 0; p < pixels; p++) {
        const uint8_t *in = x + (size_t)p * c;
        uint8_t *out = y + (size_t)p * c;
        // Exact integer moments of the levels (any summation order gives the same sums, so they vectorize).
        int32_t s1 = 0;
        int64_t s2 = 0;
        for (int ch = 0; ch < c; ch++) {
            int32_t d = (int32_t)in[ch] - input_zero_point;
            s1 += d;
            s2 += d * d;
        }
        double mean = (double)s1 / c;
        double variance = ((double)s2 - mean * (double)s1) / c;
        if (variance < 0) variance = 0;
        float deviation = sqrtf((float)(variance * (double)input_scale * (double)input_scale) + epsilon);
        float factor = input_scale / deviation, centre = (float)mean;
        // Branch-free so it vectorizes: limiting to ±1e6 first (NaN to −1e6, infinities to the limits) gives what
        // rint, the ±1e6 limit and the clamp give (as Requantize.quantize), and below 2^22 adding and subtracting
        // 1.5 · 2^23 rounds to nearest even exactly as rintf does.
        for (int ch = 0; ch < c; ch++) {
            float v = ((float)((int32_t)in[ch] - input_zero_point) - centre) * factor * scale[ch] + shift[ch];
            float q = v / output_scale;
            q = q >= -1e6f ? q : -1e6f;
            q = q <= 1e6f ? q : 1e6f;
            q = (q + 12582912.0f) - 12582912.0f;
            int32_t level = (int32_t)q + output_zero_point;
            level = level < 0 ? 0 : level;
            out[ch] = (uint8_t)(level > max_level ? max_level : level);
        }
    }
}
