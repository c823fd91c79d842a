#ifndef KILN_IMAGE_H
#define KILN_IMAGE_H

#include <stddef.h>

/// A decoded image: 8-bit pixels, rows top to bottom, channels interleaved (1 = gray, 3 = RGB).
typedef struct {
    unsigned char *pixels;
    int width;
    int height;
    int channels;
} kiln_decoded_image;

/// Decodes a PNG or JPEG file held in memory (the format is told by its signature) with libpng or libjpeg-turbo.
/// Gray images (with or without alpha) come out with 1 channel, everything else as RGB; alpha is dropped,
/// 16-bit samples are reduced to 8 bits, palettes expanded. Returns 0 and fills `image` (free it with
/// `kiln_image_free`), or nonzero with a message in `error` (at most `error_size` bytes, terminated).
int kiln_image_decode(const unsigned char *data, size_t size, kiln_decoded_image *image, char *error, size_t error_size);

/// Frees the pixels of an image `kiln_image_decode` filled.
void kiln_image_free(kiln_decoded_image *image);

#endif
