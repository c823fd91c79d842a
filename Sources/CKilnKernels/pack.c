// Weight packing and indirection buffers, shared by every variant.
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


void kiln_qu8_conv_indirection(const uint8_t *image, int h, int w, int c, int kh, int kw, int stride_h, int stride_w,
                               int pad_top, int pad_left, int dilation_h, int dilation_w, int ow, int first, int count,
                               const uint8_t *zero, const uint8_t **rows) {
    int taps = kh * kw;
    int oy = first / ow, ox = first % ow;
    // Offsets of the taps from the window's corner (windows of up to 64 taps; larger ones take the slow path).
    enum { most = 64 };
    size_t offset[most];
    int fast = taps <= most;
    for (int i = 0; fast && i < kh; i++) {
        for (int j = 0; j < kw; j++) offset[i * kw + j] = ((size_t)i * dilation_h * w + (size_t)j * dilation_w) * c;
    }
    for (int r = 0; r < count; r++) {
        const uint8_t **out = rows + (size_t)r * taps;
        int y0 = oy * stride_h - pad_top, x0 = ox * stride_w - pad_left;
        if (fast && y0 >= 0 && y0 + (kh - 1) * dilation_h < h && x0 >= 0 && x0 + (kw - 1) * dilation_w < w) {
            // The whole window is inside the image.
            const uint8_t *corner = image + ((size_t)y0 * w + x0) * c;
            for (int t = 0; t < taps; t++) out[t] = corner + offset[t];
        } else {
            for (int i = 0; i < kh; i++) {
                int iy = y0 + i * dilation_h;
                for (int j = 0; j < kw; j++) {
                    int ix = x0 + j * dilation_w;
                    out[i * kw + j] = (iy >= 0 && iy < h && ix >= 0 && ix < w) ? image + ((size_t)iy * w + ix) * c : zero;
                }
            }
        }
        if (++ox == ow) {
            ox = 0;
            oy++;
        }
    }
}

void kiln_qu8_conv_im2col(const uint8_t *image, int h, int w, int c, int kh, int kw, int stride_h, int stride_w,
                          int pad_top, int pad_left, int dilation_h, int dilation_w, int ow, int first, int count,
                          uint8_t zero, int k, uint8_t *out) {
    int used = kh * kw * c;
    size_t segment = (size_t)kw * c;
    for (int r = 0; r < count; r++) {
        int pixel = first + r, oy = pixel / ow, ox = pixel % ow;
        uint8_t *row = out + (size_t)r * k;
        int x0 = ox * stride_w - pad_left;
        int whole = dilation_w == 1 && x0 >= 0 && x0 + kw <= w;
        for (int i = 0; i < kh; i++) {
            int iy = oy * stride_h - pad_top + i * dilation_h;
            uint8_t *dst = row + (size_t)i * segment;
            if (iy < 0 || iy >= h) {
                memset(dst, zero, segment);
            } else if (whole) {
                memcpy(dst, image + ((size_t)iy * w + x0) * c, segment);
            } else {
                for (int j = 0; j < kw; j++) {
                    int ix = x0 + j * dilation_w;
                    if (ix >= 0 && ix < w) {
                        memcpy(dst + (size_t)j * c, image + ((size_t)iy * w + ix) * c, (size_t)c);
                    } else {
                        memset(dst + (size_t)j * c, zero, (size_t)c);
                    }
                }
            }
        }
        memset(row + used, 0, (size_t)(k - used));
    }
}
