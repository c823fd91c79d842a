// The portable depthwise convolution of any kernel size, stride, dilation and padding: the reference of the
// qu8s8_dwconv family (3×3 with equal strides has its own faster family).
#pragma STDC FP_CONTRACT OFF
#include "kiln_kernels.h"
#include "requant.h"

void kiln_qu8s8_dwconv__scalar(const uint8_t *x, const kiln_dwconv_geometry *g, int oy, uint8_t input_zero,
                               const int8_t *weights, uint8_t *y, const kiln_requant *rq) {
    enum { block = 64 };
    int32_t acc[block];
    const int c = g->c;
    for (int ox = 0; ox < g->ow; ox++) {
        for (int c0 = 0; c0 < c; c0 += block) {
            const int width = c - c0 < block ? c - c0 : block;
            for (int k = 0; k < width; k++) acc[k] = rq->bias[c0 + k];
            for (int i = 0; i < g->kh; i++) {
                const int iy = oy * g->stride_h - g->pad_top + i * g->dilation_h;
                for (int j = 0; j < g->kw; j++) {
                    const int ix = ox * g->stride_w - g->pad_left + j * g->dilation_w;
                    const int8_t *tap = weights + (size_t)(i * g->kw + j) * c + c0;
                    if (iy >= 0 && iy < g->h && ix >= 0 && ix < g->w) {
                        const uint8_t *in = x + ((size_t)iy * g->w + ix) * c + c0;
                        for (int k = 0; k < width; k++) acc[k] += (int32_t)in[k] * (int32_t)tap[k];
                    } else {
                        for (int k = 0; k < width; k++) acc[k] += (int32_t)input_zero * (int32_t)tap[k];
                    }
                }
            }
            uint8_t *out = y + (size_t)ox * c + c0;
            const uint8_t *residual = rq->residual ? rq->residual + (size_t)ox * c + c0 : 0;
            for (int k = 0; k < width; k++) out[k] = kiln_requant_one(acc[k], c0 + k, residual ? residual[k] : 0, rq);
        }
    }
}
