// Weight packing and indirection buffers, shared by every variant.
#include <string.h>
#include "kiln_kernels.h"

static int round_up(int v, int m) { return (v + m - 1) / m * m; }

size_t kiln_qs8_packed_size(kiln_packing packing, int n, int k) {
    size_t bytes = (size_t)round_up(n, KILN_PANEL) * (size_t)round_up(k, KILN_KGROUP);
    return packing == KILN_PACKING_PAIRS16 ? 2 * bytes : bytes;
}

kiln_packing kiln_qu8s8_igemm_packing(int kernel_isa) {
    return kernel_isa == KILN_ISA_AVX2 || kernel_isa == KILN_ISA_AVX512BW ? KILN_PACKING_PAIRS16 : KILN_PACKING_C4;
}

void kiln_qs8_pack(kiln_packing packing, const int8_t *weights, int n, int k, int8_t *packed) {
    int k4 = round_up(k, KILN_KGROUP);
    int panels = round_up(n, KILN_PANEL) / KILN_PANEL;
    int16_t *pairs = (int16_t *)packed;
    for (int p = 0; p < panels; p++) {
        for (int col = 0; col < k4; col++) {
            for (int ch = 0; ch < KILN_PANEL; ch++) {
                int row = p * KILN_PANEL + ch;
                int8_t w = (row < n && col < k) ? weights[(size_t)row * k + col] : 0;
                size_t panel = (size_t)p * KILN_PANEL * k4;
                if (packing == KILN_PACKING_PAIRS16) {
                    pairs[panel + (size_t)(col / 2) * KILN_PANEL * 2 + ch * 2 + col % 2] = w;
                } else {
                    packed[panel + (size_t)(col / KILN_KGROUP) * KILN_PANEL * KILN_KGROUP + ch * KILN_KGROUP + col % KILN_KGROUP] = w;
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

/// memcpy for the short segments of im2col (a few bytes: a library call would cost more than the copy), reading and
/// writing only the n bytes given.
static inline void copy_short(uint8_t *destination, const uint8_t *source, size_t n) {
    if (n >= 8) {
        size_t i = 0;
        for (; i + 8 <= n; i += 8) memcpy(destination + i, source + i, 8);
        if (i < n) memcpy(destination + n - 8, source + n - 8, 8);  // overlapping tail
    } else if (n >= 4) {
        memcpy(destination, source, 4);
        memcpy(destination + n - 4, source + n - 4, 4);
    } else if (n > 0) {
        // Spelled out: a loop here would become a library call.
        destination[0] = source[0];
        if (n > 1) destination[1] = source[1];
        if (n > 2) destination[2] = source[2];
    }
}

/// memset for short runs (the padding of one tap or one kernel row).
static inline void fill_short(uint8_t *destination, uint8_t value, size_t n) {
    if (n >= 8) {
        uint64_t pattern = 0x0101010101010101ull * value;
        size_t i = 0;
        for (; i + 8 <= n; i += 8) memcpy(destination + i, &pattern, 8);
        if (i < n) memcpy(destination + n - 8, &pattern, 8);
    } else if (n >= 4) {
        uint32_t pattern = 0x01010101u * value;
        memcpy(destination, &pattern, 4);
        memcpy(destination + n - 4, &pattern, 4);
    } else if (n > 0) {
        destination[0] = value;
        if (n > 1) destination[1] = value;
        if (n > 2) destination[2] = value;
    }
}

/// Zeroes the 0–3 bytes that round an im2col row up to a whole 4-byte group.
static inline void zero_tail(uint8_t *row, int used, int k) {
    if (used < k) row[used] = 0;
    if (used + 1 < k) row[used + 1] = 0;
    if (used + 2 < k) row[used + 2] = 0;
}

void kiln_qu8_conv_im2col(const uint8_t *image, int h, int w, int c, int kh, int kw, int stride_h, int stride_w,
                          int pad_top, int pad_left, int dilation_h, int dilation_w, int ow, int first, int count,
                          uint8_t zero, int k, uint8_t *out) {
    int used = kh * kw * c;
    size_t segment = (size_t)kw * c;
    int oy = first / ow, ox = first % ow;
    for (int r = 0; r < count; r++, ox = ox + 1 == ow ? 0 : ox + 1, oy += ox == 0) {
        uint8_t *row = out + (size_t)r * k;
        int x0 = ox * stride_w - pad_left;
        int y0 = oy * stride_h - pad_top;
        if (dilation_w == 1 && x0 >= 0 && x0 + kw <= w && y0 >= 0 && y0 + (kh - 1) * dilation_h < h) {
            // The whole window is inside the image: one segment per kernel row.
            const uint8_t *source = image + ((size_t)y0 * w + x0) * c;
            size_t line = (size_t)dilation_h * w * c;
            for (int i = 0; i < kh; i++) copy_short(row + (size_t)i * segment, source + (size_t)i * line, segment);
            zero_tail(row, used, k);
            continue;
        }
        int whole = dilation_w == 1 && x0 >= 0 && x0 + kw <= w;
        for (int i = 0; i < kh; i++) {
            int iy = oy * stride_h - pad_top + i * dilation_h;
            uint8_t *dst = row + (size_t)i * segment;
            if (iy < 0 || iy >= h) {
                fill_short(dst, zero, segment);
            } else if (whole) {
                copy_short(dst, image + ((size_t)iy * w + x0) * c, segment);
            } else {
                for (int j = 0; j < kw; j++) {
                    int ix = x0 + j * dilation_w;
                    if (ix >= 0 && ix < w) {
                        copy_short(dst + (size_t)j * c, image + ((size_t)iy * w + ix) * c, (size_t)c);
                    } else {
                        fill_short(dst + (size_t)j * c, zero, (size_t)c);
                    }
                }
            }
        }
        zero_tail(row, used, k);
    }
}
