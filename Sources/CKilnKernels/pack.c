// Weight packing and NHWC im2col, shared by every variant.
#include <string.h>
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

/// Copies `c` bytes: whole 16-byte blocks with fixed-size copies the compiler inlines, then the tail.
static inline void copy_channels(uint8_t *dst, const uint8_t *src, int c) {
    int i = 0;
    for (; i + 16 <= c; i += 16) memcpy(dst + i, src + i, 16);
    for (; i < c; i++) dst[i] = src[i];
}

static inline void fill_channels(uint8_t *dst, uint8_t value, int c) {
    for (int i = 0; i < c; i++) dst[i] = value;
}

void kiln_qu8_im2col(const uint8_t *x, int h, int w, int c, int kh, int kw, int stride_h, int stride_w, int pad_top,
                     int pad_left, int dilation_h, int dilation_w, int ow, int first, int count, uint8_t zero,
                     uint8_t *rows, size_t row_bytes) {
    for (int r = 0; r < count; r++) {
        int pixel = first + r;
        int oy = pixel / ow, ox = pixel % ow;
        uint8_t *row = rows + (size_t)r * row_bytes;
        for (int i = 0; i < kh; i++) {
            int iy = oy * stride_h - pad_top + i * dilation_h;
            for (int j = 0; j < kw; j++) {
                int ix = ox * stride_w - pad_left + j * dilation_w;
                uint8_t *dst = row + ((size_t)i * kw + j) * c;
                if (iy >= 0 && iy < h && ix >= 0 && ix < w) {
                    copy_channels(dst, x + ((size_t)iy * w + ix) * c, c);
                } else {
                    fill_channels(dst, zero, c);
                }
            }
        }
        // Bytes past k meet zero weights; only the group of 4 that k ends in is read, so clear just those.
        size_t used = (size_t)kh * kw * c;
        for (size_t t = used; t < row_bytes && t < used + 4; t++) row[t] = 0;
    }
}
