/* winograd.h - 3x3 stride-1 convolutions by Winograd's F(2x2, 3x3).
 *
 * Each 2x2 block of output pixels is computed from a 4x4 input tile with
 * 16 products per channel pair instead of 36: the input tiles and the
 * weights are transformed (B^T d B, G g G^T), multiplied as 16 matrix
 * products [tiles x cin] x [cin x cout] (oneDNN in float32, gemm_bf16.h
 * in bf16), and transformed back (A^T m A). 2.25x fewer multiply-adds
 * than the direct convolution, for transformed weights 16/9 the size of
 * the originals; so it is used where there are many pixels per weight
 * (the UNet's levels down to 1/4 of the latent, the VAE; in bf16 every
 * level), and oneDNN's direct convolution in float32's innermost level,
 * where reading the larger weights would cost more than the multiply-adds
 * saved.
 *
 * The transforms only add, subtract and halve, so float32 results stay
 * within a few ulp-scale relative errors of the direct convolution (tested
 * against the reference backend). Tiles are processed in chunks so the
 * scratch stays a few MB whatever the image size.
 *
 * Same contract as the oneDNN convolution (ops_cpu.c dispatches): prepare
 * owns l->be_state and never reads l->w afterwards; plan in measure mode;
 * run allocates nothing.
 */
#ifndef SD_WINOGRAD_H
#define SD_WINOGRAD_H

#include <stdint.h>

#include "tensor/nn.h"

/* 1 when this layer takes the Winograd path (3x3, stride 1, padding 1,
 * channel counts multiples of 16, weights small enough for the pixels it
 * sees, in bf16 or float32). The environment variable
 * DIFFUSIOND_WINOGRAD=0 turns the path off (for comparisons). */
int winograd_eligible(const struct nn_conv2d *l, int mode);
/* 1 when be_state was made by winograd_prepare. */
int winograd_owns(const void *be_state);

/* mode 0: float32; 1: bf16; 2: float32 products with the transformed
 * weights held in bf16 and widened at each run (widen.h). */
int winograd_prepare(struct nn_conv2d *l, int mode, struct sd_err *err);
int winograd_plan(struct nn_conv2d *l, int B, int H, int W, int accumulate, struct sd_err *err);
size_t winograd_ws(const struct nn_conv2d *l, int B, int H, int W);
void winograd_run(const struct nn_conv2d *l, const float *in, float *out, int B, int H, int W,
                  int accumulate, float *ws);
/* The same from a bf16 input (a bf16-prepared layer; in16 [B,H,W,cin]). */
void winograd_run_in16(const struct nn_conv2d *l, const uint16_t *in16, float *out, int B, int H, int W,
                       int accumulate, float *ws);
size_t winograd_weight_bytes(const void *be_state);
void winograd_release(void **be_state);

#endif
