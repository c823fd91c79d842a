// Weight packing and indirection buffers, shared by every variant.
#include "kiln_kernels.h"

static int round_up(int v, int m) { return (v + m - 1) / m * m; }

size_t kiln_qs8_packed_size(int n, int k) {
    return (size_t)round_up(n, KILN_PANEL) * (size_t)round_up(k, KILN_KGROUP);
}

void kiln_qs8_pack(const int8_t *weights, int n, int k, int8_t *packed) {
    int k4 = round_up(k, KILN_KGROUP);
    int panels = round_up(n, KILN_PANEL) / KILN_PANEL;
    for (int p = 0; p < panels; p++) {
        int8_t *panel = packed + (size_t)p * KILN_PANEL * k4;
        for (int g = 0; g < k4 / KILN_KGROUP; g++) {
            for (int ch = 0; ch < KILN_PANEL; ch++) {
                for (int t = 0; t < KILN_KGROUP; t++) {
                    int row = p * KILN_PANEL + ch, col = g * KILN_KGROUP + t;
                    panel[(size_t)g * KILN_PANEL * KILN_KGROUP + ch * KILN_KGROUP + t] =
                        (row < n && col < k) ? weights[(size_t)row * k + col] : 0;
                }
            }
        }
    }
}


void kiln_qu8_conv_indirection(const uint8_t *image, int h, int w, int c, int kh, int kw, int stride_h, int stride_w,
                               int pad_top, int pad_left, int dilation_h, int dilation_w, int ow, int first, int count,
                               const uint8_t *zero, const uint8_t **rows) {
    int taps = kh * kw;
    for (int r = 0; r < count; r++) {
        int pixel = first + r, oy = pixel / ow, ox = pixel % ow;
        const uint8_t **out = rows + (size_t)r * taps;
        for (int i = 0; i < kh; i++) {
            int iy = oy * stride_h - pad_top + i * dilation_h;
            for (int j = 0; j < kw; j++) {
                int ix = ox * stride_w - pad_left + j * dilation_w;
                out[i * kw + j] = (iy >= 0 && iy < h && ix >= 0 && ix < w) ? image + ((size_t)iy * w + ix) * c : zero;
            }
        }
    }
}
