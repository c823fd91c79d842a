// The requantization epilogue shared by every kernel variant (scalar form; SIMD forms do the same IEEE
// operations lane by lane). Must match KilnRuntime's Requantize exactly.
#ifndef KILN_REQUANT_H
#define KILN_REQUANT_H

#include <math.h>
#include "kiln_kernels.h"

static inline int32_t kiln_clamp_i32(int32_t v, int32_t lo, int32_t hi) { return v < lo ? lo : (v > hi ? hi : v); }

/// rint to nearest-even of x, limited to ±1e6 before conversion (as Requantize does).
static inline int32_t kiln_round_limited(float x) {
    float r = rintf(x);
    r = r > 1e6f ? 1e6f : r;
    r = r < -1e6f ? -1e6f : r;
    return (int32_t)r;
}

/// The u8 output for an accumulator (bias included) of output column j, with the optional fused residual add.
static inline uint8_t kiln_requant_one(int32_t acc, int j, uint8_t residual, const kiln_requant *rq) {
    int32_t q = kiln_clamp_i32(kiln_round_limited((float)acc * rq->multiplier[j]) + rq->zero_point, rq->low, rq->high);
    if (!rq->residual) return (uint8_t)q;
    float real = (float)(q - rq->zero_point) * rq->scale + (float)((int32_t)residual - rq->residual_zero_point) * rq->residual_scale;
    float scaled = rintf(real / rq->output_scale);
    int32_t level;
    if (!isfinite(scaled)) {
        level = scaled > 0 ? 255 : 0;
    } else {
        level = kiln_clamp_i32(kiln_round_limited(scaled) + rq->output_zero_point, 0, 255);
    }
    return (uint8_t)kiln_clamp_i32(level, rq->add_low, rq->add_high);
}

/// One output value of a 3×3 depthwise convolution (bias included), channel `ch` of pixel (oy, ox): the scalar
/// definition every depthwise variant follows.
static inline int32_t kiln_dwconv3x3_one(const uint8_t *x, int h, int w, int c, int oy, int ox, int ch, int stride,
                                         int pad_top, int pad_left, uint8_t input_zero, const int8_t *weights,
                                         const kiln_requant *rq) {
    int32_t acc = rq->bias[ch];
    for (int i = 0; i < 3; i++) {
        int iy = oy * stride - pad_top + i;
        for (int j = 0; j < 3; j++) {
            int ix = ox * stride - pad_left + j;
            int32_t v = (iy >= 0 && iy < h && ix >= 0 && ix < w) ? x[((size_t)iy * w + ix) * c + ch] : input_zero;
            acc += v * (int32_t)weights[(i * 3 + j) * c + ch];
        }
    }
    return acc;
}

#endif
