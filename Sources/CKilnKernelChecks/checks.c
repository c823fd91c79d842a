// Per-kernel checks: each kernel against the portable kernel of its family, byte for byte.
#include "kiln_kernel_checks.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/// A small deterministic generator (the same numbers on every architecture).
typedef struct { uint64_t state; } rng;

static uint32_t next(rng *g) {
    g->state = g->state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(g->state >> 33);
}
static int uniform(rng *g, int low, int high) { return low + (int)(next(g) % (uint32_t)(high - low + 1)); }
static float uniform_float(rng *g, float low, float high) { return low + (high - low) * (float)(next(g) % 10000) / 10000.0f; }

/// The portable kernel of a family (first in the list).
static const kiln_kernel_info *portable(const char *family) {
    for (int i = 0; i < kiln_kernel_count(); i++) {
        const kiln_kernel_info *k = kiln_kernel_at(i);
        if (strcmp(k->family, family) == 0 && k->isa == KILN_ISA_SCALAR) return k;
    }
    return NULL;
}

/// Random requantization parameters for `n` output channels, with a fused residual add if `residual` is given.
typedef struct {
    int32_t *bias;
    float *multiplier;
    kiln_requant rq;
} requant_params;

static requant_params make_requant(rng *g, int n, const uint8_t *residual, size_t ldr) {
    requant_params p;
    p.bias = malloc(sizeof(int32_t) * (size_t)n);
    p.multiplier = malloc(sizeof(float) * (size_t)n);
    for (int j = 0; j < n; j++) {
        p.bias[j] = uniform(g, -20000, 20000);
        p.multiplier[j] = uniform_float(g, 0.0002f, 0.004f);
    }
    memset(&p.rq, 0, sizeof(p.rq));
    p.rq.bias = p.bias;
    p.rq.multiplier = p.multiplier;
    p.rq.zero_point = uniform(g, 0, 200);
    p.rq.low = uniform(g, 0, 40);
    p.rq.high = uniform(g, 180, 255);
    if (residual) {
        p.rq.residual = residual;
        p.rq.ldr = ldr;
        p.rq.scale = uniform_float(g, 0.01f, 0.05f);
        p.rq.residual_scale = uniform_float(g, 0.01f, 0.05f);
        p.rq.output_scale = uniform_float(g, 0.01f, 0.05f);
        p.rq.residual_zero_point = uniform(g, 0, 200);
        p.rq.output_zero_point = uniform(g, 0, 200);
        p.rq.add_low = uniform(g, 0, 30);
        p.rq.add_high = uniform(g, 200, 255);
    }
    return p;
}

static void free_requant(requant_params *p) {
    free(p->bias);
    free(p->multiplier);
}

/// First differing byte of two buffers, or −1.
static long first_difference(const uint8_t *a, const uint8_t *b, size_t count) {
    for (size_t i = 0; i < count; i++) {
        if (a[i] != b[i]) return (long)i;
    }
    return -1;
}

// MARK: - Indirect GEMM

typedef struct { int m, n, kc, taps, residual; } igemm_shape;

static const igemm_shape igemm_shapes[] = {
    {1, 1, 4, 1, 0}, {1, 7, 4, 1, 0}, {3, 7, 4, 1, 0}, {1, 16, 8, 1, 0}, {2, 17, 12, 1, 1}, {5, 33, 36, 1, 0},
    {8, 32, 64, 1, 0}, {9, 40, 64, 1, 1}, {17, 64, 16, 1, 0}, {4, 10, 256, 1, 0}, {1, 1000, 128, 1, 0},
    {7, 19, 4, 9, 0}, {8, 16, 8, 9, 1}, {13, 24, 32, 9, 0}, {3, 64, 64, 9, 1}, {16, 48, 12, 25, 0},
    {2, 5, 4, 49, 0}, {6, 96, 20, 3, 1}, {11, 128, 132, 1, 0}, {1, 256, 1024, 1, 0},
};

typedef struct {
    int m, n, kc, taps;
    uint8_t *a;
    const uint8_t **rows;
    int8_t *packed[2];  // by kiln_packing
    uint8_t *residual;
    requant_params params;
} igemm_case;

/// A case with inputs in 0...max_input and weights in ±max_weight; `extreme` puts half the values at the bounds,
/// with one sign per output channel, so sums reach the largest magnitudes those bounds allow.
static igemm_case make_igemm_bounded(rng *g, igemm_shape s, int max_input, int max_weight, int extreme) {
    igemm_case c;
    c.m = s.m, c.n = s.n, c.kc = s.kc, c.taps = s.taps;
    int k = s.kc * s.taps;
    size_t a_bytes = (size_t)s.m * s.taps * s.kc;
    c.a = malloc(a_bytes);
    for (size_t i = 0; i < a_bytes; i++) {
        c.a[i] = (uint8_t)(extreme && uniform(g, 0, 1) ? max_input : uniform(g, 0, max_input));
    }
    // Rows point at segments in a scrambled order, as a convolution's taps do.
    c.rows = malloc(sizeof(uint8_t *) * (size_t)s.m * s.taps);
    for (int r = 0; r < s.m * s.taps; r++) c.rows[r] = c.a + (size_t)((r * 7) % (s.m * s.taps)) * s.kc;
    int8_t *weights = malloc((size_t)s.n * k);
    for (size_t i = 0; i < (size_t)s.n * k; i++) {
        int sign = ((i / (size_t)k) % 2) ? -1 : 1;
        weights[i] = (int8_t)(extreme && uniform(g, 0, 1) ? sign * max_weight : uniform(g, -max_weight, max_weight));
    }
    for (int packing = 0; packing < 2; packing++) {
        c.packed[packing] = malloc(kiln_qs8_packed_size((kiln_packing)packing, s.n, k));
        kiln_qs8_pack((kiln_packing)packing, weights, s.n, k, c.packed[packing]);
    }
    free(weights);
    c.residual = NULL;
    if (s.residual) {
        c.residual = malloc((size_t)s.m * s.n);
        for (size_t i = 0; i < (size_t)s.m * s.n; i++) c.residual[i] = (uint8_t)uniform(g, 0, 255);
    }
    c.params = make_requant(g, s.n, c.residual, (size_t)s.n);
    return c;
}

static igemm_case make_igemm(rng *g, igemm_shape s) { return make_igemm_bounded(g, s, 255, 127, 0); }

static void free_igemm(igemm_case *c) {
    free(c->a);
    free(c->rows);
    free(c->packed[0]);
    free(c->packed[1]);
    free(c->residual);
    free_requant(&c->params);
}

static int check_igemm(kiln_qu8s8_igemm_fn kernel, kiln_packing packing, kiln_qu8s8_igemm_fn reference, char *message,
                       size_t size) {
    rng g = {0x6b696c6e};
    int count = (int)(sizeof(igemm_shapes) / sizeof(igemm_shapes[0]));
    for (int s = 0; s < count; s++) {
        igemm_shape shape = igemm_shapes[s];
        igemm_case c = make_igemm(&g, shape);
        size_t ldc = (size_t)shape.n + 5, bytes = (size_t)shape.m * ldc;
        uint8_t *got = malloc(bytes), *want = malloc(bytes);
        memset(got, 0xA5, bytes);
        memset(want, 0xA5, bytes);
        kernel(shape.m, shape.n, shape.kc, shape.taps, c.rows, c.packed[packing], got, ldc, &c.params.rq);
        reference(shape.m, shape.n, shape.kc, shape.taps, c.rows, c.packed[KILN_PACKING_C4], want, ldc, &c.params.rq);
        long at = first_difference(got, want, bytes);
        free(got);
        free(want);
        free_igemm(&c);
        if (at >= 0) {
            snprintf(message, size, "m %d n %d kc %d taps %d%s: byte %ld (row %ld, column %ld) differs", shape.m, shape.n,
                     shape.kc, shape.taps, shape.residual ? " residual" : "", at, at / (long)ldc, at % (long)ldc);
            return -1;
        }
    }
    return count;
}

/// Input and weight bounds of narrow GEMM cases: 8-bit weights within ±64 on 8-bit inputs (one pair sum per
/// widening), W4A8, W8A4, W4A4 and W2A2 (many), and all-zero weights.
static const int narrow_bounds[][2] = {{255, 64}, {255, 8}, {15, 127}, {15, 8}, {15, 7}, {3, 2}, {255, 0}};

static int check_igemm_narrow(kiln_qu8s8_igemm_narrow_fn kernel, kiln_qu8s8_igemm_narrow_fn reference, char *message,
                              size_t size) {
    rng g = {0x6e617277};
    int shapes = (int)(sizeof(igemm_shapes) / sizeof(igemm_shapes[0]));
    int bounds = (int)(sizeof(narrow_bounds) / sizeof(narrow_bounds[0]));
    int count = 0;
    for (int b = 0; b < bounds; b++) {
        int max_input = narrow_bounds[b][0], max_weight = narrow_bounds[b][1];
        int steps = kiln_igemm_narrow_steps(max_input, max_weight);
        for (int s = 0; s < shapes; s++) {
            igemm_shape shape = igemm_shapes[s];
            igemm_case c = make_igemm_bounded(&g, shape, max_input, max_weight, 1);
            size_t ldc = (size_t)shape.n + 5, bytes = (size_t)shape.m * ldc;
            uint8_t *got = malloc(bytes), *want = malloc(bytes);
            memset(got, 0xA5, bytes);
            memset(want, 0xA5, bytes);
            kernel(shape.m, shape.n, shape.kc, shape.taps, c.rows, c.packed[KILN_PACKING_C4], got, ldc, &c.params.rq, steps);
            // The portable kernel sums in 32 bits: exact for any values.
            reference(shape.m, shape.n, shape.kc, shape.taps, c.rows, c.packed[KILN_PACKING_C4], want, ldc, &c.params.rq, steps);
            long at = first_difference(got, want, bytes);
            free(got);
            free(want);
            free_igemm(&c);
            count++;
            if (at >= 0) {
                snprintf(message, size, "inputs ≤ %d, |weights| ≤ %d (%d steps), m %d n %d kc %d taps %d%s: byte %ld (row %ld, column %ld) differs",
                         max_input, max_weight, steps, shape.m, shape.n, shape.kc, shape.taps, shape.residual ? " residual" : "",
                         at, at / (long)ldc, at % (long)ldc);
                return -1;
            }
        }
    }
    return count;
}

// MARK: - Depthwise 3×3

typedef struct { int h, w, c, stride, pad, residual; } dwconv_shape;

static const dwconv_shape dwconv_shapes[] = {
    {1, 1, 1, 1, 1, 0}, {3, 3, 3, 1, 1, 0}, {5, 7, 16, 1, 1, 1}, {6, 6, 17, 2, 1, 0}, {8, 9, 32, 1, 0, 0},
    {7, 7, 33, 2, 1, 1}, {4, 12, 64, 1, 1, 0}, {9, 5, 65, 1, 1, 1}, {10, 10, 96, 2, 1, 0}, {3, 20, 100, 1, 1, 0},
    {14, 14, 144, 2, 0, 0}, {2, 2, 200, 1, 1, 1}, {6, 5, 56, 1, 1, 1}, {5, 9, 48, 2, 1, 0},
};

/// One depthwise case: an image, weights, zero point, optional residual and requantization for a geometry.
typedef struct {
    kiln_dwconv_geometry g;
    int oh;
    size_t out_bytes;
    uint8_t *x, *residual;
    int8_t *weights;
    uint8_t input_zero;
    requant_params params;
} dwconv_case;

static dwconv_case make_dwconv_case(rng *g, kiln_dwconv_geometry geometry, int oh, int residual) {
    dwconv_case c = {geometry, oh, (size_t)geometry.ow * geometry.c, NULL, NULL, NULL, 0, {0}};
    size_t in_bytes = (size_t)geometry.h * geometry.w * geometry.c, taps = (size_t)geometry.kh * geometry.kw;
    c.x = malloc(in_bytes);
    for (size_t i = 0; i < in_bytes; i++) c.x[i] = (uint8_t)uniform(g, 0, 255);
    c.weights = malloc(taps * geometry.c);
    for (size_t i = 0; i < taps * geometry.c; i++) c.weights[i] = (int8_t)uniform(g, -127, 127);
    c.input_zero = (uint8_t)uniform(g, 0, 200);
    if (residual) {
        c.residual = malloc(c.out_bytes);
        for (size_t i = 0; i < c.out_bytes; i++) c.residual[i] = (uint8_t)uniform(g, 0, 255);
    }
    c.params = make_requant(g, geometry.c, c.residual, (size_t)geometry.c);
    return c;
}

static void free_dwconv_case(dwconv_case *c) {
    free(c->x);
    free(c->weights);
    free(c->residual);
    free_requant(&c->params);
}

/// Runs one output row of a depthwise kernel of either family on a case.
typedef void (*dwconv_row_runner)(void (*kernel)(void), const dwconv_case *c, int row, uint8_t *out);

static void run_dwconv3x3_row(void (*kernel)(void), const dwconv_case *c, int row, uint8_t *out) {
    ((kiln_qu8s8_dwconv3x3_fn)kernel)(c->x, c->g.h, c->g.w, c->g.c, row, c->g.ow, c->g.stride_h, c->g.pad_top, c->g.pad_left,
                                      c->input_zero, c->weights, out, &c->params.rq);
}

static void run_dwconv_row(void (*kernel)(void), const dwconv_case *c, int row, uint8_t *out) {
    ((kiln_qu8s8_dwconv_fn)kernel)(c->x, &c->g, row, c->input_zero, c->weights, out, &c->params.rq);
}

/// Compares every output row (and 64 bytes after it) of `kernel` and `reference`; returns the first differing byte
/// (−1 if none) and its row in `row`.
static long compare_dwconv_rows(const dwconv_case *c, dwconv_row_runner run, void (*kernel)(void), void (*reference)(void),
                                int *row) {
    uint8_t *got = malloc(c->out_bytes + 64), *want = malloc(c->out_bytes + 64);
    long at = -1;
    for (*row = 0; *row < c->oh && at < 0; (*row)++) {
        memset(got, 0xA5, c->out_bytes + 64);
        memset(want, 0xA5, c->out_bytes + 64);
        run(kernel, c, *row, got);
        run(reference, c, *row, want);
        at = first_difference(got, want, c->out_bytes + 64);
    }
    (*row)--;
    free(got);
    free(want);
    return at;
}

static int check_dwconv(kiln_qu8s8_dwconv3x3_fn kernel, kiln_qu8s8_dwconv3x3_fn reference, char *message, size_t size) {
    rng g = {0x64776333};
    int count = (int)(sizeof(dwconv_shapes) / sizeof(dwconv_shapes[0]));
    for (int s = 0; s < count; s++) {
        dwconv_shape shape = dwconv_shapes[s];
        int oh = (shape.h + 2 * shape.pad - 3) / shape.stride + 1, ow = (shape.w + 2 * shape.pad - 3) / shape.stride + 1;
        kiln_dwconv_geometry geometry = {shape.h, shape.w, shape.c, 3, 3, shape.stride, shape.stride, shape.pad, shape.pad, 1, 1, ow};
        dwconv_case c = make_dwconv_case(&g, geometry, oh, shape.residual);
        int row = 0;
        long at = compare_dwconv_rows(&c, run_dwconv3x3_row, (void (*)(void))kernel, (void (*)(void))reference, &row);
        free_dwconv_case(&c);
        if (at >= 0) {
            snprintf(message, size, "h %d w %d c %d stride %d pad %d%s: row %d byte %ld (pixel %ld, channel %ld) differs",
                     shape.h, shape.w, shape.c, shape.stride, shape.pad, shape.residual ? " residual" : "", row, at,
                     at / shape.c, at % shape.c);
            return -1;
        }
    }
    return count;
}

// MARK: - Depthwise, any kernel

typedef struct { int h, w, c, kh, kw, stride_h, stride_w, pad_top, pad_left, pad_bottom, pad_right, dilation, residual; } dwconv_general_shape;

static const dwconv_general_shape dwconv_general_shapes[] = {
    {1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 0},    {5, 5, 8, 5, 5, 1, 1, 2, 2, 2, 2, 1, 0},    {9, 7, 17, 5, 5, 2, 2, 1, 2, 2, 1, 1, 1},
    {12, 12, 40, 7, 7, 1, 1, 3, 3, 3, 3, 1, 0}, {11, 13, 33, 3, 3, 1, 1, 2, 2, 2, 2, 2, 1}, {8, 8, 64, 3, 5, 2, 1, 1, 2, 1, 2, 1, 0},
    {6, 6, 72, 3, 3, 1, 2, 1, 1, 1, 1, 1, 0},   {14, 14, 120, 5, 5, 2, 2, 2, 2, 2, 2, 1, 0}, {7, 7, 200, 7, 7, 1, 1, 3, 3, 3, 3, 1, 1},
    {4, 10, 9, 1, 3, 1, 1, 0, 1, 0, 1, 1, 0},  {3, 3, 100, 5, 5, 1, 1, 2, 2, 2, 2, 1, 0},  {16, 16, 48, 3, 3, 2, 2, 0, 0, 1, 1, 3, 1},
};

static int check_dwconv_general(kiln_qu8s8_dwconv_fn kernel, kiln_qu8s8_dwconv_fn reference, char *message, size_t size) {
    rng g = {0x64776367};
    int count = (int)(sizeof(dwconv_general_shapes) / sizeof(dwconv_general_shapes[0]));
    for (int s = 0; s < count; s++) {
        dwconv_general_shape shape = dwconv_general_shapes[s];
        int span_h = shape.dilation * (shape.kh - 1) + 1, span_w = shape.dilation * (shape.kw - 1) + 1;
        int oh = (shape.h + shape.pad_top + shape.pad_bottom - span_h) / shape.stride_h + 1;
        int ow = (shape.w + shape.pad_left + shape.pad_right - span_w) / shape.stride_w + 1;
        kiln_dwconv_geometry geometry = {shape.h, shape.w, shape.c, shape.kh, shape.kw, shape.stride_h, shape.stride_w,
                                         shape.pad_top, shape.pad_left, shape.dilation, shape.dilation, ow};
        dwconv_case c = make_dwconv_case(&g, geometry, oh, shape.residual);
        int row = 0;
        long at = compare_dwconv_rows(&c, run_dwconv_row, (void (*)(void))kernel, (void (*)(void))reference, &row);
        free_dwconv_case(&c);
        if (at >= 0) {
            snprintf(message, size, "h %d w %d c %d kernel %dx%d stride %d,%d dilation %d%s: row %d byte %ld differs", shape.h,
                     shape.w, shape.c, shape.kh, shape.kw, shape.stride_h, shape.stride_w, shape.dilation,
                     shape.residual ? " residual" : "", row, at);
            return -1;
        }
    }
    return count;
}

// MARK: - Input quantizer

typedef struct { int c, plane; } quantize_shape;

static const quantize_shape quantize_shapes[] = {
    {1, 1}, {1, 15}, {1, 16}, {1, 784}, {3, 1}, {3, 17}, {3, 50}, {3, 224 * 3}, {4, 33}, {16, 20}, {17, 31}, {64, 49},
};

static int check_quantize(kiln_qu8_quantize_fn kernel, kiln_qu8_quantize_fn reference, char *message, size_t size) {
    rng g = {0x71756e74};
    int count = (int)(sizeof(quantize_shapes) / sizeof(quantize_shapes[0]));
    const float specials[] = {NAN, INFINITY, -INFINITY, 1e30f, -1e30f, 0.0f, -0.0f, 0.5f, 1.5f, 2.5f};
    for (int s = 0; s < count; s++) {
        quantize_shape shape = quantize_shapes[s];
        size_t n = (size_t)shape.c * shape.plane;
        float *x = malloc(sizeof(float) * n);
        for (size_t i = 0; i < n; i++) {
            x[i] = (i % 11 == 3) ? specials[(i / 11) % 10] : uniform_float(&g, -4.0f, 5.0f);
        }
        float scale = uniform_float(&g, 0.01f, 0.05f);
        int32_t zero_point = uniform(&g, 0, 255);
        uint8_t *got = malloc(n + 64), *want = malloc(n + 64);
        memset(got, 0xA5, n + 64);
        memset(want, 0xA5, n + 64);
        kernel(x, shape.c, shape.plane, scale, zero_point, got);
        reference(x, shape.c, shape.plane, scale, zero_point, want);
        long at = first_difference(got, want, n + 64);
        free(x);
        free(got);
        free(want);
        if (at >= 0) {
            snprintf(message, size, "c %d plane %d: byte %ld differs", shape.c, shape.plane, at);
            return -1;
        }
    }
    return count;
}

// MARK: - Table lookup

static const size_t lookup_sizes[] = {1, 3, 4, 15, 16, 31, 32, 63, 64, 65, 1000, 4103};

static int check_lookup(kiln_qu8_lookup_fn kernel, kiln_qu8_lookup_fn reference, char *message, size_t size) {
    rng g = {0x6c6f6f6b};
    int count = (int)(sizeof(lookup_sizes) / sizeof(lookup_sizes[0]));
    uint8_t table[256];
    for (int i = 0; i < 256; i++) table[i] = (uint8_t)uniform(&g, 0, 255);
    for (int s = 0; s < count; s++) {
        size_t n = lookup_sizes[s];
        uint8_t *x = malloc(n), *got = malloc(n + 64), *want = malloc(n + 64);
        for (size_t i = 0; i < n; i++) x[i] = (uint8_t)uniform(&g, 0, 255);
        memset(got, 0xA5, n + 64);
        memset(want, 0xA5, n + 64);
        kernel(n, x, table, got);
        reference(n, x, table, want);
        long at = first_difference(got, want, n + 64);
        // In place, as the runtime runs it after a conv.
        if (at < 0) {
            memcpy(got, x, n);
            kernel(n, got, table, got);
            at = first_difference(got, want, n);
        }
        free(x);
        free(got);
        free(want);
        if (at >= 0) {
            snprintf(message, size, "n %zu: byte %ld differs", n, at);
            return -1;
        }
    }
    return count;
}

int kiln_check_kernel(const kiln_kernel_info *kernel, char *message, size_t size) {
    const kiln_kernel_info *reference = portable(kernel->family);
    if (!reference) {
        snprintf(message, size, "family %s has no portable kernel", kernel->family);
        return -1;
    }
    if (strcmp(kernel->family, "qu8s8_igemm") == 0) {
        return check_igemm((kiln_qu8s8_igemm_fn)kernel->function, kiln_qu8s8_igemm_packing(kernel->isa),
                           (kiln_qu8s8_igemm_fn)reference->function, message, size);
    }
    if (strcmp(kernel->family, "qu8s8_igemm_narrow") == 0) {
        return check_igemm_narrow((kiln_qu8s8_igemm_narrow_fn)kernel->function,
                                  (kiln_qu8s8_igemm_narrow_fn)reference->function, message, size);
    }
    if (strcmp(kernel->family, "qu8s8_dwconv3x3") == 0) {
        return check_dwconv((kiln_qu8s8_dwconv3x3_fn)kernel->function, (kiln_qu8s8_dwconv3x3_fn)reference->function, message, size);
    }
    if (strcmp(kernel->family, "qu8_quantize_nchw") == 0) {
        return check_quantize((kiln_qu8_quantize_fn)kernel->function, (kiln_qu8_quantize_fn)reference->function, message, size);
    }
    if (strcmp(kernel->family, "qu8s8_dwconv") == 0) {
        return check_dwconv_general((kiln_qu8s8_dwconv_fn)kernel->function, (kiln_qu8s8_dwconv_fn)reference->function, message, size);
    }
    if (strcmp(kernel->family, "qu8_lookup") == 0) {
        return check_lookup((kiln_qu8_lookup_fn)kernel->function, (kiln_qu8_lookup_fn)reference->function, message, size);
    }
    snprintf(message, size, "no checks for family %s", kernel->family);
    return -1;
}

// MARK: - Benchmark


static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/// The best over `repeats` of the seconds per call of `call(context)`, each repeat calling it for at least 20 ms.
static double best_seconds(void (*call)(void *), void *context, int repeats) {
    double best = 1e30;
    for (int r = 0; r < repeats; r++) {
        int calls = 0;
        double start = now(), elapsed = 0;
        do {
            call(context);
            calls++;
            elapsed = now() - start;
        } while (elapsed < 0.02);
        if (elapsed / calls < best) best = elapsed / calls;
    }
    return best;
}

/// Rows per GEMM call, as the runtime tiles a layer's output pixels (MemoryPlan.tileRows).
enum { CALL_ROWS = 32 };

typedef struct { kiln_qu8s8_igemm_fn f; kiln_packing packing; igemm_shape s; igemm_case *c; uint8_t *out; } igemm_call;
static void call_igemm(void *p) {
    igemm_call *a = p;
    for (int r = 0; r < a->s.m; r += CALL_ROWS) {
        int rows = a->s.m - r < CALL_ROWS ? a->s.m - r : CALL_ROWS;
        a->f(rows, a->s.n, a->s.kc, a->s.taps, a->c->rows + (size_t)r * a->s.taps, a->c->packed[a->packing],
             a->out + (size_t)r * a->s.n, (size_t)a->s.n, &a->c->params.rq);
    }
}

typedef struct { kiln_qu8s8_igemm_narrow_fn f; igemm_shape s; igemm_case *c; uint8_t *out; int steps; } igemm_narrow_call;
static void call_igemm_narrow(void *p) {
    igemm_narrow_call *a = p;
    for (int r = 0; r < a->s.m; r += CALL_ROWS) {
        int rows = a->s.m - r < CALL_ROWS ? a->s.m - r : CALL_ROWS;
        a->f(rows, a->s.n, a->s.kc, a->s.taps, a->c->rows + (size_t)r * a->s.taps, a->c->packed[KILN_PACKING_C4],
             a->out + (size_t)r * a->s.n, (size_t)a->s.n, &a->c->params.rq, a->steps);
    }
}

typedef struct { kiln_qu8s8_dwconv3x3_fn f; dwconv_shape s; int oh, ow; const uint8_t *x; const int8_t *weights; uint8_t *y; const kiln_requant *rq; } dwconv_call;
static void call_dwconv(void *p) {
    dwconv_call *a = p;
    for (int row = 0; row < a->oh; row++) {
        a->f(a->x, a->s.h, a->s.w, a->s.c, row, a->ow, a->s.stride, a->s.pad, a->s.pad, 0, a->weights, a->y, a->rq);
    }
}

typedef struct { kiln_qu8_quantize_fn f; quantize_shape s; const float *x; uint8_t *y; } quantize_call;
static void call_quantize(void *p) {
    quantize_call *a = p;
    a->f(a->x, a->s.c, a->s.plane, 0.02f, 100, a->y);
}

/// Shapes of real layers: ResNet-18's 3×3 convs (as an indirect GEMM over 56×56 and 14×14 maps), a 1×1 conv of
/// MobileNetV2, a classifier at batch 1; MobileNetV2's depthwise rows; a 224×224 RGB input.
static const igemm_shape igemm_bench[] = {{3136, 64, 64, 9, 0}, {196, 256, 256, 9, 0}, {3136, 96, 16, 1, 0}, {1, 1000, 512, 1, 0}};
static const dwconv_shape dwconv_bench[] = {{112, 112, 96, 2, 1, 0}, {56, 56, 144, 1, 1, 0}, {14, 14, 576, 1, 1, 0}};
static const quantize_shape quantize_bench[] = {{3, 224 * 224}};
static const size_t lookup_bench[] = {112 * 112 * 96};
/// EfficientNet-B0's 5×5 depthwise at 28×28 (stride 1) and 56→28 (stride 2).
static const dwconv_general_shape dwconv_general_bench[] = {{28, 28, 240, 5, 5, 1, 1, 2, 2, 2, 2, 1, 0},
                                                            {56, 56, 144, 5, 5, 2, 2, 1, 1, 2, 2, 1, 0}};

typedef struct { kiln_qu8s8_dwconv_fn f; kiln_dwconv_geometry g; int oh; const uint8_t *x; const int8_t *weights; uint8_t *y; const kiln_requant *rq; } dwconv_general_call;
static void call_dwconv_general(void *p) {
    dwconv_general_call *a = p;
    for (int row = 0; row < a->oh; row++) a->f(a->x, &a->g, row, 0, a->weights, a->y, a->rq);
}

typedef struct { kiln_qu8_lookup_fn f; size_t n; const uint8_t *x, *table; uint8_t *y; } lookup_call;
static void call_lookup(void *p) {
    lookup_call *a = p;
    a->f(a->n, a->x, a->table, a->y);
}

int kiln_bench_shape_count(const kiln_kernel_info *kernel) {
    if (strcmp(kernel->family, "qu8s8_igemm") == 0) return (int)(sizeof(igemm_bench) / sizeof(igemm_bench[0]));
    if (strcmp(kernel->family, "qu8s8_igemm_narrow") == 0) return 3 * (int)(sizeof(igemm_bench) / sizeof(igemm_bench[0]));
    if (strcmp(kernel->family, "qu8s8_dwconv3x3") == 0) return (int)(sizeof(dwconv_bench) / sizeof(dwconv_bench[0]));
    if (strcmp(kernel->family, "qu8_quantize_nchw") == 0) return (int)(sizeof(quantize_bench) / sizeof(quantize_bench[0]));
    if (strcmp(kernel->family, "qu8_lookup") == 0) return (int)(sizeof(lookup_bench) / sizeof(lookup_bench[0]));
    if (strcmp(kernel->family, "qu8s8_dwconv") == 0) return (int)(sizeof(dwconv_general_bench) / sizeof(dwconv_general_bench[0]));
    return 0;
}

double kiln_bench_kernel(const kiln_kernel_info *kernel, int shape, int repeats, double *macs, char *label, size_t size) {
    rng g = {0x62656e63};
    double best = 1e30;
    if (strcmp(kernel->family, "qu8s8_igemm") == 0) {
        igemm_shape s = igemm_bench[shape];
        igemm_case c = make_igemm(&g, s);
        uint8_t *out = malloc((size_t)s.m * s.n);
        kiln_qu8s8_igemm_fn f = (kiln_qu8s8_igemm_fn)kernel->function;
        *macs = (double)s.m * s.n * s.kc * s.taps;
        snprintf(label, size, "m %d n %d k %d (%d taps)", s.m, s.n, s.kc * s.taps, s.taps);
        igemm_call call = {f, kiln_qu8s8_igemm_packing(kernel->isa), s, &c, out};
        best = best_seconds(call_igemm, &call, repeats);
        free(out);
        free_igemm(&c);
    } else if (strcmp(kernel->family, "qu8s8_igemm_narrow") == 0) {
        // The igemm shapes at three operand widths: weights within ±64 on 8-bit inputs, W4A8, W4A4.
        static const int widths[3][3] = {{255, 64, 7}, {255, 8, 4}, {15, 8, 4}};
        int count = (int)(sizeof(igemm_bench) / sizeof(igemm_bench[0]));
        igemm_shape s = igemm_bench[shape % count];
        const int *w = widths[shape / count];
        igemm_case c = make_igemm_bounded(&g, s, w[0], w[1], 0);
        uint8_t *out = malloc((size_t)s.m * s.n);
        *macs = (double)s.m * s.n * s.kc * s.taps;
        snprintf(label, size, "m %d n %d k %d (%d taps) W%dA%d", s.m, s.n, s.kc * s.taps, s.taps, w[2], w[0] == 255 ? 8 : 4);
        igemm_narrow_call call = {(kiln_qu8s8_igemm_narrow_fn)kernel->function, s, &c, out,
                                  kiln_igemm_narrow_steps(w[0], w[1])};
        best = best_seconds(call_igemm_narrow, &call, repeats);
        free(out);
        free_igemm(&c);
    } else if (strcmp(kernel->family, "qu8s8_dwconv3x3") == 0) {
        dwconv_shape s = dwconv_bench[shape];
        int oh = (s.h + 2 * s.pad - 3) / s.stride + 1, ow = (s.w + 2 * s.pad - 3) / s.stride + 1;
        uint8_t *x = malloc((size_t)s.h * s.w * s.c), *y = malloc((size_t)ow * s.c);
        for (size_t i = 0; i < (size_t)s.h * s.w * s.c; i++) x[i] = (uint8_t)uniform(&g, 0, 255);
        int8_t *weights = malloc((size_t)9 * s.c);
        for (int i = 0; i < 9 * s.c; i++) weights[i] = (int8_t)uniform(&g, -127, 127);
        requant_params params = make_requant(&g, s.c, NULL, 0);
        kiln_qu8s8_dwconv3x3_fn f = (kiln_qu8s8_dwconv3x3_fn)kernel->function;
        *macs = 9.0 * oh * ow * s.c;
        snprintf(label, size, "%dx%dx%d stride %d", s.h, s.w, s.c, s.stride);
        dwconv_call call = {f, s, oh, ow, x, weights, y, &params.rq};
        best = best_seconds(call_dwconv, &call, repeats);
        free(x);
        free(y);
        free(weights);
        free_requant(&params);
    } else if (strcmp(kernel->family, "qu8_quantize_nchw") == 0) {
        quantize_shape s = quantize_bench[shape];
        size_t n = (size_t)s.c * s.plane;
        float *x = malloc(sizeof(float) * n);
        for (size_t i = 0; i < n; i++) x[i] = uniform_float(&g, -2.0f, 2.5f);
        uint8_t *y = malloc(n);
        kiln_qu8_quantize_fn f = (kiln_qu8_quantize_fn)kernel->function;
        *macs = (double)n;
        snprintf(label, size, "%d channels × %d pixels", s.c, s.plane);
        quantize_call call = {f, s, x, y};
        best = best_seconds(call_quantize, &call, repeats);
        free(x);
        free(y);
    } else if (strcmp(kernel->family, "qu8s8_dwconv") == 0) {
        dwconv_general_shape s = dwconv_general_bench[shape];
        int oh = (s.h + s.pad_top + s.pad_bottom - s.kh) / s.stride_h + 1, ow = (s.w + s.pad_left + s.pad_right - s.kw) / s.stride_w + 1;
        kiln_dwconv_geometry geometry = {s.h, s.w, s.c, s.kh, s.kw, s.stride_h, s.stride_w, s.pad_top, s.pad_left, 1, 1, ow};
        uint8_t *x = malloc((size_t)s.h * s.w * s.c), *y = malloc((size_t)ow * s.c);
        for (size_t i = 0; i < (size_t)s.h * s.w * s.c; i++) x[i] = (uint8_t)uniform(&g, 0, 255);
        int8_t *weights = malloc((size_t)s.kh * s.kw * s.c);
        for (int i = 0; i < s.kh * s.kw * s.c; i++) weights[i] = (int8_t)uniform(&g, -127, 127);
        requant_params params = make_requant(&g, s.c, NULL, 0);
        *macs = (double)s.kh * s.kw * oh * ow * s.c;
        snprintf(label, size, "%dx%dx%d %dx%d stride %d", s.h, s.w, s.c, s.kh, s.kw, s.stride_h);
        dwconv_general_call call = {(kiln_qu8s8_dwconv_fn)kernel->function, geometry, oh, x, weights, y, &params.rq};
        best = best_seconds(call_dwconv_general, &call, repeats);
        free(x);
        free(y);
        free(weights);
        free_requant(&params);
    } else if (strcmp(kernel->family, "qu8_lookup") == 0) {
        size_t n = lookup_bench[shape];
        uint8_t *x = malloc(n), *y = malloc(n), table[256];
        for (size_t i = 0; i < n; i++) x[i] = (uint8_t)uniform(&g, 0, 255);
        for (int i = 0; i < 256; i++) table[i] = (uint8_t)(255 - i);
        *macs = (double)n;
        snprintf(label, size, "%zu values", n);
        lookup_call call = {(kiln_qu8_lookup_fn)kernel->function, n, x, table, y};
        best = best_seconds(call_lookup, &call, repeats);
        free(x);
        free(y);
    }
    return best;
}

#ifdef KILN_KERNEL_CHECKS_MAIN
/// Checks every kernel this CPU runs; prints one line per kernel ("passed N shapes", "skipped", "FAILED ...").
int main(void) {
    int failures = 0;
    for (int i = 0; i < kiln_kernel_count(); i++) {
        const kiln_kernel_info *k = kiln_kernel_at(i);
        if (!kiln_cpu_supports(k->isa)) {
            printf("%s %s skipped (this CPU lacks %s)\n", k->family, k->name, kiln_isa_name(k->isa));
            continue;
        }
        char message[256] = {0};
        int shapes = kiln_check_kernel(k, message, sizeof(message));
        if (shapes < 0) {
            failures++;
            printf("%s %s FAILED: %s\n", k->family, k->name, message);
        } else {
            printf("%s %s passed %d shapes\n", k->family, k->name, shapes);
        }
    }
    return failures == 0 ? 0 : 1;
}
#endif
