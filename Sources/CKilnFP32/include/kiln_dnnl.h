// fp32 convolutions on oneDNN (Debian libdnnl-dev) for KilnTensor: forward, backward-data and backward-weights of
// one convolution shape in plain NCHW / OIHW buffers. oneDNN picks its own blocked layouts; the reorders to and
// from them run inside each call.
#ifndef KILN_DNNL_H
#define KILN_DNNL_H

#include <stddef.h>
#include <stdint.h>

/// One convolution: input [n, c, h, w], weight [m, c/group, kh, kw], output [n, m, oh, ow].
typedef struct {
    int64_t n, c, h, w;
    int64_t m, kh, kw, group;
    int64_t oh, ow;
    int64_t stride_h, stride_w, dilation_h, dilation_w;
    int64_t pad_top, pad_left, pad_bottom, pad_right;
    int has_bias;
} kiln_dnnl_conv_shape;

/// The primitives of one shape (backward ones made on first use); safe to run from several threads at once.
typedef struct kiln_dnnl_conv kiln_dnnl_conv;

/// Makes the forward primitive of `shape` for `threads` threads; NULL when oneDNN cannot run it (`error` then says
/// why).
kiln_dnnl_conv *kiln_dnnl_conv_create(const kiln_dnnl_conv_shape *shape, int threads, char *error, size_t error_size);

/// Frees the primitives.
void kiln_dnnl_conv_destroy(kiln_dnnl_conv *conv);

/// y = conv(x, w) + bias on `threads` threads; 0 on success. `weights_prepared`: w is already in the direction's
/// own layout (kiln_dnnl_conv_prepare_weights), not the plain one.
int kiln_dnnl_conv_forward(kiln_dnnl_conv *conv, int threads, const float *x, const float *w, const float *bias,
                           float *y, int weights_prepared);

/// dx = the gradient of the input for output gradient dy (overwrites dx); 0 on success. `weights_prepared` as for
/// the forward direction.
int kiln_dnnl_conv_backward_data(kiln_dnnl_conv *conv, int threads, const float *w, const float *dy, float *dx,
                                 int weights_prepared);

/// dw = the gradient of the weight for input x and output gradient dy (overwrites dw); 0 on success.
int kiln_dnnl_conv_backward_weights(kiln_dnnl_conv *conv, int threads, const float *x, const float *dy, float *dw);

/// Bytes of the weights in the layout direction `which` (0 forward, 1 backward-data) runs them in, a multiple of
/// 64; 0 when that is the plain layout (or the direction cannot run), so there is nothing to prepare.
size_t kiln_dnnl_conv_prepared_weights_size(kiln_dnnl_conv *conv, int which);

/// Reorders plain weights w into `prepared` (kiln_dnnl_conv_prepared_weights_size bytes, 64-byte aligned) for
/// direction `which`, so that weights used again and again (a frozen teacher's) are reordered once; 0 on success.
int kiln_dnnl_conv_prepare_weights(kiln_dnnl_conv *conv, int which, int threads, const float *w, void *prepared);

/// oneDNN's name of the implementation chosen for a direction (0 forward, 1 backward-data, 2 backward-weights),
/// or "none" before that direction has run.
const char *kiln_dnnl_conv_implementation(kiln_dnnl_conv *conv, int direction);

#endif
