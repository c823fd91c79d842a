// Kiln's int8 micro-kernels: u8 activations × s8 weights → int32 → requantized u8, one function per ISA.
//
// Names say data type, op, tile and ISA (qu8s8_gemm_8x32c4__avx512vnni: u8×s8 GEMM, 8 rows × 32 columns per tile,
// K in groups of 4, AVX-512 VNNI). Each ISA variant is compiled with function target attributes, never a global
// -march, and chosen once at model load by kiln_cpu_isa(). Every variant is bit-exact with the portable reference.
#ifndef KILN_KERNELS_H
#define KILN_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Instruction sets with kernel variants (kiln_isa_list.inc): KILN_ISA_SCALAR, KILN_ISA_AVX2, ...
typedef enum {
#define KILN_ISA(symbol, name) KILN_ISA_##symbol,
#include "../kiln_isa_list.inc"
#undef KILN_ISA
    KILN_ISA_COUNT
} kiln_isa;

/// Whether this CPU (and OS) runs the given variant.
int kiln_cpu_supports(int isa);
/// The best variant this CPU runs.
int kiln_cpu_isa(void);
/// A short name of a variant ("avx512vnni", ...).
const char *kiln_isa_name(int isa);
/// Whether a CPU that runs `isa` also runs kernels written for `required` (every ISA includes the scalar one;
/// AVX-VNNI, AVX-512 and AVX-512 VNNI include AVX2; AVX-512 VNNI includes AVX-512).
int kiln_isa_includes(int isa, int required);
/// The CPU's model name (its brand string on x86, with family and model; "unknown CPU" where there is none).
const char *kiln_cpu_model(void);

/// Output channels per packed weight panel, and K grouping.
#define KILN_PANEL 16
#define KILN_KGROUP 4

/// How a GEMM kernel wants its weights packed.
typedef enum {
    /// 16-channel panels, each a sequence of k-groups of 16 × 4 bytes (channel-major within a group).
    KILN_PACKING_C4 = 0,
    /// 16-channel panels, each a sequence of k-pairs of 16 × 2 int16 (sign-extended once, at load).
    KILN_PACKING_PAIRS16 = 1,
} kiln_packing;

/// Bytes of the packed form of int8 weights [n][k]: n rounded up to 16, k to 4; two bytes a weight in PAIRS16.
size_t kiln_qs8_packed_size(kiln_packing packing, int n, int k);
/// Packs int8 weights [n][k] (row-major, one row per output channel) into 16-channel panels; padding is zero.
void kiln_qs8_pack(kiln_packing packing, const int8_t *weights, int n, int k, int8_t *packed);
/// The packing the igemm kernel written for `kernel_isa` reads (the narrow GEMMs read C4).
kiln_packing kiln_qu8s8_igemm_packing(int kernel_isa);

/// Requantization of one GEMM/conv output: q = clamp(rint(float(acc) · multiplier[j]) + zero_point, low, high),
/// with acc already including bias[j]. Optionally followed by a fused residual add:
/// out = clamp(rint((s1·(q − z1) + s2·(r − z2)) / so) + zo, add_low, add_high) with r from `residual`.
typedef struct {
    const int32_t *bias;        // [n]
    const float *multiplier;    // [n]
    int32_t zero_point, low, high;
    const uint8_t *residual;    // NULL: no fused add; else [m][ldr]
    size_t ldr;
    float scale, residual_scale, output_scale;  // s1, s2, so
    int32_t residual_zero_point, output_zero_point, add_low, add_high;  // z2, zo
} kiln_requant;

/// Indirect GEMM: C[m][n] (u8, leading dimension ldc) = requant(A · packed B), where row i of A is the
/// concatenation of `taps` segments of `kc` bytes (kc a multiple of 4), segment t read from rows[i·taps + t]
/// (a convolution's receptive field: one pointer per kernel tap; a plain matrix: taps = 1). B is packed with
/// k = taps · kc. Segments may be read whole even where the weights are zero padding. One function per ISA,
/// identical results.
typedef void kiln_qu8s8_igemm_kernel(int m, int n, int kc, int taps, const uint8_t *const *rows, const int8_t *packed,
                                     uint8_t *c, size_t ldc, const kiln_requant *rq);
typedef kiln_qu8s8_igemm_kernel *kiln_qu8s8_igemm_fn;

/// The GEMM variant for an ISA (the best the list has for it; the scalar one at least).
kiln_qu8s8_igemm_fn kiln_qu8s8_igemm_for(int isa);

/// Indirect GEMM for narrow products: the same result as kiln_qu8s8_igemm_kernel when every input byte a nonzero
/// weight meets is at most `max_input` and every |weight| at most `max_weight`, with
/// `steps` = kiln_igemm_narrow_steps(max_input, max_weight) ≥ 1 (low-bit students; 8-bit weights within ±64).
typedef void kiln_qu8s8_igemm_narrow_kernel(int m, int n, int kc, int taps, const uint8_t *const *rows,
                                            const int8_t *packed, uint8_t *c, size_t ldc, const kiln_requant *rq,
                                            int steps);
typedef kiln_qu8s8_igemm_narrow_kernel *kiln_qu8s8_igemm_narrow_fn;

/// The narrow GEMM variant for an ISA (the best the list has for it; the scalar one at least).
kiln_qu8s8_igemm_narrow_fn kiln_qu8s8_igemm_narrow_for(int isa);

/// How many 16-bit pair sums x0·w0 + x1·w1 (inputs ≤ max_input, |weights| ≤ max_weight) add up exactly in 16 bits:
/// 0 when a single one may not fit (the narrow GEMM cannot be used).
int kiln_igemm_narrow_steps(int max_input, int max_weight);

/// The ISA of the kernel of `family` the dispatch chooses for `isa` (-1 for an unknown family).
int kiln_chosen_kernel_isa(const char *family, int isa);

/// Depthwise 3×3 convolution over NHWC u8 rows: for output row `oy` of one image, all `ow` pixels and `c`
/// channels. `x` is the image [h][w][c]; weights are [9][c] int8 (tap-major); padding cells hold `input_zero`.
typedef void kiln_qu8s8_dwconv3x3_kernel(const uint8_t *x, int h, int w, int c, int oy, int ow, int stride,
                                         int pad_top, int pad_left, uint8_t input_zero, const int8_t *weights,
                                         uint8_t *y, const kiln_requant *rq);
typedef kiln_qu8s8_dwconv3x3_kernel *kiln_qu8s8_dwconv3x3_fn;

/// The depthwise variant for an ISA.
kiln_qu8s8_dwconv3x3_fn kiln_qu8s8_dwconv3x3_for(int isa);

/// Fills rows[r·kh·kw + tap] with the input pointer of each kernel tap of `count` consecutive output pixels
/// (from pixel `first` of an oh×ow map) of an NHWC u8 image, or `zero` where the tap falls in the padding.
void kiln_qu8_conv_indirection(const uint8_t *image, int h, int w, int c, int kh, int kw, int stride_h, int stride_w,
                               int pad_top, int pad_left, int dilation_h, int dilation_w, int ow, int first, int count,
                               const uint8_t *zero, const uint8_t **rows);

/// Copies the receptive fields of `count` consecutive output pixels (from pixel `first` of an oh×ow map) of an NHWC
/// u8 image into rows of `k` bytes (k ≥ kh·kw·c): tap-major, channels inner, `zero` where a tap falls in the padding,
/// 0 after the last tap. For convolutions with few input channels, where one pointer per tap would waste most of each
/// 4-byte group.
void kiln_qu8_conv_im2col(const uint8_t *image, int h, int w, int c, int kh, int kw, int stride_h, int stride_w,
                          int pad_top, int pad_left, int dilation_h, int dilation_w, int ow, int first, int count,
                          uint8_t zero, int k, uint8_t *out);

/// Max pooling of NHWC u8 for output row `oy` of one image (all `ow` pixels, `c` channels); cells in the padding
/// never win (the result is the maximum of the in-bounds cells, or 0 if there are none).
void kiln_qu8_maxpool(const uint8_t *x, int h, int w, int c, int kh, int kw, int stride_h, int stride_w, int pad_top,
                      int pad_left, int oy, int ow, uint8_t *y);

/// Global average pooling of one NHWC u8 image of `pixels` pixels and `c` channels, requantized like a conv's
/// accumulator: y = clamp(rint((sum − pixels · input_zero_point) · m) + output_zero_point, 0, max_level) with
/// m = input_scale / (output_scale · pixels) in float32 (as KilnRuntime's reference kernel and onnxruntime's
/// QLinearGlobalAveragePool).
void kiln_qu8_global_average_pool(const uint8_t *x, int pixels, int c, float input_scale, int32_t input_zero_point,
                                  float output_scale, int32_t output_zero_point, int32_t max_level, uint8_t *y);

/// Requantized product of `pixels` × `c` u8 values `a` and either as many values `b` or, with `broadcast`, one per
/// channel (b[ch] for every pixel): y = clamp(rint((a − za)(b − zb) · multiplier) + zy, 0, max_level), the product
/// exact in int32 and multiplied in float32 (as KilnRuntime's reference kernel).
void kiln_qu8_mul(const uint8_t *a, const uint8_t *b, int pixels, int c, int broadcast, float multiplier, int32_t a_zero_point,
                  int32_t b_zero_point, int32_t output_zero_point, int32_t max_level, uint8_t *y);

/// Layer normalization over the `c` channels of each of `pixels` NHWC u8 pixels, on their real values
/// v = (x − input_zero_point) · input_scale. The levels' moments are exact integer sums, giving (in double) the mean
/// level m and the variance of the levels; σ = sqrtf(variance · input_scale² + epsilon) in float32, and each output
/// y = clamp(rint((((x − input_zero_point) − m) · (input_scale / σ) · scale[ch] + shift[ch]) / output_scale) +
/// output_zero_point, 0, max_level) in float32 in that order. The one implementation every kernel tier uses.
void kiln_qu8_channel_norm(const uint8_t *x, int pixels, int c, float input_scale, int32_t input_zero_point, float epsilon,
                           const float *scale, const float *shift, float output_scale, int32_t output_zero_point,
                           int32_t max_level, uint8_t *y);

/// Copies `cx` bytes of each of `pixels` pixels of `x` (rows of `ldx` bytes) into rows of `cy` bytes of `y` (a channel
/// concatenation writes each input at its channel offset, a channel slice reads from its first channel), mapped
/// through a 256-entry `table` when the input's quantization differs from the output's (NULL: copied as they are).
void kiln_qu8_copy_channels(const uint8_t *x, int ldx, int pixels, int cx, const uint8_t *table, uint8_t *y, int cy);

/// Output row `oy` (w·scale_w pixels of c bytes) of nearest-neighbour upsampling of one NHWC u8 image [h][w][c] by
/// whole factors: every output pixel copies the input pixel it falls in.
void kiln_qu8_upsample_nearest(const uint8_t *x, int h, int w, int c, int scale_h, int scale_w, int oy, uint8_t *y);

/// Output row `oy` (ow = (w−1)·stride_w + 1 pixels of c bytes) of an NHWC u8 image [h][w][c] spread with `zero`
/// between its pixels: input pixel (iy, ix) lands at (iy·stride_h, ix·stride_w).
void kiln_qu8_insert_zeros(const uint8_t *x, int w, int c, int stride_h, int stride_w, uint8_t zero, int oy, int ow, uint8_t *y);

/// One output row of a bilinear resize of an NHWC u8 image [h][w][c] on its levels: input rows y0 and y1 (weight fy
/// for y1), columns x0[ox] and x1[ox] (weight fx[ox] for x1) per output pixel; level =
/// rint((1 − fy)·((1 − fx)·a + fx·b) + fy·((1 − fx)·c + fx·d)) in float32 in that order, clamped to 0 ... max_level.
void kiln_qu8_resize_linear_row(const uint8_t *x, int w, int c, int y0, int y1, float fy, const int32_t *x0, const int32_t *x1,
                                const float *fx, int ow, int32_t max_level, uint8_t *y);

/// Channel permutation of `pixels` rows of `c` bytes: y[p][j] = x[p][permutation[j]].
void kiln_qu8_permute_channels(const uint8_t *x, int pixels, int c, const int32_t *permutation, uint8_t *y);

/// Quantizes one float sample stored NCHW ([c][plane]) to u8 stored NHWC ([plane][c]):
/// q = clamp(rint(x / scale) + zero_point, 0, 255), 255 or 0 for ±infinity, 0 for NaN.
typedef void kiln_qu8_quantize_nchw_kernel(const float *x, int c, int plane, float scale, int32_t zero_point, uint8_t *y);
typedef kiln_qu8_quantize_nchw_kernel *kiln_qu8_quantize_fn;

/// The quantizer variant for an ISA.
kiln_qu8_quantize_fn kiln_qu8_quantize_nchw_for(int isa);

/// Geometry of a depthwise convolution of any kernel size over one NHWC u8 image [h][w][c], for output rows of `ow`
/// pixels.
typedef struct {
    int h, w, c, kh, kw, stride_h, stride_w, pad_top, pad_left, dilation_h, dilation_w, ow;
} kiln_dwconv_geometry;

/// Depthwise convolution of any kernel size, stride, dilation and padding: output row `oy` of one image, all `ow`
/// pixels and `c` channels; weights are [kh·kw][c] int8 (tap-major); padding cells hold `input_zero`.
typedef void kiln_qu8s8_dwconv_kernel(const uint8_t *x, const kiln_dwconv_geometry *g, int oy, uint8_t input_zero,
                                      const int8_t *weights, uint8_t *y, const kiln_requant *rq);
typedef kiln_qu8s8_dwconv_kernel *kiln_qu8s8_dwconv_fn;

/// The general depthwise variant for an ISA.
kiln_qu8s8_dwconv_fn kiln_qu8s8_dwconv_for(int isa);

/// A pointwise function on u8 levels as a 256-entry table: y[i] = table[x[i]] for i < n; `y` may be `x` (in place).
typedef void kiln_qu8_lookup_kernel(size_t n, const uint8_t *x, const uint8_t *table, uint8_t *y);
typedef kiln_qu8_lookup_kernel *kiln_qu8_lookup_fn;

/// The lookup variant for an ISA.
kiln_qu8_lookup_fn kiln_qu8_lookup_for(int isa);

/// Every kernel of the list, declared with its family's type.
#define KILN_KERNEL(family, name, isa) kiln_##family##_kernel name;
#include "../kiln_kernel_list.inc"
#undef KILN_KERNEL

/// One entry of the kernel list: its family ("qu8s8_igemm", ...), name, ISA and function (cast to the family's
/// type to call it).
typedef struct {
    const char *family;
    const char *name;
    int isa;
    void (*function)(void);
} kiln_kernel_info;

/// Number of kernels compiled for this architecture, and entry `index` of the list (NULL when out of range).
int kiln_kernel_count(void);
const kiln_kernel_info *kiln_kernel_at(int index);

/// A persistent pool of worker threads for intra-op parallelism.
typedef struct kiln_pool kiln_pool;
/// Starts `threads - 1` workers (the caller is the last one); NULL on failure.
kiln_pool *kiln_pool_create(int threads);
void kiln_pool_destroy(kiln_pool *pool);
int kiln_pool_threads(const kiln_pool *pool);
/// Calls task(context, begin, end, worker) on contiguous chunks covering 0..<count, one chunk per thread (`worker`
/// is the chunk's thread, 0..<threads); returns when all are done. Not reentrant: one parallel_for per pool at a time.
void kiln_pool_parallel_for(kiln_pool *pool, int count, void (*task)(void *context, int begin, int end, int worker),
                            void *context);

#ifdef __cplusplus
}
#endif

#endif
