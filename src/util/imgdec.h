/* imgdec.h - input images (init images, masks) from PNG or JPEG bytes.
 *
 * PNG through libpng (png.h), JPEG through libjpeg-turbo; both to 8-bit RGB
 * rows. The dimensions are read and checked before any pixel memory is
 * allocated, so a small file that claims 20000 x 20000 pixels (a
 * decompression bomb) is refused at once. Untrusted bytes: fuzzed
 * (tests/fuzz/fuzz_image.c).
 */
#ifndef SD_IMGDEC_H
#define SD_IMGDEC_H

#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

/* Decode data[0..len) (PNG or JPEG, told apart by their signatures) into
 * *rgb (malloc'd, w * h * 3 bytes). max_side bounds width and height,
 * max_pixels their product. SD_ERR_FORMAT for anything else or a broken
 * file, SD_ERR_ARG for an image over the limits, SD_ERR_NOMEM. */
int image_decode_rgb(const uint8_t *data, size_t len, int max_side, long max_pixels, uint8_t **rgb, int *w,
                     int *h, struct sd_err *err);

/* The same for JPEG only. */
int jpeg_decode_rgb(const uint8_t *data, size_t len, int max_side, long max_pixels, uint8_t **rgb, int *w,
                    int *h, struct sd_err *err);

#endif
