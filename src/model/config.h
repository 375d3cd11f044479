/* config.h - the architecture of each network, read from the model folder's
 * config.json files (diffusers / transformers conventions).
 *
 * Every value comes from the files; a missing key takes the class default
 * of diffusers / transformers (sd-reference.md 1.6). Features of those
 * classes that Stable Diffusion 1.x/2.x checkpoints do not use (class
 * embeddings, dual cross-attention, ...) are rejected as unsupported, naming
 * the key, rather than silently ignored.
 */
#ifndef SD_CONFIG_H
#define SD_CONFIG_H

#include "util/err.h"

#define CFG_MAX_BLOCKS 8

/* UNet2DConditionModel */
struct unet_config {
    int in_channels, out_channels;
    int sample_size;
    int n_blocks;                          /* len(block_out_channels) */
    int block_out[CFG_MAX_BLOCKS];
    int down_attn[CFG_MAX_BLOCKS];         /* 1: CrossAttnDownBlock2D, 0: DownBlock2D */
    int up_attn[CFG_MAX_BLOCKS];           /* 1: CrossAttnUpBlock2D, 0: UpBlock2D */
    int layers_per_block;
    int heads[CFG_MAX_BLOCKS];             /* per down level (num_attention_heads, see 2.1) */
    int transformer_layers[CFG_MAX_BLOCKS];/* transformer_layers_per_block */
    int cross_attention_dim;
    int norm_groups;
    float norm_eps;
    int use_linear_projection;
    int upcast_attention;                  /* no effect in float32 */
    int flip_sin_to_cos;
    float freq_shift;
    int time_cond_proj_dim;                /* 0: none (LCM-distilled UNets set it) */
    /* addition_embed_type "text_time" (SDXL): add_embedding.linear_1 reads
     * the pooled text embedding and 6 micro-conditioning values, each as an
     * addition_time_embed_dim-wide sinusoid; 0 when absent. */
    int addition_time_embed_dim;
    int projection_class_embeddings_input_dim;
    int mid_block;                         /* 1: UNetMidBlock2DCrossAttn, 0: none */
    int conv_in_kernel, conv_out_kernel;
};

/* AutoencoderKL */
struct vae_config {
    int in_channels, out_channels, latent_channels;
    int n_blocks;
    int block_out[CFG_MAX_BLOCKS];
    int layers_per_block;
    int norm_groups;
    float scaling_factor;
    float shift_factor;                    /* 0 for SD */
    int sample_size;
    int use_quant_conv, use_post_quant_conv;
    int mid_attn;                          /* mid_block_add_attention */
};

enum clip_act { CLIP_QUICK_GELU, CLIP_GELU };

/* CLIPTextModel / CLIPTextModelWithProjection */
struct clip_config {
    int hidden, intermediate, heads, layers;
    int max_positions, vocab_size;
    float eps;
    enum clip_act act;
    int eos_token_id;        /* 2 (the old configs): pool at argmax(ids) */
    int projection_dim;
    int with_projection;     /* CLIPTextModelWithProjection: text_projection */
};

int unet_config_load(struct unet_config *c, const char *path, struct sd_err *err);
int vae_config_load(struct vae_config *c, const char *path, struct sd_err *err);
int clip_config_load(struct clip_config *c, const char *path, struct sd_err *err);

#endif
