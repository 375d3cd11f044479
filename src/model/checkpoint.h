/* checkpoint.h - single-file checkpoints in the original (LDM / A1111 /
 * ComfyUI) layout: what a file is, and its tensors under diffusers names.
 *
 * A single file holds every network of a model under the original code's
 * names (model-formats.md section 2, sd-reference.md 5.2-5.3):
 *
 *     model.diffusion_model.*                 UNet
 *     first_stage_model.*                     VAE
 *     cond_stage_model.transformer.*          CLIP ViT-L text encoder (SD 1.x)
 *     cond_stage_model.model.*                OpenCLIP ViT-H (SD 2.x)
 *     conditioner.embedders.0.transformer.*   CLIP ViT-L (SDXL)
 *     conditioner.embedders.1.model.*         OpenCLIP ViT-bigG (SDXL)
 *
 * ckpt_detect names the family from keys and shapes alone, as diffusers'
 * infer_diffusers_model_type does (and recognises the families diffusiond
 * cannot run, to say so). The translators (ckpt_src) then hand each network
 * loader the file's tensors under the diffusers names it asks for: renamed,
 * VAE attention 1x1 convolutions seen as linears, OpenCLIP's fused in_proj
 * split into q/k/v row ranges, its text_projection transposed, as diffusers'
 * single-file loader converts them. No tensor is copied until it is used.
 *
 * A struct ckpt owns the file (memory-mapped); the weights of every network
 * loaded from it point into it, so it lives as long as the model.
 */
#ifndef SD_CHECKPOINT_H
#define SD_CHECKPOINT_H

#include "model/config.h"
#include "model/safetensors.h"
#include "model/weights.h"

enum ckpt_family {
    CKPT_UNKNOWN = 0,
    CKPT_SD1,          /* SD 1.x: CLIP ViT-L, 768-wide cross-attention */
    CKPT_SD2,          /* SD 2.x (and SD-Turbo): OpenCLIP ViT-H, 1024 */
    CKPT_SDXL,         /* SDXL base (and SDXL-Turbo, Pony, Illustrious, ...) */
    /* Recognised, not runnable: */
    CKPT_SDXL_REFINER,
    CKPT_PLAYGROUND25,
    CKPT_SD3,
    CKPT_FLUX,
    CKPT_CASCADE,
    CKPT_UPSCALE,
    CKPT_CONTROLNET,
    CKPT_LORA,
    CKPT_VAE,          /* a VAE alone */
    CKPT_DIFFUSERS,    /* a diffusers component file (unet/...), not a whole model */
    CKPT_FAMILY_COUNT
};

/* Which text encoder layout a translator reads. */
enum ckpt_te { CKPT_TE_NONE, CKPT_TE_HF, CKPT_TE_OPENCLIP };

struct ckpt_info {
    enum ckpt_family family;
    int unet_in;             /* UNet input channels: 4, 9 (inpainting), 8 (pix2pix) */
    int v_pred;              /* the file says v-prediction (SDXL "v_pred" key); else 0 */
    int ztsnr;               /* zero terminal SNR ("ztsnr" key) */
    long global_step;        /* -1 when absent (only .ckpt files carry it) */
    const char *prediction;  /* __metadata__ modelspec.prediction_type, or NULL */
    /* Prefixes found in the file, "" when absent. */
    char unet_prefix[32];
    char vae_prefix[32];
    int n_te;
    char te_prefix[2][64];
    enum ckpt_te te_kind[2];
};

/* A short name for messages: "SD 1.x", "SDXL", "Flux", ... */
const char *ckpt_family_name(enum ckpt_family f);

/* Decide what f holds from its names and shapes only (no tensor data is
 * read, so a header-only file works). Never fails: CKPT_UNKNOWN when
 * nothing matches. */
void ckpt_detect(const struct st_file *f, struct ckpt_info *out);

/* SD_OK when the family can be run; else SD_ERR_UNSUPPORTED with a
 * one-line message naming the file and what it is. */
int ckpt_check_runnable(const char *path, const struct ckpt_info *in, struct sd_err *err);

/* One network of a checkpoint, as the loaders read it. */
enum ckpt_part { CKPT_PART_UNET, CKPT_PART_VAE, CKPT_PART_TE1, CKPT_PART_TE2 };

struct ckpt_map {
    enum ckpt_part part;
    char prefix[64];
    enum ckpt_te te;
    int vae_blocks;                /* VAE: decoder levels (up index reversal) */
    int te_layers;                 /* text encoder: layers the config uses (OpenCLIP
                                    * files hold one more for SD 2.x) */
    int te_projection;             /* text encoder: text_projection is read */
    const struct unet_config *unet;/* UNet: block layout for the index arithmetic */
    unsigned char *used;           /* per tensor of the file: handed out (shared) */
};

/* The diffusers-name translator (weights.h weights_map_fn) of a part. */
int ckpt_map_tensor(const void *ctx, const struct st_file *f, const char *name, struct st_tensor *view,
                    int *transpose);

/* The original-layout name of a diffusers UNet name under cfg (without the
 * "model.diffusion_model." prefix); 0 if the name has no counterpart. Also
 * used to match kohya LoRA names written for the original UNet (SDXL). */
int ckpt_unet_ldm_name(const struct unet_config *cfg, const char *name, char *out, size_t cap);

/* Tensors of the file under the parts' prefixes that no loader used (and
 * that are not known extras: EMA copies, schedule buffers, position ids,
 * the OpenCLIP layer SD 2.x skips): SD_ERR_FORMAT naming the first ones,
 * so an architecture that differs from the config does not load half.
 * maps: the parts loaded. */
int ckpt_check_all_used(const struct st_file *f, const struct ckpt_map *maps, int n, struct sd_err *err);

#endif
