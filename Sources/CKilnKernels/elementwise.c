// Non-GEMM kernels on NHWC u8 tensors: max pooling and input quantization. Plain C (vectorized by the compiler
// for the baseline ISA); bit-exact with the reference kernels.
#include <math.h>
#include "kiln_kernels.h"

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

void kiln_qu8_quantize_nchw(const float *x, int c, int plane, float scale, int32_t zero_point, uint8_t *y) {
    for (int ch = 0; ch < c; ch++) {
        for (int p = 0; p < plane; p++) {
            float s = rintf(x[(size_t)ch * plane + p] / scale);
            int32_t level;
            if (!isfinite(s)) {
                level = s > 0 ? 255 : 0;
            } else {
                s = s > 1e6f ? 1e6f : (s < -1e6f ? -1e6f : s);
                level = (int32_t)s + zero_point;
                level = level < 0 ? 0 : (level > 255 ? 255 : level);
            }
            y[(size_t)p * c + ch] = (uint8_t)level;
        }
    }
}
