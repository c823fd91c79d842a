/* kiln.h — C API of KilnRuntime, the embedded int8 runtime of Kiln (link with -lkilnrt, built by `swift build -c release --product kilnrt`).
 *
 * A model is loaded and validated once (kiln_model_open_file / kiln_model_open_memory) and is then immutable: any
 * number of threads may share it. Each thread runs it through its own context (kiln_context_create), which owns
 * the activation memory, so repeated kiln_run calls on one context allocate nothing once the batch size is stable.
 * Tensors are float32 in the teacher's layout (e.g. N × C × H × W); the first dimension is the batch (-1 in the
 * shapes reported here).
 *
 * Every function that can fail returns KILN_OK (0) or an error code and, when `error` is not NULL, stores a
 * message (naming the file, byte offset or tensor at fault) that the caller releases with kiln_string_free.
 * No function aborts the process on bad input.
 *
 * Kernels are chosen at load from a CPU probe. The environment variable KILN_ISA (scalar, avx2, avxvnni,
 * avx512vnni, neondot, reference) forces a lower variant for comparison; a variant this CPU cannot run makes
 * loading fail with KILN_ERROR_RUNTIME.
 *
 *     kiln_model *model; char *error = NULL;
 *     if (kiln_model_open_file("student.kiln", 0, &model, &error) != KILN_OK) { fprintf(stderr, "%s\n", error); ... }
 *     kiln_context *context; kiln_context_create(model, &context, &error);
 *     const float *in[] = { pixels }; float *out[] = { logits };
 *     kiln_run(context, in, out, batch, &error);
 *     kiln_context_free(context); kiln_model_free(model);
 */
#ifndef KILN_H
#define KILN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kiln_model kiln_model;
typedef struct kiln_context kiln_context;

typedef enum kiln_status {
    KILN_OK = 0,
    KILN_ERROR_INVALID_ARGUMENT = 1, /* NULL pointer, index out of range, zero batch */
    KILN_ERROR_FORMAT = 2,           /* the .kiln file or buffer is missing, truncated, corrupt or unsupported */
    KILN_ERROR_RUNTIME = 3           /* the model cannot run as asked (e.g. CPU lacks the kernels) */
} kiln_status;

/** Version of the runtime, e.g. "kiln 0.6". The string is static. */
const char *kiln_version(void);

/** Loads and validates a .kiln file. `threads`: worker threads per context, 0 for one per core. */
kiln_status kiln_model_open_file(const char *path, int threads, kiln_model **model, char **error);

/** Loads and validates a .kiln image held in memory (copied; the buffer may be freed afterwards). */
kiln_status kiln_model_open_memory(const void *data, size_t size, int threads, kiln_model **model, char **error);

/** Releases a model. Its contexts must be freed first. NULL is ignored. */
void kiln_model_free(kiln_model *model);

/** Number of inputs / outputs. */
size_t kiln_model_input_count(const kiln_model *model);
size_t kiln_model_output_count(const kiln_model *model);

/** Name of input / output `index` (NULL if out of range); valid while the model lives. */
const char *kiln_model_input_name(const kiln_model *model, size_t index);
const char *kiln_model_output_name(const kiln_model *model, size_t index);

/** Shape of input / output `index`: its rank, and (if `dims` is not NULL) up to `capacity` dimensions written to
 *  `dims`, the first being -1 (the batch). Returns 0 if `index` is out of range. */
size_t kiln_model_input_shape(const kiln_model *model, size_t index, int64_t *dims, size_t capacity);
size_t kiln_model_output_shape(const kiln_model *model, size_t index, int64_t *dims, size_t capacity);

/** Floats in one sample of input / output `index` (the product of its dimensions after the first); 0 if out of range. */
size_t kiln_model_input_sample_size(const kiln_model *model, size_t index);
size_t kiln_model_output_sample_size(const kiln_model *model, size_t index);

/** Creates a context for one thread at a time. */
kiln_status kiln_context_create(kiln_model *model, kiln_context **context, char **error);

/** Releases a context. NULL is ignored. */
void kiln_context_free(kiln_context *context);

/** Runs `batch` samples: `inputs[i]` holds batch × input_sample_size(i) floats, `outputs[i]` receives
 *  batch × output_sample_size(i) floats (outputs are dequantized). */
kiln_status kiln_run(kiln_context *context, const float *const *inputs, float *const *outputs, size_t batch, char **error);

/** Runs one 8-bit image of any size: `pixels` holds `height` rows top to bottom, `stride` bytes apart (0: width ×
 *  channels), channels interleaved (1 = gray, 3 = RGB). The image is preprocessed as the student records
 *  (kiln_model_image_preprocessing: color, shorter side resized, center crop) and quantized straight from its
 *  pixels with the recorded normalization fused into the input quantizer — no float tensor in between.
 *  `outputs[i]` receives output_sample_size(i) floats. Unlike kiln_run it allocates (the resized image) on every
 *  call. KILN_ERROR_RUNTIME when the student records no
 *  preprocessing or normalization (students made before pixel input, or whose input is not an image). */
kiln_status kiln_run_image(kiln_context *context, const uint8_t *pixels, size_t width, size_t height, size_t channels,
                           size_t stride, float *const *outputs, char **error);

/** The metadata value of `key` (e.g. "kiln.input_mean", "kiln.teacher"), NULL if absent; valid while the model
 *  lives. */
const char *kiln_model_metadata(const kiln_model *model, const char *key);

/** Number of metadata entries, and the key of entry `index` in sorted order (NULL if out of range). */
size_t kiln_model_metadata_count(const kiln_model *model);
const char *kiln_model_metadata_key(const kiln_model *model, size_t index);

/** The input normalization, x = (pixel / 255 - mean[c]) / std[c]: writes up to `capacity` values each to `mean`
 *  and `std` (either may be NULL) and returns how many there are (1 for all channels alike, or one per channel);
 *  0 when the student records none. */
size_t kiln_model_input_normalization(const kiln_model *model, float *mean, float *std, size_t capacity);

/** The image preprocessing: shorter side resized to `resize`, center crop `crop_height` × `crop_width`,
 *  `channels` (1 gray, 3 color) and `bgr` (1 when the model takes BGR order); any pointer may be NULL. Returns 1,
 *  or 0 when the student records none. */
int kiln_model_image_preprocessing(const kiln_model *model, int *resize, int *crop_height, int *crop_width,
                                   int *channels, int *bgr);

/** Number of class names the student records (kiln.class_names, one per output index; 0 when none), and name
 *  `index` (NULL if out of range); valid while the model lives. */
size_t kiln_model_class_count(const kiln_model *model);
const char *kiln_model_class_name(const kiln_model *model, size_t index);

/** The kernel variant the model runs ("avx512vnni", "avx2", "scalar", ...); valid while the model lives. */
const char *kiln_model_isa(const kiln_model *model);

/** Releases an error message. NULL is ignored. */
void kiln_string_free(char *string);

#ifdef __cplusplus
}
#endif

#endif /* KILN_H */
