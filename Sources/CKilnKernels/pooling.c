// Max pooling and global average pooling on NHWC u8 (portable C).
#pragma STDC FP_CONTRACT OFF
#include "kiln_kernels.h"
#include "requant.h"

void kiln_qu8_maxpool(const uint8_t *x, int h, int w, int c, int kh, int kw, int stride_h, int stride_w, int pad_top,
                      int pad_left, int oy, int ow, uint8_t *y) {
    int y0 = oy * stride_h - pad_top;
    int rows_begin = y0 < 0 ? 0 : y0, rows_end = y0 + kh < h ? y0 + kh : h;
    for (int ox = 0; ox < ow; ox++) {
        int x0 = ox * stride_w - pad_left;
        int columns_begin = x0 < 0 ? 0 : x0, columns_end = x0 + kw < w ? x0 + kw : w;
        uint8_t *out = y + (size_t)ox * c;
        for (int ch = 0; ch < c; ch++) out[ch] = 0;
        for (int iy = rows_begin; iy < rows_end; iy++) {
            for (int ix = columns_begin; ix < columns_end; ix++) {
                const uint8_t *in = x + ((size_t)iy * w + ix) * c;
                for (int ch = 0; ch < c; ch++) out[ch] = in[ch] > out[ch] ? in[ch] : out[ch];
            }
        }
    }
}

void kiln_qu8_global_average_pool(const uint8_t *x, int pixels, int c, float input_scale, int32_t input_zero_point,
                                  float output_scale, int32_t output_zero_point, int32_t max_level, uint8_t *y) {
    enum { block = 256 };
    int32_t sum[block];
    const float multiplier = input_scale / (output_scale * (float)pixels);
    for (int c0 = 0; c0 < c; c0 += block) {
        int width = c - c0 < block ? c - c0 : block;
        for (int k = 0; k < width; k++) sum[k] = 0;
        for (int p = 0; p < pixels; p++) {
            const uint8_t *row = x + (size_t)p * c + c0;
            for (int k = 0; k < width; k++) sum[k] += row[k];
        }
        for (int k = 0; k < width; k++) {
            float scaled = rintf((float)(sum[k] - pixels * input_zero_point) * multiplier);
            scaled = scaled > 1e6f ? 1e6f : (scaled < -1e6f ? -1e6f : scaled);
            int32_t level = (int32_t)scaled + output_zero_point;
            level = level < 0 ? 0 : (level > max_level ? max_level : level);
            y[c0 + k] = (uint8_t)level;
        }
    }
}
