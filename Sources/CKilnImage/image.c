#include "kiln_image.h"

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <png.h>

static int fail(char *error, size_t error_size, const char *message) {
    if (error_size > 0) snprintf(error, error_size, "%s", message);
    return 1;
}

/* PNG through libpng's simplified API, which reports errors in the image structure instead of by longjmp. */
static int decode_png(const unsigned char *data, size_t size, kiln_decoded_image *image, char *error,
                      size_t error_size) {
    png_image png;
    memset(&png, 0, sizeof png);
    png.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_memory(&png, data, size)) return fail(error, error_size, png.message);
    int gray = (png.format & PNG_FORMAT_FLAG_COLOR) == 0;
    /* Alpha is dropped as PIL's convert does: read with alpha, then keep the color samples. */
    png.format = gray ? PNG_FORMAT_GA : PNG_FORMAT_RGBA;
    int stride_channels = gray ? 2 : 4, channels = gray ? 1 : 3;
    size_t count = (size_t)png.width * png.height;
    if (png.width == 0 || png.height == 0 || count > ((size_t)1 << 28)) {
        png_image_free(&png);
        return fail(error, error_size, "image dimensions are zero or larger than 2^28 pixels");
    }
    unsigned char *read = malloc(count * stride_channels);
    unsigned char *pixels = malloc(count * channels);
    if (!read || !pixels) {
        free(read);
        free(pixels);
        png_image_free(&png);
        return fail(error, error_size, "out of memory");
    }
    if (!png_image_finish_read(&png, NULL, read, 0, NULL)) {
        free(read);
        free(pixels);
        return fail(error, error_size, png.message);
    }
    for (size_t i = 0; i < count; i++)
        for (int c = 0; c < channels; c++) pixels[i * channels + c] = read[i * stride_channels + c];
    free(read);
    image->pixels = pixels;
    image->width = (int)png.width;
    image->height = (int)png.height;
    image->channels = channels;
    png_image_free(&png);
    return 0;
}

/* libjpeg reports errors through error_exit, which must not return: it jumps back here with the message. */
struct jpeg_failure {
    struct jpeg_error_mgr manager;
    jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
};

static void jpeg_error_exit(j_common_ptr info) {
    struct jpeg_failure *failure = (struct jpeg_failure *)info->err;
    (*info->err->format_message)(info, failure->message);
    longjmp(failure->jump, 1);
}

static void jpeg_quiet(j_common_ptr info, int level) {
    (void)info;
    (void)level;
}

static int decode_jpeg(const unsigned char *data, size_t size, kiln_decoded_image *image, char *error,
                       size_t error_size) {
    struct jpeg_decompress_struct info;
    struct jpeg_failure failure;
    unsigned char *volatile pixels = NULL;
    info.err = jpeg_std_error(&failure.manager);
    failure.manager.error_exit = jpeg_error_exit;
    failure.manager.emit_message = jpeg_quiet;
    if (setjmp(failure.jump)) {
        jpeg_destroy_decompress(&info);
        free(pixels);
        return fail(error, error_size, failure.message);
    }
    jpeg_create_decompress(&info);
    jpeg_mem_src(&info, data, (unsigned long)size);
    jpeg_read_header(&info, TRUE);
    if (info.jpeg_color_space == JCS_CMYK || info.jpeg_color_space == JCS_YCCK) {
        jpeg_destroy_decompress(&info);
        return fail(error, error_size, "CMYK JPEG images are not supported (convert to RGB)");
    }
    int gray = info.jpeg_color_space == JCS_GRAYSCALE;
    info.out_color_space = gray ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_start_decompress(&info);
    size_t width = info.output_width, height = info.output_height, channels = info.output_components;
    if (width == 0 || height == 0 || width * height > ((size_t)1 << 28)) {
        jpeg_destroy_decompress(&info);
        return fail(error, error_size, "image dimensions are zero or larger than 2^28 pixels");
    }
    pixels = malloc(width * height * channels);
    if (!pixels) {
        jpeg_destroy_decompress(&info);
        return fail(error, error_size, "out of memory");
    }
    while (info.output_scanline < info.output_height) {
        JSAMPROW row = pixels + (size_t)info.output_scanline * width * channels;
        jpeg_read_scanlines(&info, &row, 1);
    }
    jpeg_finish_decompress(&info);
    jpeg_destroy_decompress(&info);
    image->pixels = pixels;
    image->width = (int)width;
    image->height = (int)height;
    image->channels = (int)channels;
    return 0;
}

int kiln_image_decode(const unsigned char *data, size_t size, kiln_decoded_image *image, char *error,
                      size_t error_size) {
    static const unsigned char png_signature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    memset(image, 0, sizeof *image);
    if (size >= 8 && memcmp(data, png_signature, 8) == 0) return decode_png(data, size, image, error, error_size);
    if (size >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF)
        return decode_jpeg(data, size, image, error, error_size);
    return fail(error, error_size, "not a PNG or JPEG file (unknown signature)");
}

void kiln_image_free(kiln_decoded_image *image) {
    free(image->pixels);
    image->pixels = NULL;
}
