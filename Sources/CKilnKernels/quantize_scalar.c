// The portable input quantizer (float NCHW → u8 NHWC): the reference of the quantize_nchw family.
#pragma STDC FP_CONTRACT OFF
#include <math.h>
#include "kiln_kernels.h"

void kiln_qu8_quantize_nchw__scalar(const float *x, int c, int plane, float scale, int32_t zero_point, uint8_t *y) {
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
