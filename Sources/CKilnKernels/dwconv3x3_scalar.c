// The portable 3×3 depthwise convolution: the reference every other dwconv3x3 kernel is tested against.
#pragma STDC FP_CONTRACT OFF
#include "kiln_kernels.h"
#include "requant.h"

void kiln_qu8s8_dwconv3x3__scalar(const uint8_t *x, int h, int w, int c, int oy, int ow, int stride, int pad_top,
                                  int pad_left, uint8_t input_zero, const int8_t *weights, uint8_t *y,
                                  const kiln_requant *rq) {
    for (int ox = 0; ox < ow; ox++) {
        for (int ch = 0; ch < c; ch++) {
            int32_t acc = kiln_dwconv3x3_one(x, h, w, c, oy, ox, ch, stride, pad_top, pad_left, input_zero, weights, rq);
            uint8_t residual = rq->residual ? rq->residual[(size_t)ox * c + ch] : 0;
            y[(size_t)ox * c + ch] = kiln_requant_one(acc, ch, residual, rq);
        }
    }
}
