/* model.h - what a loaded sd_model holds (inside the engine; sd.h is the
 * public face).
 *
 * model.c loads it (a diffusers folder, or a single-file checkpoint with a
 * standard or given config), pipeline.c generates with it. One struct for
 * both families: SD 1.x/2.x (one text encoder) and SDXL (two, the second
 * with its pooled projection, and the UNet's micro-conditioning).
 */
#ifndef SD_MODEL_H
#define SD_MODEL_H

#include "model/checkpoint.h"
#include "model/clip.h"
#include "model/lora.h"
#include "model/prompt_cache.h"
#include "model/sched.h"
#include "model/tokenizer.h"
#include "model/unet.h"
#include "model/vae.h"
#include "sd.h"

enum sd_arch {
    SD_ARCH_SD,   /* StableDiffusionPipeline */
    SD_ARCH_SDXL, /* StableDiffusionXLPipeline */
};

/* A single-file checkpoint and its translators (checkpoint.h). */
struct sd_single {
    struct st_file *file;
    struct ckpt_info info;
    unsigned char *used;         /* per tensor: read by a loader */
    struct ckpt_map maps[4];     /* unet, vae, text encoder(s) */
    int n_maps;
};

struct sd_model {
    struct sd_model_info info;
    enum sd_arch arch;
    int force_zeros;               /* SDXL: empty negative prompt -> zero conditioning */
    struct tokenizer *tok, *tok2;  /* tok2, clip2: SDXL's second encoder */
    struct clip clip, clip2;
    struct unet unet;
    struct vae vae;
    struct sd_single single;       /* file == NULL for a diffusers folder */
    struct sd_single vae_file;     /* --vae FILE */
    char vae_dir[1024], vae_leaf[256]; /* --vae DIR, split for weights_src */
    struct sched_config sched_cfg; /* the model's scheduler_config.json */
    struct prompt_cache prompts;   /* text-encoder outputs by prompt */
    struct lora_state lora;        /* the LoRA set merged into the weights now */
    int ctx_dim;                   /* conditioning width (SDXL: both encoders) */
    int pooled_dim;                /* SDXL pooled text embedding, else 0 */
    struct arena arena;            /* activations of all the networks */
    /* Pipeline buffers, sized for buf_n images of buf_h x buf_w latents. */
    int buf_h, buf_w, buf_n;
    float *ctx;       /* [2N, T, ctx_dim]: uncond x N, cond x N */
    float *pooled;    /* [2N, pooled_dim] (SDXL) */
    float *latents;   /* [N, C, h, w] */
    float *unet_in;   /* [2N, unet in_channels, h, w] */
    float *unet_out;  /* [2N, C, h, w] */
    float *image;     /* [H, W, 3] decoder output */
    int have_latents; /* latents hold the last generation's result */
};

/* The scheduler behind each sd_scheduler (pipeline.c). */
enum sched_kind sd_sched_kind(enum sd_scheduler s, int *karras);

void sd_free_buffers(sd_model *m);

#endif
