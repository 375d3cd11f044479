/* vae.h - the image autoencoder (diffusers' AutoencoderKL).
 *
 * sd-reference.md section 3. The decoder turns latents into an image (used
 * by text-to-image); the encoder turns an image into the latent
 * distribution (for img2img). Latents are NCHW as the pipeline keeps them;
 * images are channels-last [B, H, W, 3] floats in [-1, 1] (raw decoder
 * output, not clamped).
 */
#ifndef SD_VAE_H
#define SD_VAE_H

#include "model/blocks.h"
#include "model/config.h"

#define VAE_MAX_LAYERS 8

/* The single-head self-attention of the mid blocks. */
struct vae_attn {
    int C, groups;
    struct nn_norm norm;
    struct nn_linear q, k, v, o; /* [C, C] with bias */
};

struct vae_level {
    int n_res;
    struct resnet res[VAE_MAX_LAYERS];
    int has_sampler;
    struct nn_conv2d sampler; /* decoder: the upsampler as nn_upconv's 2x2 layer (blocks.h) */
};

struct vae_coder {
    struct nn_conv2d conv_in, conv_out;
    struct vae_level level[CFG_MAX_BLOCKS];
    struct resnet mid_res[2];
    struct vae_attn mid_attn;
    struct nn_norm norm_out;
    struct nn nn;
    int planned_h, planned_w; /* input size the arena is sized for */
};

struct vae {
    struct vae_config cfg;
    struct weights w;
    int has_encoder;
    int enc_loaded;                               /* encoder prepared (on first vae_encode) */
    struct nn_conv2d quant_conv, post_quant_conv; /* 1x1 */
    struct vae_coder dec, enc;
    int scale_factor;                             /* 2^(n_blocks-1) */
};

/* image_px: the image pixels (H x W) most calls will run at, 0 for the
 * config's sample_size squared (see unet_load). */
int vae_load(struct vae *v, const char *dir, const char *variant, const struct nn_backend *be,
             long image_px, struct sd_err *err);
/* The same from any source (a single-file checkpoint's VAE). */
int vae_load_src(struct vae *v, const struct weights_src *src, const struct nn_backend *be, long image_px,
                 struct sd_err *err);

/* image[H, W, out_channels] (H = h * scale_factor) from z[latent_channels, h, w],
 * batch 1. z is what the pipeline passes: latents / scaling_factor. */
int vae_decode(struct vae *v, const float *z, int h, int w, float *image, struct sd_err *err);
/* Size the decoder's activations and kernels for h x w latents now
 * (vae_decode does it when the size changes; allocates). */
int vae_prepare_decode(struct vae *v, int h, int w, struct sd_err *err);

/* Encoder: image[H, W, in_channels] in [-1, 1] -> mean and logvar
 * [latent_channels, H/f, W/f] (NCHW, logvar clamped to [-30, 20]). The
 * encoder's weights are prepared by the first call. */
int vae_encode(struct vae *v, const float *image, int H, int W, float *mean, float *logvar,
               struct sd_err *err);

void vae_free(struct vae *v);

#endif
