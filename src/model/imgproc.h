/* imgproc.h - what diffusers' VaeImageProcessor does to an input image
 * before the VAE sees it, on 8-bit pixels, as PIL computes it.
 *
 * diffusers resizes init images and masks with PIL's Image.resize(...,
 * LANCZOS) and turns masks to grayscale with Image.convert("L"); these are
 * the same integer computations (Pillow's Resample.c: separable Lanczos-3
 * with 22-bit fixed-point coefficients, horizontal pass first, an 8-bit
 * image in between; Convert.c's ITU-R 601 luma), so an image resized here
 * has the bytes PIL gives. */
#ifndef SD_IMGPROC_H
#define SD_IMGPROC_H

#include <stdint.h>

/* dst[dh][dw][ch] = src[sh][sw][ch] resized with PIL's LANCZOS filter.
 * Returns 0, or -1 when out of memory. */
int img_resize_lanczos(const uint8_t *src, int sw, int sh, int ch, uint8_t *dst, int dw, int dh);

/* PIL's "RGB" -> "L": (R*19595 + G*38470 + B*7471 + 0x8000) >> 16. */
void img_rgb_to_gray(const uint8_t *rgb, long npix, uint8_t *gray);

#endif
