/* kiln_predict: runs a Kiln student from C through kiln.h.
 *
 *   kiln_predict STUDENT.kiln INPUT.f32 OUTPUT.f32 BATCH
 *
 * INPUT.f32 holds BATCH samples of the model's single input as raw little-endian float32; the logits are written
 * to OUTPUT.f32 the same way. The model is opened twice, from the file and from a memory copy of it, and both
 * must give identical outputs; a corrupt buffer must be refused with an error message. Exit status 0 on success.
 *
 *   gcc -std=c11 -Wall -Werror -Iinclude Examples/c/kiln_predict.c -L.build/release -lkilnrt \
 *       -Wl,-rpath,$PWD/.build/release -o kiln_predict
 */
#include "kiln.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *read_all(const char *path, size_t *size) {
    FILE *file = fopen(path, "rb");
    if (!file) return NULL;
    fseek(file, 0, SEEK_END);
    long length = ftell(file);
    fseek(file, 0, SEEK_SET);
    void *data = malloc(length > 0 ? (size_t)length : 1);
    *size = fread(data, 1, (size_t)length, file);
    fclose(file);
    return data;
}

static int run(kiln_model *model, const float *input, float *output, size_t batch) {
    char *error = NULL;
    kiln_context *context = NULL;
    if (kiln_context_create(model, &context, &error) != KILN_OK) {
        fprintf(stderr, "context: %s\n", error);
        kiln_string_free(error);
        return 1;
    }
    const float *inputs[] = {input};
    float *outputs[] = {output};
    /* Twice on one context: the second run reuses its memory and must give the same answer. */
    for (int pass = 0; pass < 2; pass++) {
        if (kiln_run(context, inputs, outputs, batch, &error) != KILN_OK) {
            fprintf(stderr, "run: %s\n", error);
            kiln_string_free(error);
            kiln_context_free(context);
            return 1;
        }
    }
    kiln_context_free(context);
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s STUDENT.kiln INPUT.f32 OUTPUT.f32 BATCH\n", argv[0]);
        return 2;
    }
    size_t batch = (size_t)strtoul(argv[4], NULL, 10);
    char *error = NULL;
    kiln_model *model = NULL;
    if (kiln_model_open_file(argv[1], 1, &model, &error) != KILN_OK) {
        fprintf(stderr, "open: %s\n", error);
        kiln_string_free(error);
        return 1;
    }
    if (kiln_model_input_count(model) != 1 || kiln_model_output_count(model) != 1) {
        fprintf(stderr, "expected one input and one output\n");
        return 1;
    }
    int64_t dims[8];
    size_t rank = kiln_model_input_shape(model, 0, dims, 8);
    printf("%s %s: input %s [", kiln_version(), argv[1], kiln_model_input_name(model, 0));
    for (size_t i = 0; i < rank; i++) printf(i ? ", %lld" : "%lld", (long long)dims[i]);
    printf("], output %s with %zu values per sample\n", kiln_model_output_name(model, 0), kiln_model_output_sample_size(model, 0));
    if (kiln_model_input_name(model, 1) != NULL || kiln_model_input_shape(model, 5, dims, 8) != 0) {
        fprintf(stderr, "out-of-range index not refused\n");
        return 1;
    }

    size_t in_size = 0;
    float *input = read_all(argv[2], &in_size);
    size_t in_count = batch * kiln_model_input_sample_size(model, 0);
    if (!input || in_size != in_count * sizeof(float)) {
        fprintf(stderr, "%s: expected %zu float32 values\n", argv[2], in_count);
        return 1;
    }
    size_t out_count = batch * kiln_model_output_sample_size(model, 0);
    float *from_file = calloc(out_count, sizeof(float)), *from_memory = calloc(out_count, sizeof(float));
    if (run(model, input, from_file, batch)) return 1;

    size_t size = 0;
    unsigned char *image = read_all(argv[1], &size);
    kiln_model *copy = NULL;
    if (kiln_model_open_memory(image, size, 0, &copy, &error) != KILN_OK) {
        fprintf(stderr, "open from memory: %s\n", error);
        return 1;
    }
    if (run(copy, input, from_memory, batch)) return 1;
    if (memcmp(from_file, from_memory, out_count * sizeof(float)) != 0) {
        fprintf(stderr, "outputs differ between the file and the memory copy\n");
        return 1;
    }
    /* A corrupt image is refused with a message, not a crash. */
    image[size / 2] ^= 0x5A;
    kiln_model *broken = NULL;
    if (kiln_model_open_memory(image, size, 0, &broken, &error) == KILN_OK || broken != NULL || error == NULL) {
        fprintf(stderr, "a corrupt buffer was accepted\n");
        return 1;
    }
    printf("corrupt buffer refused: %s\n", error);
    kiln_string_free(error);

    FILE *out = fopen(argv[3], "wb");
    if (!out || fwrite(from_file, sizeof(float), out_count, out) != out_count) {
        fprintf(stderr, "%s: cannot write\n", argv[3]);
        return 1;
    }
    fclose(out);
    kiln_model_free(copy);
    kiln_model_free(model);
    free(image);
    free(input);
    free(from_file);
    free(from_memory);
    return 0;
}
