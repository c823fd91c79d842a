/* kiln_classify: classifies an 8-bit image with a Kiln student from C, pixels straight into the runtime.
 *
 *   kiln_classify STUDENT.kiln IMAGE.pgm|IMAGE.ppm OUTPUT.f32
 *
 * IMAGE is a binary PGM (gray) or PPM (RGB) file of any size, as a camera frame or a decoded file would hand it
 * over: the student's recorded preprocessing (color, resize of the shorter side, center crop) and normalization
 * are applied inside the runtime (kiln_run_image). Prints what the student records (kernels, normalization,
 * preprocessing, class names, metadata) and the top class; writes the outputs to OUTPUT.f32 as raw float32.
 *
 *   gcc -std=c11 -Wall -Werror -Iinclude Examples/c/kiln_classify.c -L.build/release -lkilnrt \
 *       -Wl,-rpath,$PWD/.build/release -o kiln_classify
 */
#include "kiln.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Reads a binary PGM (P5) or PPM (P6) file with maximum value 255; returns the pixels or NULL. */
static unsigned char *read_pnm(const char *path, size_t *width, size_t *height, size_t *channels) {
    FILE *file = fopen(path, "rb");
    if (!file) return NULL;
    char magic[3] = {0};
    unsigned w = 0, h = 0, max = 0;
    if (fscanf(file, "%2s %u %u %u", magic, &w, &h, &max) != 4 || max != 255 || fgetc(file) == EOF ||
        (strcmp(magic, "P5") != 0 && strcmp(magic, "P6") != 0) || w == 0 || h == 0 || w > 65536 || h > 65536) {
        fclose(file);
        return NULL;
    }
    *width = w;
    *height = h;
    *channels = magic[1] == '5' ? 1 : 3;
    size_t size = (size_t)w * h * *channels;
    unsigned char *pixels = malloc(size);
    if (!pixels || fread(pixels, 1, size, file) != size) {
        free(pixels);
        pixels = NULL;
    }
    fclose(file);
    return pixels;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: kiln_classify STUDENT.kiln IMAGE.pgm|IMAGE.ppm OUTPUT.f32\n");
        return 2;
    }
    char *error = NULL;
    kiln_model *model = NULL;
    if (kiln_model_open_file(argv[1], 1, &model, &error) != KILN_OK) {
        fprintf(stderr, "open: %s\n", error);
        kiln_string_free(error);
        return 1;
    }
    printf("kernels %s\n", kiln_model_isa(model));
    float mean[4], std[4];
    size_t values = kiln_model_input_normalization(model, mean, std, 4);
    for (size_t i = 0; i < values && i < 4; i++) printf("normalization %zu mean %g std %g\n", i, mean[i], std[i]);
    int resize = 0, crop_height = 0, crop_width = 0, channels = 0, bgr = 0;
    if (kiln_model_image_preprocessing(model, &resize, &crop_height, &crop_width, &channels, &bgr))
        printf("preprocessing resize %d crop %dx%d channels %d bgr %d\n", resize, crop_height, crop_width, channels, bgr);
    printf("classes %zu\n", kiln_model_class_count(model));
    for (size_t i = 0; i < kiln_model_metadata_count(model); i++) {
        const char *key = kiln_model_metadata_key(model, i);
        if (strcmp(key, "kiln.class_names") != 0) printf("metadata %s = %s\n", key, kiln_model_metadata(model, key));
    }

    size_t width = 0, height = 0, image_channels = 0;
    unsigned char *pixels = read_pnm(argv[2], &width, &height, &image_channels);
    if (!pixels) {
        fprintf(stderr, "%s: not a binary PGM/PPM file with maximum value 255\n", argv[2]);
        kiln_model_free(model);
        return 1;
    }
    size_t count = kiln_model_output_sample_size(model, 0);
    float *output = malloc(count * sizeof(float));
    kiln_context *context = NULL;
    int status = 1;
    if (kiln_context_create(model, &context, &error) == KILN_OK) {
        float *outputs[] = {output};
        if (kiln_run_image(context, pixels, width, height, image_channels, 0, outputs, &error) == KILN_OK) {
            size_t best = 0;
            for (size_t i = 1; i < count; i++) if (output[i] > output[best]) best = i;
            const char *name = kiln_model_class_name(model, best);
            printf("top class %zu %s\n", best, name ? name : "(unnamed)");
            FILE *file = fopen(argv[3], "wb");
            status = !(file && fwrite(output, sizeof(float), count, file) == count);
            if (file) fclose(file);
        }
        /* A wrong channel count is refused with a message, not a crash. */
        if (kiln_run_image(context, pixels, width, height, 2, 0, outputs, NULL) != KILN_ERROR_INVALID_ARGUMENT) status = 1;
    }
    if (error) {
        fprintf(stderr, "run: %s\n", error);
        kiln_string_free(error);
    }
    kiln_context_free(context);
    kiln_model_free(model);
    free(output);
    free(pixels);
    return status;
}
