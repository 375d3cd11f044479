/* blocks.h - building blocks shared by the networks: loading layers from a
 * weights file, and diffusers' ResnetBlock2D.
 *
 * All activations are channels-last (see tensor/nn.h).
 */
#ifndef SD_BLOCKS_H
#define SD_BLOCKS_H

#include <limits.h>

#include "model/weights.h"
#include "tensor/nn.h"

/* "<prefix>.weight" [out, in] and, when bias, "<prefix>.bias" [out]. A 1x1
 * convolution stored as [out, in, 1, 1] is loaded as a Linear when conv1x1. */
void load_linear(struct weights *w, struct nn_linear *l, const char *prefix, int in, int out,
                 int bias, int conv1x1);
/* nn_conv2d.px from a pixel count (saturating: configs allow sides up to
 * 65536). Set w->conv_px to it before load_conv. */
static inline int conv_px(long px)
{
    return px > INT_MAX ? INT_MAX : (int)px;
}

/* n linears of the file ("<base>.<names[i]>.weight" [out, in], .bias)
 * loaded as one [n*out, in] layer: products that share an input
 * (attention's q, k, v) run as one wider product, output row r holding
 * layer i's outputs at columns i*out .. i*out+out-1. */
#define LINEAR_MAX_STACK 3
void load_linear_stacked(struct weights *w, struct nn_linear *l, const char *base,
                         const char *const *names, int n, int in, int out, int bias);
/* "<prefix>.weight" [out, in, k, k], "<prefix>.bias" [out]; stride/padding. */
void load_conv(struct weights *w, struct nn_conv2d *c, const char *prefix, int in, int out, int k,
               int stride, int pad_lo, int pad_hi);
/* The 3x3 convolution "<prefix>" that follows a nearest 2x upsampling
 * (diffusers' Upsample2D), loaded as the 2x2 layer nn_upconv runs on the
 * small image (nn.h): weights recast once, owned by w. Set w->conv_px to
 * the small image's pixels. Not a LoRA target (the VAE has none; the
 * UNet's upsamplers are loaded with load_conv). */
void load_upconv(struct weights *w, struct nn_conv2d *c, const char *prefix, int in, int out);
void load_norm(struct weights *w, struct nn_norm *n, const char *prefix, int c);

/* diffusers ResnetBlock2D (time_embedding_norm "default", output scale 1):
 *   h = conv1(silu(norm1(x))) (+ time_emb_proj(silu(emb)) per channel)
 *   out = shortcut(x) + conv2(silu(norm2(h)))                              */
struct resnet {
    int cin, cout, groups;
    float eps;
    struct nn_norm norm1, norm2;
    struct nn_conv2d conv1, conv2;
    struct nn_conv2d shortcut; /* 1x1, only when cin != cout */
    int has_shortcut;
    struct nn_linear temb;     /* time_emb_proj, only in the UNet */
    int has_temb;
};

/* temb_dim 0: no time embedding (VAE). */
void resnet_load(struct weights *w, struct resnet *r, const char *prefix, int cin, int cout,
                 int temb_dim, int groups, float eps);
/* out[B,H,W,cout] from x[B,H,W,cin]; emb_act: silu(time embedding) [B, temb_dim]
 * or NULL. out may be x when the block has no shortcut convolution (x is
 * then overwritten). Temporaries come from nn's arena and are released. */
void resnet_forward(struct nn *nn, struct resnet *r, const float *x, float *out, int B, int H, int W,
                    const float *emb_act);
void resnet_release(const struct nn_backend *be, struct resnet *r);

/* Measure-mode planning (nn.h): run pass(arg) with the arena measuring, then
 * allocate the activation memory it needs. */
int nn_prepare(struct nn *nn, void (*pass)(void *arg), void *arg, struct sd_err *err);

#endif
