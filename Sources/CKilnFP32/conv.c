// fp32 convolutions on oneDNN: see include/kiln_dnnl.h.
#include "kiln_dnnl.h"

#include <oneapi/dnnl/dnnl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// libgomp's (oneDNN's Debian build threads with OpenMP); the count applies to the calling thread's next region.
extern void omp_set_num_threads(int count);

enum { FORWARD, BACKWARD_DATA, BACKWARD_WEIGHTS, DIRECTIONS };
enum { STATE_NEW, STATE_READY, STATE_FAILED };

static dnnl_engine_t engine;
static dnnl_status_t engine_status = dnnl_runtime_error;
static pthread_once_t engine_once = PTHREAD_ONCE_INIT;
/// Serializes making and freeing primitives (rare; executions run concurrently, each with its own scratchpad).
static pthread_mutex_t onednn_lock = PTHREAD_MUTEX_INITIALIZER;
static void make_engine(void) { engine_status = dnnl_engine_create(&engine, dnnl_cpu, 0); }

/// One operand of a direction: its execution argument, plain and chosen layouts, the reorder between them (NULL
/// when they are the same) and whether the primitive writes it.
typedef struct {
    int argument;
    dnnl_memory_desc_t plain, chosen;
    dnnl_primitive_t reorder;
    dnnl_memory_desc_t reorder_scratch;  // the reorder's scratchpad (zero size: none)
    int written;
} operand;

/// One direction's primitive with its three tensor operands.
typedef struct {
    int state;
    dnnl_primitive_desc_t descriptor;
    dnnl_primitive_t primitive;
    dnnl_memory_desc_t scratch;  // the primitive's scratchpad (zero size: none)
    operand operands[3];
} direction;

struct kiln_dnnl_conv {
    kiln_dnnl_conv_shape shape;
    dnnl_memory_desc_t src, weights, dst, bias;          // plain layouts
    dnnl_memory_desc_t src_any, weights_any, dst_any;    // layouts left to oneDNN
    dnnl_dims_t strides, dilations, pad_low, pad_high;
    direction directions[DIRECTIONS];
    pthread_mutex_t lock;
};

/// Primitive attributes asking for a scratchpad passed at each execution. oneDNN's own ("library") scratchpad is
/// thread-local to the thread that made the primitive and freed when that thread exits, while the cached primitive
/// goes on running on other threads: with threads coming and going (the test suite's) that corrupted the heap.
static dnnl_primitive_attr_t user_scratchpad(void) {
    dnnl_primitive_attr_t attributes = NULL;
    if (dnnl_primitive_attr_create(&attributes) != dnnl_success) return NULL;
    if (dnnl_primitive_attr_set_scratchpad_mode(attributes, dnnl_scratchpad_mode_user) != dnnl_success) {
        dnnl_primitive_attr_destroy(attributes);
        return NULL;
    }
    return attributes;
}

/// The scratchpad layout a primitive descriptor asks for (zero size when none).
static dnnl_memory_desc_t scratchpad_of(const_dnnl_primitive_desc_t descriptor) {
    const dnnl_memory_desc_t *md = dnnl_primitive_desc_query_md(descriptor, dnnl_query_scratchpad_md, 0);
    dnnl_memory_desc_t none;
    memset(&none, 0, sizeof none);
    return md ? *md : none;
}

static dnnl_status_t make_reorder(const dnnl_memory_desc_t *from, const dnnl_memory_desc_t *to,
                                  dnnl_primitive_t *reorder, dnnl_memory_desc_t *scratch) {
    *reorder = NULL;
    memset(scratch, 0, sizeof *scratch);
    if (dnnl_memory_desc_equal(from, to)) return dnnl_success;
    dnnl_primitive_attr_t attributes = user_scratchpad();
    if (!attributes) return dnnl_out_of_memory;
    dnnl_primitive_desc_t descriptor;
    dnnl_status_t status = dnnl_reorder_primitive_desc_create(&descriptor, from, engine, to, engine, attributes);
    dnnl_primitive_attr_destroy(attributes);
    if (status != dnnl_success) return status;
    *scratch = scratchpad_of(descriptor);
    status = dnnl_primitive_create(reorder, descriptor);
    dnnl_primitive_desc_destroy(descriptor);
    return status;
}

/// Bytes of a buffer for layout `md`, rounded up to whole 64-byte lines (aligned_alloc wants a multiple).
static size_t padded_size(const dnnl_memory_desc_t *md) { return (dnnl_memory_desc_get_size(md) + 63) / 64 * 64; }

/// Executes `primitive` with `count` arguments (at most 7) and, when `scratch` has a size, a scratchpad of that
/// layout made for this call; waits for it to finish. Nonzero on failure.
static int run(dnnl_primitive_t primitive, dnnl_stream_t stream, int count, const dnnl_exec_arg_t *arguments,
               const dnnl_memory_desc_t *scratch) {
    dnnl_exec_arg_t all[8];
    memcpy(all, arguments, (size_t)count * sizeof *all);
    size_t size = padded_size(scratch);
    void *buffer = NULL;
    dnnl_memory_t memory = NULL;
    if (size) {
        buffer = aligned_alloc(64, size);
        if (!buffer || dnnl_memory_create(&memory, scratch, engine, buffer) != dnnl_success) {
            free(buffer);
            return 1;
        }
        all[count++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, memory};
    }
    int status = dnnl_primitive_execute(primitive, stream, count, all) != dnnl_success;
    status |= dnnl_stream_wait(stream) != dnnl_success;
    if (memory) dnnl_memory_destroy(memory);
    free(buffer);
    return status;
}

/// Fills one operand from the layout the primitive chose for `query`.
static dnnl_status_t make_operand(direction *d, int slot, int argument, const dnnl_memory_desc_t *plain,
                                  dnnl_query_t query, int written) {
    operand *o = &d->operands[slot];
    o->argument = argument;
    o->plain = *plain;
    o->chosen = *dnnl_primitive_desc_query_md(d->descriptor, query, 0);
    o->written = written;
    return written ? make_reorder(&o->chosen, &o->plain, &o->reorder, &o->reorder_scratch)
                   : make_reorder(&o->plain, &o->chosen, &o->reorder, &o->reorder_scratch);
}

static void release(direction *d) {
    for (int i = 0; i < 3; i++)
        if (d->operands[i].reorder) dnnl_primitive_destroy(d->operands[i].reorder);
    if (d->primitive) dnnl_primitive_destroy(d->primitive);
    if (d->descriptor) dnnl_primitive_desc_destroy(d->descriptor);
    memset(d, 0, sizeof *d);
}

/// The primitive descriptor of direction `which` with `src` and `dst` as the activations' layouts (the forward
/// one is the hint of both backward ones); NULL in `made` on failure.
static dnnl_status_t describe(kiln_dnnl_conv *conv, int which, const dnnl_memory_desc_t *src,
                              const dnnl_memory_desc_t *dst, dnnl_primitive_desc_t *made) {
    *made = NULL;
    dnnl_convolution_desc_t description;
    dnnl_status_t status;
    const dnnl_alg_kind_t algorithm = dnnl_convolution_direct;
    switch (which) {
    case FORWARD:
        status = dnnl_dilated_convolution_forward_desc_init(
            &description, dnnl_forward_training, algorithm, src, &conv->weights_any,
            conv->shape.has_bias ? &conv->bias : NULL, dst, conv->strides, conv->dilations, conv->pad_low,
            conv->pad_high);
        break;
    case BACKWARD_DATA:
        status = dnnl_dilated_convolution_backward_data_desc_init(
            &description, algorithm, src, &conv->weights_any, dst, conv->strides, conv->dilations, conv->pad_low,
            conv->pad_high);
        break;
    default:
        status = dnnl_dilated_convolution_backward_weights_desc_init(
            &description, algorithm, src, &conv->weights_any, NULL, dst, conv->strides, conv->dilations,
            conv->pad_low, conv->pad_high);
        break;
    }
    if (status != dnnl_success) return status;
    const_dnnl_primitive_desc_t hint = which == FORWARD ? NULL : conv->directions[FORWARD].descriptor;
    dnnl_primitive_attr_t attributes = user_scratchpad();
    if (!attributes) return dnnl_out_of_memory;
    status = dnnl_primitive_desc_create(made, &description, attributes, engine, hint);
    dnnl_primitive_attr_destroy(attributes);
    if (status != dnnl_success) *made = NULL;
    return status;
}

/// Whether a layout pads its channels (dimension 1) to at least twice their count: oneDNN's blocked layouts round
/// channels up to the vector width, so a 3-channel image gradient in 16-channel blocks is mostly zeros.
static int mostly_padding(const dnnl_memory_desc_t *md) {
    return md && md->ndims > 1 && md->padded_dims[1] >= 2 * md->dims[1];
}

/// Whether oneDNN fell back to its reference (unoptimized) implementation.
static int is_reference(const_dnnl_primitive_desc_t descriptor) {
    const char *name = "";
    dnnl_primitive_desc_query(descriptor, dnnl_query_impl_info_str, 0, &name);
    return strncmp(name, "ref", 3) == 0;
}

/// Creates the primitive of direction `which`. The activations' layouts are left to oneDNN, except that an
/// ungrouped backward-data whose input gradient oneDNN would pad to twice its channels or more (an RGB or gray stem)
/// runs on plain layouts when oneDNN has a fast kernel for them (its im2col GEMM: ResNet-18's 7×7 stem at batch 8,
/// 2 threads, 25–31 → 9.5 ms on AVX-512, and no reorders around it; a gray 28×28 stem 1.4 → 0.4 ms, AVX2 too).
static dnnl_status_t build(kiln_dnnl_conv *conv, int which) {
    direction *d = &conv->directions[which];
    dnnl_status_t status = describe(conv, which, &conv->src_any, &conv->dst_any, &d->descriptor);
    if (status != dnnl_success) return status;
    if (which == BACKWARD_DATA && conv->shape.group == 1 &&
        mostly_padding(dnnl_primitive_desc_query_md(d->descriptor, dnnl_query_diff_src_md, 0))) {
        dnnl_primitive_desc_t plain;
        if (describe(conv, which, &conv->src, &conv->dst, &plain) == dnnl_success) {
            if (is_reference(plain)) {
                dnnl_primitive_desc_destroy(plain);
            } else {
                dnnl_primitive_desc_destroy(d->descriptor);
                d->descriptor = plain;
            }
        }
    }
    d->scratch = scratchpad_of(d->descriptor);
    status = dnnl_primitive_create(&d->primitive, d->descriptor);
    if (status != dnnl_success) { d->primitive = NULL; return status; }
    switch (which) {
    case FORWARD:
        if ((status = make_operand(d, 0, DNNL_ARG_SRC, &conv->src, dnnl_query_src_md, 0))) return status;
        if ((status = make_operand(d, 1, DNNL_ARG_WEIGHTS, &conv->weights, dnnl_query_weights_md, 0))) return status;
        return make_operand(d, 2, DNNL_ARG_DST, &conv->dst, dnnl_query_dst_md, 1);
    case BACKWARD_DATA:
        if ((status = make_operand(d, 0, DNNL_ARG_WEIGHTS, &conv->weights, dnnl_query_weights_md, 0))) return status;
        if ((status = make_operand(d, 1, DNNL_ARG_DIFF_DST, &conv->dst, dnnl_query_diff_dst_md, 0))) return status;
        return make_operand(d, 2, DNNL_ARG_DIFF_SRC, &conv->src, dnnl_query_diff_src_md, 1);
    default:
        if ((status = make_operand(d, 0, DNNL_ARG_SRC, &conv->src, dnnl_query_src_md, 0))) return status;
        if ((status = make_operand(d, 1, DNNL_ARG_DIFF_DST, &conv->dst, dnnl_query_diff_dst_md, 0))) return status;
        return make_operand(d, 2, DNNL_ARG_DIFF_WEIGHTS, &conv->weights, dnnl_query_diff_weights_md, 1);
    }
}

/// The direction's primitive, built on first use; NULL if oneDNN cannot run it.
static direction *ready(kiln_dnnl_conv *conv, int which) {
    direction *d = &conv->directions[which];
    pthread_mutex_lock(&conv->lock);
    if (d->state == STATE_NEW) {
        pthread_mutex_lock(&onednn_lock);
        if (build(conv, which) == dnnl_success) {
            d->state = STATE_READY;
        } else {
            release(d);
            d->state = STATE_FAILED;
        }
        pthread_mutex_unlock(&onednn_lock);
    }
    pthread_mutex_unlock(&conv->lock);
    return d->state == STATE_READY ? d : NULL;
}

kiln_dnnl_conv *kiln_dnnl_conv_create(const kiln_dnnl_conv_shape *s, int threads, char *error, size_t error_size) {
    omp_set_num_threads(threads > 0 ? threads : 1);  // oneDNN sizes what it makes by the calling thread's count
    pthread_once(&engine_once, make_engine);
    if (engine_status != dnnl_success) {
        snprintf(error, error_size, "oneDNN has no CPU engine (status %d)", (int)engine_status);
        return NULL;
    }
    if (s->group < 1 || s->c % s->group || s->m % s->group) {
        snprintf(error, error_size, "channels %lld → %lld do not split into %lld groups", (long long)s->c,
                 (long long)s->m, (long long)s->group);
        return NULL;
    }
    kiln_dnnl_conv *conv = calloc(1, sizeof *conv);
    if (!conv) { snprintf(error, error_size, "out of memory"); return NULL; }
    conv->shape = *s;
    pthread_mutex_init(&conv->lock, NULL);
    dnnl_dims_t src = {s->n, s->c, s->h, s->w}, dst = {s->n, s->m, s->oh, s->ow}, bias = {s->m};
    dnnl_dims_t weights = {s->m, s->c, s->kh, s->kw};
    dnnl_dims_t grouped = {s->group, s->m / s->group, s->c / s->group, s->kh, s->kw};
    int wdims = s->group > 1 ? 5 : 4;
    dnnl_format_tag_t wtag = s->group > 1 ? dnnl_goihw : dnnl_oihw;
    const int64_t *wshape = s->group > 1 ? grouped : weights;
    dnnl_status_t status = dnnl_success;
    status |= dnnl_memory_desc_init_by_tag(&conv->src, 4, src, dnnl_f32, dnnl_nchw);
    status |= dnnl_memory_desc_init_by_tag(&conv->dst, 4, dst, dnnl_f32, dnnl_nchw);
    status |= dnnl_memory_desc_init_by_tag(&conv->weights, wdims, wshape, dnnl_f32, wtag);
    status |= dnnl_memory_desc_init_by_tag(&conv->bias, 1, bias, dnnl_f32, dnnl_x);
    status |= dnnl_memory_desc_init_by_tag(&conv->src_any, 4, src, dnnl_f32, dnnl_format_tag_any);
    status |= dnnl_memory_desc_init_by_tag(&conv->dst_any, 4, dst, dnnl_f32, dnnl_format_tag_any);
    status |= dnnl_memory_desc_init_by_tag(&conv->weights_any, wdims, wshape, dnnl_f32, dnnl_format_tag_any);
    conv->strides[0] = s->stride_h; conv->strides[1] = s->stride_w;
    conv->dilations[0] = s->dilation_h - 1; conv->dilations[1] = s->dilation_w - 1;
    conv->pad_low[0] = s->pad_top; conv->pad_low[1] = s->pad_left;
    conv->pad_high[0] = s->pad_bottom; conv->pad_high[1] = s->pad_right;
    if (status == dnnl_success && !ready(conv, FORWARD)) status = dnnl_unimplemented;
    if (status != dnnl_success) {
        snprintf(error, error_size, "oneDNN has no convolution for input %lldx%lldx%lldx%lld, weight %lldx%lldx%lldx%lld, "
                 "group %lld", (long long)s->n, (long long)s->c, (long long)s->h, (long long)s->w, (long long)s->m,
                 (long long)(s->c / s->group), (long long)s->kh, (long long)s->kw, (long long)s->group);
        kiln_dnnl_conv_destroy(conv);
        return NULL;
    }
    return conv;
}

void kiln_dnnl_conv_destroy(kiln_dnnl_conv *conv) {
    if (!conv) return;
    pthread_mutex_lock(&onednn_lock);
    for (int i = 0; i < DIRECTIONS; i++) release(&conv->directions[i]);
    pthread_mutex_unlock(&onednn_lock);
    pthread_mutex_destroy(&conv->lock);
    free(conv);
}

/// Runs a direction on plain buffers: reorders the read operands into the primitive's layouts, runs it, reorders
/// the written one back. `extra` (the bias) is passed as is when set. Operand `prepared` (−1: none) is already in
/// the primitive's layout (`kiln_dnnl_conv_prepare_weights`).
static int execute(kiln_dnnl_conv *conv, int which, int threads, void *const buffers[3], int extra_argument,
                   void *extra, int prepared) {
    direction *d = ready(conv, which);
    if (!d) return -1;
    omp_set_num_threads(threads > 0 ? threads : 1);
    dnnl_stream_t stream;
    if (dnnl_stream_create(&stream, engine, dnnl_stream_default_flags) != dnnl_success) return -1;
    dnnl_memory_t plain[3] = {0}, chosen[3] = {0};
    void *scratch[3] = {0};
    dnnl_exec_arg_t arguments[4];
    int count = 0, status = 0;
    for (int i = 0; i < 3 && !status; i++) {
        operand *o = &d->operands[i];
        status |= dnnl_memory_create(&plain[i], i == prepared ? &o->chosen : &o->plain, engine, buffers[i]) != dnnl_success;
        if (status) break;
        if (o->reorder && i != prepared) {
            size_t size = padded_size(&o->chosen);
            scratch[i] = aligned_alloc(64, size ? size : 64);
            status |= !scratch[i];
            if (status) break;
            status |= dnnl_memory_create(&chosen[i], &o->chosen, engine, scratch[i]) != dnnl_success;
            if (status) break;
            if (!o->written) {
                dnnl_exec_arg_t move[2] = {{DNNL_ARG_FROM, plain[i]}, {DNNL_ARG_TO, chosen[i]}};
                status |= run(o->reorder, stream, 2, move, &o->reorder_scratch);
            }
        }
        arguments[count++] = (dnnl_exec_arg_t){o->argument, chosen[i] ? chosen[i] : plain[i]};
    }
    dnnl_memory_t extra_memory = NULL;
    if (!status && extra) {
        status |= dnnl_memory_create(&extra_memory, &conv->bias, engine, extra) != dnnl_success;
        if (!status) arguments[count++] = (dnnl_exec_arg_t){extra_argument, extra_memory};
    }
    if (!status) status |= run(d->primitive, stream, count, arguments, &d->scratch);
    for (int i = 0; i < 3 && !status; i++) {
        operand *o = &d->operands[i];
        if (o->written && o->reorder) {
            dnnl_exec_arg_t move[2] = {{DNNL_ARG_FROM, chosen[i]}, {DNNL_ARG_TO, plain[i]}};
            status |= run(o->reorder, stream, 2, move, &o->reorder_scratch);
        }
    }
    status |= dnnl_stream_wait(stream) != dnnl_success;
    dnnl_stream_destroy(stream);
    if (extra_memory) dnnl_memory_destroy(extra_memory);
    for (int i = 0; i < 3; i++) {
        if (plain[i]) dnnl_memory_destroy(plain[i]);
        if (chosen[i]) dnnl_memory_destroy(chosen[i]);
        free(scratch[i]);
    }
    return status ? -1 : 0;
}

/// The operand slot of the weights in a direction that reads them (forward, backward-data), else −1.
static int weights_slot(int which) { return which == FORWARD ? 1 : which == BACKWARD_DATA ? 0 : -1; }

int kiln_dnnl_conv_forward(kiln_dnnl_conv *conv, int threads, const float *x, const float *w, const float *bias,
                           float *y, int weights_prepared) {
    if (conv->shape.has_bias != (bias != NULL)) return -1;
    void *const buffers[3] = {(void *)x, (void *)w, y};
    return execute(conv, FORWARD, threads, buffers, DNNL_ARG_BIAS, (void *)bias, weights_prepared ? 1 : -1);
}

int kiln_dnnl_conv_backward_data(kiln_dnnl_conv *conv, int threads, const float *w, const float *dy, float *dx,
                                 int weights_prepared) {
    void *const buffers[3] = {(void *)w, (void *)dy, dx};
    return execute(conv, BACKWARD_DATA, threads, buffers, 0, NULL, weights_prepared ? 0 : -1);
}

int kiln_dnnl_conv_backward_weights(kiln_dnnl_conv *conv, int threads, const float *x, const float *dy, float *dw) {
    void *const buffers[3] = {(void *)x, (void *)dy, dw};
    return execute(conv, BACKWARD_WEIGHTS, threads, buffers, 0, NULL, -1);
}

size_t kiln_dnnl_conv_prepared_weights_size(kiln_dnnl_conv *conv, int which) {
    int slot = weights_slot(which);
    direction *d = slot < 0 ? NULL : ready(conv, which);
    if (!d || !d->operands[slot].reorder) return 0;
    return padded_size(&d->operands[slot].chosen);
}

int kiln_dnnl_conv_prepare_weights(kiln_dnnl_conv *conv, int which, int threads, const float *w, void *prepared) {
    int slot = weights_slot(which);
    direction *d = slot < 0 ? NULL : ready(conv, which);
    if (!d || !d->operands[slot].reorder) return -1;
    omp_set_num_threads(threads > 0 ? threads : 1);
    operand *o = &d->operands[slot];
    dnnl_stream_t stream;
    if (dnnl_stream_create(&stream, engine, dnnl_stream_default_flags) != dnnl_success) return -1;
    dnnl_memory_t from = NULL, to = NULL;
    int status = dnnl_memory_create(&from, &o->plain, engine, (void *)w) != dnnl_success;
    if (!status) status |= dnnl_memory_create(&to, &o->chosen, engine, prepared) != dnnl_success;
    if (!status) {
        dnnl_exec_arg_t move[2] = {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}};
        status |= run(o->reorder, stream, 2, move, &o->reorder_scratch);
    }
    status |= dnnl_stream_wait(stream) != dnnl_success;
    dnnl_stream_destroy(stream);
    if (from) dnnl_memory_destroy(from);
    if (to) dnnl_memory_destroy(to);
    return status ? -1 : 0;
}

const char *kiln_dnnl_conv_implementation(kiln_dnnl_conv *conv, int which) {
    if (which < 0 || which >= DIRECTIONS) return "none";
    direction *d = &conv->directions[which];
    pthread_mutex_lock(&conv->lock);
    const char *name = "none";
    if (d->state == STATE_READY) dnnl_primitive_desc_query(d->descriptor, dnnl_query_impl_info_str, 0, &name);
    pthread_mutex_unlock(&conv->lock);
    return name;
}
