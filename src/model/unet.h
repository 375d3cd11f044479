/* unet.h - the noise predictor (diffusers' UNet2DConditionModel).
 *
 * sd-reference.md section 2. Input latents [B, C, h, w] (NCHW, as the
 * scheduler keeps them), one timestep for the whole batch, the text
 * conditioning [B, T, D]; output the model prediction [B, C, h, w]
 * (epsilon or v, as the model was trained). Internally channels-last.
 */
#ifndef SD_UNET_H
#define SD_UNET_H

#include "model/blocks.h"
#include "model/config.h"

#define UNET_MAX_LAYERS 8 /* resnets per block (layers_per_block + 1) */

struct tblock { /* BasicTransformerBlock */
    struct nn_norm norm1, norm2, norm3;
    struct nn_linear qkv1, o1;        /* self-attention (to_q, to_k, to_v stacked) */
    struct nn_linear q2, k2, v2, o2;  /* cross-attention */
    struct nn_linear ff1, ff2;        /* GEGLU feed-forward */
    float *kv;                        /* cross-attention keys, then values: [2][B, T, C] (in unet.kv) */
};

struct transformer { /* Transformer2DModel */
    int C, heads, n_blocks, groups;
    struct nn_norm norm;
    struct nn_linear proj_in, proj_out; /* a 1x1 conv (SD1) is the same math */
    struct tblock *blocks;
};

struct unet_block {
    int n_res;
    struct resnet res[UNET_MAX_LAYERS];
    int has_attn;
    struct transformer attn[UNET_MAX_LAYERS];
    int has_sampler;                  /* downsampler / upsampler */
    struct nn_conv2d sampler;
};

struct unet {
    struct unet_config cfg;
    struct weights w;
    int temb_dim;                     /* 4 * block_out[0] */
    struct nn_conv2d conv_in, conv_out;
    struct nn_linear time1, time2, cond_proj;
    struct nn_linear add1, add2;      /* add_embedding (SDXL "text_time") */
    struct nn_norm norm_out;
    struct unet_block down[CFG_MAX_BLOCKS], up[CFG_MAX_BLOCKS];
    struct resnet mid_res[2];
    struct transformer mid_attn;
    struct nn nn;
    int planned_B, planned_h, planned_w, planned_T; /* what the arena is sized for */
    /* Cross-attention keys and values depend on the context only, which a
     * generation passes unchanged to every step: they are computed at the
     * first step and whenever the context differs from kv_ctx (compared
     * by value), and reused otherwise. Owned; sized by unet_prepare. */
    float *kv_buf, *kv_ctx;
    size_t kv_bytes, kv_ctx_n;
    int kv_valid;
};

/* latent_px: the latent pixels (h x w) most calls will run at, 0 for the
 * config's sample_size squared; the backend picks each convolution's
 * algorithm for it (nn_conv2d.px). Any size still runs. */
int unet_load(struct unet *u, const char *dir, const char *variant, const struct nn_backend *be,
              long latent_px, struct sd_err *err);
/* The same from any source (a single-file checkpoint's UNet). */
int unet_load_src(struct unet *u, const struct weights_src *src, const struct nn_backend *be, long latent_px,
                  struct sd_err *err);

/* Size activations and kernels for this batch, latent size and context
 * length; called by unet_forward when they change (allocates). */
int unet_prepare(struct unet *u, int B, int h, int w, int T, struct sd_err *err);

/* Conditioning besides the text: what a UNet's config asks for. */
struct unet_cond {
    const float *tcond;       /* [time_cond_proj_dim] guidance embedding (LCM-distilled UNets) */
    const float *text_embeds; /* SDXL: [B, pooled width] pooled text embedding per batch entry */
    const float *time_ids;    /* SDXL: [B, 6] original h, w, crop top, left, target h, w */
};

/* out[B, out_channels, h, w] = unet(sample[B, in_channels, h, w], t, ctx[B, T, D]).
 * cond: NULL for SD 1.x/2.x UNets; SDXL's needs text_embeds and time_ids. */
int unet_forward(struct unet *u, const float *sample, float t, const float *ctx, int T,
                 const struct unet_cond *cond, float *out, int B, int h, int w, struct sd_err *err);

void unet_free(struct unet *u);

#endif
