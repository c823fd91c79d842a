// Shared by the SIMD 3×3 depthwise kernels: the input rows of an output row, and the walk along it that carries
// the window's input columns from one output pixel to the next.
#ifndef KILN_DWCONV3X3_H
#define KILN_DWCONV3X3_H

#include <stddef.h>
#include <stdint.h>

/// The three input rows under output row `oy`: inside[i] says whether window row i lies in the image, line[i] where
/// it starts (the image's start, never read, when it does not).
static inline void kiln_dw3x3_rows(const uint8_t *x, int h, int w, int c, int oy, int stride, int pad_top,
                                   int inside[3], const uint8_t *line[3]) {
    const int iy0 = oy * stride - pad_top;
    for (int i = 0; i < 3; i++) {
        inside[i] = iy0 + i >= 0 && iy0 + i < h;
        line[i] = inside[i] ? x + (size_t)(iy0 + i) * w * c : x;
    }
}

/// Brings the window's input columns a, b, cc (arrays of 4 vectors in the caller) to output pixel `ox`: carried over
/// from the previous pixel where consecutive windows overlap — one new column at stride 1, two at stride 2 — and
/// otherwise all three loaded by COLUMN(ix, out).
#define KILN_DW3X3_ADVANCE(ox, stride, pad_left, COLUMN) { \
        const int x0_ = (ox) * (stride) - (pad_left); \
        if ((ox) > 0 && (stride) == 1) { \
            for (int q_ = 0; q_ < 4; q_++) { a[q_] = b[q_]; b[q_] = cc[q_]; } \
            COLUMN(x0_ + 2, cc) \
        } else if ((ox) > 0 && (stride) == 2) { \
            for (int q_ = 0; q_ < 4; q_++) a[q_] = cc[q_]; \
            COLUMN(x0_ + 1, b) \
            COLUMN(x0_ + 2, cc) \
        } else { \
            COLUMN(x0_, a) \
            COLUMN(x0_ + 1, b) \
            COLUMN(x0_ + 2, cc) \
        } }

#endif
