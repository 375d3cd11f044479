/* png.h - PNG images in memory, through libpng.
 *
 * Encoding is for generated images: 8-bit RGB, zlib level 6, with optional
 * text chunks such as the AUTOMATIC1111-style "parameters" chunk that image
 * viewers and other tools read back.
 *
 * Decoding is for untrusted uploads (img2img init images): any valid PNG
 * (gray, gray+alpha, palette, RGB, RGBA; 1 to 16 bits; interlaced) becomes
 * 8-bit RGB. Conversions match PIL's Image.convert("RGB") on the image
 * diffusers' load_image returns: alpha is dropped (not composited), 16-bit
 * samples keep their high byte (PIL agrees except for 16-bit grayscale,
 * which it clips to 255 instead), and gamma/ICC chunks are ignored. Sizes
 * are checked before any pixel memory is allocated; ancillary chunks are
 * limited to PNG_MAX_CHUNK bytes (compressed text included). Corrupt input
 * fails with SD_ERR_FORMAT, never a crash, a print or a leak.
 *
 * Not to be confused with libpng's <png.h>: include this one as
 * "util/png.h" (and libpng with angle brackets).
 */
#ifndef SD_UTIL_PNG_H
#define SD_UTIL_PNG_H

#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

/* Upper bound on width*height accepted by png_decode_rgb, whatever
 * max_side says (64 Mpixel = 192 MB of RGB). */
#define PNG_MAX_PIXELS (1L << 26)

/* Largest ancillary chunk (text, ICC profile...) the decoder will hold. */
#define PNG_MAX_CHUNK (8L << 20)

/* Encode w*h RGB pixels (row-major, 3 bytes each, no padding) as a PNG.
 * text_kv is NULL or a NULL-terminated list "key", "value", ...; keys are
 * 1-79 printable Latin-1 characters without leading, trailing or double
 * spaces. ASCII values go in tEXt chunks, others in (UTF-8) iTXt chunks.
 * On success *out is malloc'd (caller frees) and *out_len its size.
 * Errors: SD_ERR_ARG (sizes, keys), SD_ERR_NOMEM, SD_ERR_INTERNAL. */
int png_encode_rgb(const uint8_t *rgb, int w, int h, const char *const *text_kv,
                   uint8_t **out, size_t *out_len, struct sd_err *err);

/* Decode a PNG held in data[0..len) to 8-bit RGB. Rejects width or height
 * over max_side (> 0), or more than PNG_MAX_PIXELS pixels, with
 * SD_ERR_UNSUPPORTED; malformed or truncated data with SD_ERR_FORMAT.
 * On success *rgb is malloc'd (w*h*3 bytes, caller frees) and, if params is
 * non-NULL, *params is a malloc'd copy of the "parameters" text chunk
 * (tEXt, zTXt or iTXt) or NULL if there is none. On failure the outputs are
 * NULL/0. */
int png_decode_rgb(const uint8_t *data, size_t len, int max_side, uint8_t **rgb,
                   int *w, int *h, char **params, struct sd_err *err);

/* The same to 8-bit RGBA: alpha kept (tRNS expanded), 255 where the file
 * has none; *had_alpha (may be NULL) says whether it had any. */
int png_decode_rgba(const uint8_t *data, size_t len, int max_side, uint8_t **rgba,
                    int *w, int *h, int *had_alpha, struct sd_err *err);

/* Write len bytes to path atomically: a temporary file in the same
 * directory, fsync'd, mode 0644, renamed over path. Readers see the old
 * file or the whole new one, never a partial write. SD_ERR_IO on failure
 * (the temporary is removed). Works for any bytes, not only PNGs. */
int png_write_file(const char *path, const uint8_t *data, size_t len,
                   struct sd_err *err);

#endif
