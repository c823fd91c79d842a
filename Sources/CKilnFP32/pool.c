// Max pooling of one plane: see include/kiln_pool.h.
#include "kiln_pool.h"

#include <math.h>
#include <string.h>

#if defined(__x86_64__) && defined(__linux__)
// One copy per vector width, chosen when the library loads (the loops below are written for the vectorizer).
#define KILN_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define KILN_CLONES
#endif

/// target[k] = source[k · stride] for k in 0..<count (strides 1 and 2, the common ones, as their own loops). The
/// loops here run eight lanes at a time without unrolling: pooled rows and planes are short (7–56 outputs per row in
/// ResNet-18 and VGG-style nets), and a 4 × 16-lane loop left them all to its scalar remainder.
static inline void gather(const float *source, int64_t stride, int64_t count, float *target) {
    if (stride == 1) {
        memcpy(target, source, (size_t)count * sizeof *target);
    } else if (stride == 2) {
#pragma clang loop vectorize_width(8) interleave_count(1)
        for (int64_t k = 0; k < count; k++) target[k] = source[2 * k];
    } else {
        for (int64_t k = 0; k < count; k++) target[k] = source[k * stride];
    }
}

/// best[k] = max(best[k], candidates[k]), the candidate taken only when strictly larger (NaN never is).
static inline void keep_larger(const float *candidates, float *best, int64_t count) {
#pragma clang loop vectorize_width(8) interleave_count(1)
    for (int64_t k = 0; k < count; k++) {
        float c = candidates[k], b = best[k];
        best[k] = c > b ? c : b;
    }
}

/// keep_larger, and where the candidate wins, winners[k] = origins[k] + offset.
static inline void keep_larger_recording(const float *candidates, float *best, int64_t count, int32_t *winners,
                                         const int32_t *origins, int32_t offset) {
#pragma clang loop vectorize_width(8) interleave_count(1)
    for (int64_t k = 0; k < count; k++) {
        float c = candidates[k], b = best[k];
        int larger = c > b;
        best[k] = larger ? c : b;
        winners[k] = larger ? origins[k] + offset : winners[k];
    }
}

KILN_CLONES
void kiln_max_pool_plane(const kiln_pool_shape *s, const int64_t *row_ranges, const int64_t *column_ranges,
                         const int32_t *origins, const int32_t *first_cells, const float *src, float *best,
                         int32_t *winners, float *candidates) {
    const int64_t cells = s->out_height * s->out_width;
    for (int64_t k = 0; k < cells; k++) best[k] = -INFINITY;
    if (winners) memcpy(winners, first_cells, (size_t)cells * sizeof *winners);
    for (int64_t ki = 0; ki < s->kernel_h; ki++) {
        const int64_t row_first = row_ranges[2 * ki], row_end = row_ranges[2 * ki + 1];
        if (row_first >= row_end) continue;
        for (int64_t kj = 0; kj < s->kernel_w; kj++) {
            const int64_t column_first = column_ranges[2 * kj], column_end = column_ranges[2 * kj + 1];
            if (column_first >= column_end) continue;
            const int64_t offset = (ki * s->dilation_h - s->pad_top) * s->width + kj * s->dilation_w - s->pad_left;
            // Outputs whose cell falls in the padding keep a −∞ candidate.
            if (row_end - row_first < s->out_height || column_end - column_first < s->out_width)
                for (int64_t k = 0; k < cells; k++) candidates[k] = -INFINITY;
            for (int64_t oy = row_first; oy < row_end; oy++) {
                const int64_t first = oy * s->out_width + column_first;
                gather(src + origins[first] + offset, s->stride_w, column_end - column_first, candidates + first);
            }
            if (winners) {
                keep_larger_recording(candidates, best, cells, winners, origins, (int32_t)offset);
            } else {
                keep_larger(candidates, best, cells);
            }
        }
    }
}
