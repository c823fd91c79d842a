// Max pooling of one NCHW plane for KilnTensor, compiled for AVX-512, AVX2 and baseline x86-64 and picked at load
// time (Swift compiles for baseline x86-64 only: the comparisons ran four lanes wide).
#ifndef KILN_POOL_H
#define KILN_POOL_H

#include <stdint.h>

/// A max pooling's geometry: input plane, output plane, kernel, strides, dilations and leading pads.
typedef struct {
    int64_t height, width, out_height, out_width;
    int64_t kernel_h, kernel_w, stride_h, stride_w, dilation_h, dilation_w, pad_top, pad_left;
} kiln_pool_shape;

/// Max pooling of one plane `src` [height, width] into `best` [out_height, out_width], one kernel cell at a time
/// across the whole plane. `row_ranges` [2·kernel_h] and `column_ranges` [2·kernel_w]: per kernel row (column) the
/// output rows (columns) [first, end) whose input row (column) is in bounds; `origins` [cells]: each output's
/// window origin oy·stride_h·width + ox·stride_w; `first_cells` [cells]: each output's first in-bounds cell (−1:
/// none), its winner until a larger cell comes. `winners` (NULL: not wanted) gets each output's first largest cell,
/// an index into the plane; `candidates` is scratch of `cells` floats. Padded cells never win; NaN never wins.
void kiln_max_pool_plane(const kiln_pool_shape *shape, const int64_t *row_ranges, const int64_t *column_ranges,
                         const int32_t *origins, const int32_t *first_cells, const float *src, float *best,
                         int32_t *winners, float *candidates);

#endif
