/* sd.h - diffusiond's engine: Stable Diffusion text-to-image as a library.
 *
 * The one public header of the engine. The CLI (src/cli) and the HTTP
 * service (src/server) use only this.
 *
 *     struct sd_err err;
 *     struct sd_load_opts lo = { .dir = "models/sd15" };
 *     sd_model *m;
 *     if (sd_model_load(&m, &lo, &err)) { puts(err.msg); ... }
 *     struct sd_params p;
 *     sd_params_default(&p);
 *     p.prompt = "a photo of an astronaut";
 *     struct sd_image img;
 *     if (sd_generate(m, &p, NULL, &img, &err) == SD_OK) {
 *         uint8_t *png; size_t len;
 *         sd_image_png(&img, &p, m, &png, &len, &err); ... free(png);
 *         sd_image_free(&img);
 *     }
 *     sd_model_free(m);
 *
 * Load a model once, generate many times. Images are the same as diffusers'
 * StableDiffusionPipeline (float32, CPU generator seeded with p.seed) up to
 * floating-point tolerance.
 *
 * Errors: every function that can fail returns SD_OK or an SD_ERR_* code
 * (util/err.h) and leaves a one-line message in *err. The library never
 * prints, exits or aborts on bad input.
 *
 * Threads: an sd_model may be used by one sd_generate call at a time
 * (the service runs one inference worker). sd_model_get_info and
 * sd_params_check only read what loading set, so any thread may call them
 * while a generation runs. Different models are independent. Compute uses
 * the process-wide OpenMP pool.
 */
#ifndef SD_H
#define SD_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

typedef struct sd_model sd_model;

enum sd_scheduler {
    SD_SCHED_DEFAULT = 0, /* the model's scheduler_config.json */
    SD_SCHED_PNDM,
    SD_SCHED_DDIM,
    SD_SCHED_EULER,
    SD_SCHED_EULER_A,
    SD_SCHED_DPMPP_2M,
    SD_SCHED_DPMPP_2M_KARRAS,
    SD_SCHED_LCM,
    SD_SCHED_COUNT
};

/* "pndm", "ddim", "euler", "euler_a", "dpmpp_2m", "dpmpp_2m_karras", "lcm"
 * (and "default"); returns -1 for an unknown name. */
int sd_scheduler_from_name(const char *name);
const char *sd_scheduler_name(enum sd_scheduler s);

/* Limits the engine enforces (the service may set tighter ones). */
#define SD_MAX_STEPS 1000
#define SD_MAX_SIDE 2048      /* width and height, pixels */
#define SD_MAX_PROMPT 16384   /* bytes */

enum sd_precision {
    SD_PRECISION_FP32 = 0, /* float32 everywhere (the parity-tested default) */
    SD_PRECISION_BF16,     /* weights held in bfloat16; convolutions and matrix
                            * products in bf16 with float32 accumulation */
};

/* "fp32" / "bf16" -> enum, -1 if unknown. */
int sd_precision_from_name(const char *name);
const char *sd_precision_name(enum sd_precision p);

/* A LoRA to merge for a generation: a file <lora_dir>/<name>[.safetensors]. */
#define SD_MAX_LORAS 8
#define SD_LORA_NAME_MAX 128
#define SD_LORA_WEIGHT_MAX 10.0f /* |weight| */
struct sd_lora {
    const char *name;
    float weight;
};

struct sd_load_opts {
    /* A diffusers folder (model_index.json inside), or a single-file
     * checkpoint in the original layout (.safetensors) of SD 1.x, SD 2.x or
     * SDXL: its family is detected from its tensors and the standard
     * configuration of that family used, unless `config` names another. */
    const char *dir;
    const char *variant; /* NULL, or e.g. "fp16" for *.fp16.safetensors */
    /* Single files: a diffusers folder whose configs and tokenizers describe
     * the checkpoint (diffusers' from_single_file(config=...)), or the name
     * of a bundled standard one ("sd15", "sd21", "sd21-base", "sd-turbo",
     * "sdxl-base", "sdxl-turbo"). NULL: by detection. */
    const char *config;
    /* NULL, or "epsilon" / "v_prediction": overrides what the scheduler
     * config (or, for a single SD 2.x file, detection) says. */
    const char *prediction_type;
    /* NULL, or a VAE to use instead of the model's: a diffusers vae folder
     * (config.json + weights) or a .safetensors file in either layout. */
    const char *vae;
    /* The folder LoRA names resolve in (NULL: LoRAs cannot be used). */
    const char *lora_dir;
    int threads;         /* 0: all cores */
    enum sd_precision precision;
    /* The image size most requests will ask for (0: the model's default).
     * Each convolution's algorithm is chosen for it (Winograd where there
     * are enough pixels per weight); every size still runs. */
    int width, height;
};

struct sd_model_info {
    char name[256];            /* folder or file base name (without .safetensors) */
    char family[16];           /* "SD 1.x", "SD 2.x", "SDXL" */
    char format[16];           /* "diffusers" or "single-file" */
    char prediction_type[32];  /* "epsilon", "v_prediction" */
    float default_guidance;    /* the pipeline's: 7.5 (SD), 5.0 (SDXL) */
    int default_width;         /* unet.sample_size * vae scale factor */
    int default_height;
    int vae_scale_factor;      /* 8 for SD; 2^(len(vae blocks)-1) */
    int text_hidden;           /* 768 SD1, 1024 SD2, 2048 SDXL (both encoders) */
    int text_layers;           /* of the (first) text encoder */
    int max_clip_skip;         /* largest clip_skip the model takes */
    int is_v_prediction;
    enum sd_scheduler default_scheduler; /* the config's class */
    char scheduler_class[64];  /* e.g. "PNDMScheduler" */
    enum sd_precision precision; /* the precision of its weights */
    /* How its products are computed: "float32", "bf16" (bf16 products,
     * float32 sums) or "float32 on bf16 weights" (bf16 asked for on a CPU
     * without bf16 dot products: the weights widened for float32
     * products). */
    char compute[32];
    /* Empty, or one line saying how the computation differs from what was
     * asked for (bf16 on a CPU without bf16 dot products); callers show it
     * to the user. */
    char precision_note[320];
    double load_seconds;       /* time sd_model_load took */
    size_t weight_bytes;       /* memory held by the prepared weights */
};

/* sd_params.guidance: the model's default (sd_model_info.default_guidance). */
#define SD_GUIDANCE_DEFAULT (-1.0f)

struct sd_params {
    const char *prompt;          /* required, UTF-8 */
    /* NULL means none: SD encodes "", SDXL uses zeros (diffusers'
     * force_zeros_for_empty_prompt); "" is encoded as given. */
    const char *negative_prompt;
    int steps;                   /* 50 */
    float guidance;              /* SD_GUIDANCE_DEFAULT; <= 1 runs the conditional pass only */
    int seed_set;                /* 0: pick a random seed (reported in the image) */
    uint64_t seed;               /* torch.Generator("cpu").manual_seed(seed) */
    int width, height;           /* 0: model default; multiples of 8 */
    enum sd_scheduler scheduler; /* SD_SCHED_DEFAULT: the model's */
    float eta;                   /* DDIM eta, 0 */
    int clip_skip;               /* 0: none; k: diffusers' clip_skip=k */
    /* SDXL micro-conditioning (add_time_ids), in pixels; 0: the image's
     * size, crop (0, 0) (the pipeline's defaults). Ignored by SD 1.x/2.x. */
    int original_width, original_height;
    int crop_top, crop_left;
    int target_width, target_height;
    /* LoRAs merged for this generation (with those of the prompt's
     * <lora:NAME:WEIGHT> tags, which are removed from the text before it is
     * encoded, as A1111 does). At most SD_MAX_LORAS in all. */
    const struct sd_lora *loras;
    int n_loras;
    /* Image-to-image (StableDiffusionImg2ImgPipeline): an init image, 8-bit
     * RGB rows of init_width x init_height pixels, resized (PIL Lanczos) to
     * the output size, which defaults to its own size rounded down to a
     * multiple of 8; strength 0..1 (0.8 when 0 is given) is how much of the
     * schedule runs. NULL: text-to-image. */
    const uint8_t *init_image;
    int init_width, init_height;
    float strength;
    /* Inpainting (StableDiffusionInpaintPipeline; needs init_image): an
     * 8-bit gray mask (mask_channels 1) or RGB one (3, turned to gray as PIL
     * does), any size (resized to the output), >= 128 = repaint. A
     * 9-channel inpainting UNet gets mask and masked image; an ordinary one
     * blends the init image's latents into the unmasked area at every step.
     * NULL: none. */
    const uint8_t *mask;
    int mask_width, mask_height, mask_channels;
    /* Several images at once (out is an array of n_images). One generator
     * seeded with seed draws for the whole batch, as diffusers' pipelines
     * do for num_images_per_prompt; with seed_per_image, image k has its
     * own generator seeded with seed + k (A1111's batches). 0 means 1. */
    int n_images;
    int seed_per_image;
};

#define SD_MAX_IMAGES 16       /* per sd_generate call */
#define SD_MAX_INPUT_PIXELS (4096 * 4096) /* init image and mask */

void sd_params_default(struct sd_params *p);

/* A1111 prompt tags: copies prompt to clean (cap bytes) without its
 * <lora:NAME> / <lora:NAME:WEIGHT> tags (weight 1 when absent) and appends
 * them to loras[*n..max) (names point into names[], which must hold max
 * entries). A tag whose name or weight is malformed or too long, or one too
 * many, is an error (SD_ERR_ARG). */
int sd_prompt_loras(const char *prompt, char *clean, size_t cap, struct sd_lora *loras,
                    char (*names)[SD_LORA_NAME_MAX], int max, int *n, struct sd_err *err);

/* Check LoRA names and weights against the model's LoRA folder without
 * loading anything (the service validates requests with it). */
int sd_lora_check(const sd_model *m, const struct sd_lora *loras, int n, struct sd_err *err);

/* Check p against the model and the engine limits without running anything
 * (the service calls this before queueing). */
int sd_params_check(const sd_model *m, const struct sd_params *p, struct sd_err *err);

enum sd_phase { SD_PHASE_TEXT, SD_PHASE_DENOISE, SD_PHASE_DECODE };

struct sd_progress {
    enum sd_phase phase;
    int step;           /* denoising steps done so far (1..total) */
    int total;          /* number of UNet evaluations (scheduler timesteps) */
    double step_seconds;/* duration of the step just done */
    double elapsed;     /* seconds since sd_generate started */
};

struct sd_callbacks {
    /* Called after the text encoder, after every denoising step and after the
     * VAE decode, from the generating thread. */
    void (*progress)(void *user, const struct sd_progress *p);
    void *user;
    /* Checked between steps: when it becomes non-zero sd_generate stops and
     * returns SD_ERR_CANCELLED. May be NULL. */
    atomic_int *cancel;
};

struct sd_image {
    int width, height;
    uint8_t *rgb;      /* width*height*3, row-major RGB; owned, sd_image_free */
    uint64_t seed;     /* the seed actually used */
    double seconds;    /* wall time of the generation */
};

int sd_model_load(sd_model **out, const struct sd_load_opts *o, struct sd_err *err);
const struct sd_model_info *sd_model_get_info(const sd_model *m);
void sd_model_free(sd_model *m);

/* Generate p->n_images images (one when 0) into out[0..n). cb may be NULL.
 * On success each out[k] owns its pixels (out[k].seed: the seed that
 * reproduces it alone, or the batch's with one generator). */
int sd_generate(sd_model *m, const struct sd_params *p, const struct sd_callbacks *cb,
                struct sd_image *out, struct sd_err *err);
void sd_image_free(struct sd_image *img);

/* Text-encoder outputs are cached per distinct (prompt, clip_skip): this
 * many most recently used ones. Hits and misses so far: */
#define SD_PROMPT_CACHE 64
void sd_prompt_cache_stats(const sd_model *m, long *hits, long *misses);

/* The final latents [n_images, c, h, w] (NCHW, before VAE scaling) of the
 * last successful sd_generate on m; for tests and diagnostics. NULL if none. */
const float *sd_last_latents(const sd_model *m, int *c, int *h, int *w);

/* The A1111 "infotext" of an image made with p and seed at width x height:
 * "prompt\nNegative prompt: ...\nSteps: 20, Sampler: Euler a, CFG scale: 7,
 * Seed: 1, Size: 512x512, Model: ..., Version: diffusiond". malloc'd; NULL
 * when out of memory. */
char *sd_infotext(const struct sd_params *p, const sd_model *m, uint64_t seed, int width, int height);
/* A1111's name for scheduler s ("Euler a", "DPM++ 2M Karras", "PLMS"...);
 * SD_SCHED_DEFAULT is resolved with m's default. */
const char *sd_sampler_a1111_name(enum sd_scheduler s, const sd_model *m);

/* Encode img as an 8-bit RGB PNG with a tEXt "parameters" chunk in the A1111
 * convention (prompt, negative prompt, steps, sampler, CFG, seed, size, model).
 * *png is malloc'd; the caller frees it. */
int sd_image_png(const struct sd_image *img, const struct sd_params *p, const sd_model *m,
                 uint8_t **png, size_t *len, struct sd_err *err);

#endif
