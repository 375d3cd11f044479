/* pipeline.c - text-to-image: diffusers' StableDiffusionPipeline and
 * StableDiffusionXLPipeline in C.
 *
 * sd-reference.md 6.8, model-formats.md 1. Reads top to bottom like the
 * Python __call__: encode the prompts (SDXL: with both encoders, plus the
 * pooled embedding and the micro-conditioning time ids), draw the initial
 * latents, run the scheduler's loop with classifier-free guidance, decode,
 * convert to 8-bit RGB.
 *
 * Memory: a model owns its networks (weights prepared once at load,
 * activations in one arena the networks share, since they run one after
 * another, sized once per resolution) and the pipeline buffers below, also
 * kept across generations of the same size. Nothing is allocated inside the
 * denoising loop.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "model/imgproc.h"
#include "model/model.h"
#include "model/rng.h"

static const struct {
    const char *name;
    enum sched_kind kind;
    int karras;
} sched_table[SD_SCHED_COUNT] = {
    [SD_SCHED_DEFAULT] = {"default", SCHED_PNDM, 0},
    [SD_SCHED_PNDM] = {"pndm", SCHED_PNDM, 0},
    [SD_SCHED_DDIM] = {"ddim", SCHED_DDIM, 0},
    [SD_SCHED_EULER] = {"euler", SCHED_EULER, 0},
    [SD_SCHED_EULER_A] = {"euler_a", SCHED_EULER_A, 0},
    [SD_SCHED_DPMPP_2M] = {"dpmpp_2m", SCHED_DPMPP_2M, 0},
    [SD_SCHED_DPMPP_2M_KARRAS] = {"dpmpp_2m_karras", SCHED_DPMPP_2M, 1},
    [SD_SCHED_LCM] = {"lcm", SCHED_LCM, 0},
};

int sd_scheduler_from_name(const char *name)
{
    for (int i = 0; name && i < SD_SCHED_COUNT; i++)
        if (!strcmp(name, sched_table[i].name))
            return i;
    return -1;
}

const char *sd_scheduler_name(enum sd_scheduler s)
{
    return (unsigned)s < SD_SCHED_COUNT ? sched_table[s].name : "?";
}

enum sched_kind sd_sched_kind(enum sd_scheduler s, int *karras)
{
    *karras = sched_table[s].karras;
    return sched_table[s].kind;
}

void sd_params_default(struct sd_params *p)
{
    memset(p, 0, sizeof *p);
    p->steps = 50;
    p->guidance = SD_GUIDANCE_DEFAULT;
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

void sd_free_buffers(sd_model *m)
{
    free(m->ctx), free(m->pooled), free(m->latents), free(m->unet_in), free(m->unet_out), free(m->image);
    m->ctx = m->pooled = m->latents = m->unet_in = m->unet_out = m->image = NULL;
    m->buf_h = m->buf_w = m->buf_n = 0;
}

/* ---------------------------------------------------------- parameters */

int sd_params_check(const sd_model *m, const struct sd_params *p, struct sd_err *err)
{
    if (!p->prompt)
        return sd_errf(err, SD_ERR_ARG, "prompt is required");
    if (strlen(p->prompt) > SD_MAX_PROMPT)
        return sd_errf(err, SD_ERR_ARG, "prompt is longer than %d bytes", SD_MAX_PROMPT);
    if (p->negative_prompt && strlen(p->negative_prompt) > SD_MAX_PROMPT)
        return sd_errf(err, SD_ERR_ARG, "negative prompt is longer than %d bytes", SD_MAX_PROMPT);
    if (p->steps < 1 || p->steps > SD_MAX_STEPS)
        return sd_errf(err, SD_ERR_ARG, "steps must be between 1 and %d", SD_MAX_STEPS);
    if (p->guidance != SD_GUIDANCE_DEFAULT && (!isfinite(p->guidance) || p->guidance < 0 || p->guidance > 100))
        return sd_errf(err, SD_ERR_ARG, "guidance must be between 0 and 100");
    if (!isfinite(p->eta) || p->eta < 0 || p->eta > 1)
        return sd_errf(err, SD_ERR_ARG, "eta must be between 0 and 1");
    if ((unsigned)p->scheduler >= SD_SCHED_COUNT)
        return sd_errf(err, SD_ERR_ARG, "unknown scheduler");
    int f = m ? m->info.vae_scale_factor : 8;
    int w = p->width ? p->width : p->init_image ? p->init_width / 8 * 8 : m ? m->info.default_width : 512;
    int h = p->height ? p->height : p->init_image ? p->init_height / 8 * 8 : m ? m->info.default_height : 512;
    if (w < 8 || h < 8 || w > SD_MAX_SIDE || h > SD_MAX_SIDE)
        return sd_errf(err, SD_ERR_ARG, "width and height must be between 8 and %d", SD_MAX_SIDE);
    if (w % 8 || h % 8 || w % f || h % f)
        return sd_errf(err, SD_ERR_ARG, "width and height must be multiples of %d (got %dx%d)",
                       f > 8 ? f : 8, w, h);
    int max_skip = m ? m->info.max_clip_skip : 11;
    if (p->clip_skip < 0 || p->clip_skip > max_skip)
        return sd_errf(err, SD_ERR_ARG, "clip_skip must be between 0 and %d", max_skip);
    if (p->n_loras < 0 || p->n_loras > SD_MAX_LORAS || (p->n_loras && !p->loras))
        return sd_errf(err, SD_ERR_ARG, "at most %d LoRAs", SD_MAX_LORAS);
    if (m) {
        struct sd_lora all[SD_MAX_LORAS];
        char names[SD_MAX_LORAS][SD_LORA_NAME_MAX];
        int n = p->n_loras, rc;
        if (n)
            memcpy(all, p->loras, n * sizeof *all);
        char *clean = malloc(strlen(p->prompt) + 1);
        if (!clean)
            return sd_errf(err, SD_ERR_NOMEM, "out of memory");
        rc = sd_prompt_loras(p->prompt, clean, strlen(p->prompt) + 1, all, names, SD_MAX_LORAS, &n, err);
        free(clean);
        if (rc || (rc = sd_lora_check(m, all, n, err)))
            return rc;
    }
    if (p->n_images < 0 || p->n_images > SD_MAX_IMAGES)
        return sd_errf(err, SD_ERR_ARG, "at most %d images per request", SD_MAX_IMAGES);
    if (p->strength != 0 && (!isfinite(p->strength) || p->strength < 0 || p->strength > 1))
        return sd_errf(err, SD_ERR_ARG, "strength must be between 0 and 1");
    if (p->init_image && (p->init_width < 1 || p->init_height < 1 ||
                          (long)p->init_width * p->init_height > SD_MAX_INPUT_PIXELS))
        return sd_errf(err, SD_ERR_ARG, "init image of %dx%d pixels: at most %d in all", p->init_width,
                       p->init_height, SD_MAX_INPUT_PIXELS);
    if (p->mask && (!p->init_image || p->mask_width < 1 || p->mask_height < 1 ||
                    (long)p->mask_width * p->mask_height > SD_MAX_INPUT_PIXELS ||
                    (p->mask_channels != 1 && p->mask_channels != 3)))
        return sd_errf(err, SD_ERR_ARG, p->init_image ? "mask of %dx%d pixels (%d channels): bad size or channels"
                                                      : "a mask needs an init image (%dx%d, %d channels)",
                       p->mask_width, p->mask_height, p->mask_channels);
    if (m && m->unet.cfg.in_channels != m->vae.cfg.latent_channels && !p->mask)
        return sd_errf(err, SD_ERR_ARG, "this is an inpainting model: it needs an init image and a mask");
    if (m && p->init_image && !m->vae.has_encoder)
        return sd_errf(err, SD_ERR_UNSUPPORTED, "the model's VAE has no encoder: image-to-image is not possible");
    const int micro[] = {p->original_width, p->original_height, p->crop_top, p->crop_left, p->target_width,
                         p->target_height};
    for (int i = 0; i < 6; i++)
        if (micro[i] < 0 || micro[i] > 65536)
            return sd_errf(err, SD_ERR_ARG, "original size, crop and target size must be between 0 and 65536");
    return SD_OK;
}

/* ------------------------------------------------------------ generate */

/* Pipeline buffers for n images of h x w latents (kept while the size and
 * count repeat). */
static int ensure_buffers(sd_model *m, int h, int w, int T, int n)
{
    if (m->buf_h == h && m->buf_w == w && m->buf_n == n)
        return SD_OK;
    sd_free_buffers(m);
    size_t hw = (size_t)h * w, f = m->vae.scale_factor;
    size_t lat = (size_t)m->vae.cfg.latent_channels * hw;
    m->ctx = malloc(2 * (size_t)n * T * m->ctx_dim * sizeof(float));
    m->pooled = malloc((2 * (size_t)n * m->pooled_dim + 1) * sizeof(float));
    m->latents = malloc(n * lat * sizeof(float));
    m->unet_in = malloc(2 * (size_t)n * m->unet.cfg.in_channels * hw * sizeof(float));
    m->unet_out = malloc(2 * (size_t)n * m->unet.cfg.out_channels * hw * sizeof(float));
    m->image = malloc(h * f * w * f * m->vae.cfg.out_channels * sizeof(float));
    if (!m->ctx || !m->pooled || !m->latents || !m->unet_in || !m->unet_out || !m->image) {
        sd_free_buffers(m);
        return SD_ERR_NOMEM;
    }
    m->buf_h = h, m->buf_w = w, m->buf_n = n;
    return SD_OK;
}

static int encode_prompt(sd_model *m, const char *text, int clip_skip, float *out, float *pooled,
                         struct sd_err *err)
{
    int T = tok_max_length(m->tok);
    size_t n = (size_t)T * m->ctx_dim;
    const float *hit = pcache_get(&m->prompts, text, clip_skip);
    if (hit) {
        memcpy(out, hit, n * sizeof(float));
        memcpy(pooled, hit + n, m->pooled_dim * sizeof(float));
        return SD_OK;
    }
    int32_t ids[T];
    int rc = tok_encode(m->tok, text, ids, T, NULL, err);
    if (rc)
        return rc;
    if (m->arch == SD_ARCH_SD) {
        if ((rc = clip_encode(&m->clip, ids, T, clip_skip, out, err)))
            return rc;
        pcache_put(&m->prompts, text, clip_skip, out);
        return SD_OK;
    }
    /* SDXL: [T, H1] and [T, H2] side by side in each row */
    int H1 = m->clip.cfg.hidden, H2 = m->clip2.cfg.hidden;
    float *h1 = malloc((size_t)T * H1 * sizeof(float)), *h2 = malloc((size_t)T * H2 * sizeof(float));
    float *entry = malloc((n + m->pooled_dim) * sizeof(float));
    if (!h1 || !h2 || !entry)
        rc = sd_errf(err, SD_ERR_NOMEM, "out of memory");
    if (!rc)
        rc = clip_encode_hidden(&m->clip, ids, T, clip_skip, h1, NULL, err);
    if (!rc)
        rc = tok_encode(m->tok2, text, ids, T, NULL, err);
    if (!rc)
        rc = clip_encode_hidden(&m->clip2, ids, T, clip_skip, h2, pooled, err);
    if (!rc) {
        for (int t = 0; t < T; t++) {
            memcpy(out + (size_t)t * m->ctx_dim, h1 + (size_t)t * H1, H1 * sizeof(float));
            memcpy(out + (size_t)t * m->ctx_dim + H1, h2 + (size_t)t * H2, H2 * sizeof(float));
        }
        memcpy(entry, out, n * sizeof(float));
        memcpy(entry + n, pooled, m->pooled_dim * sizeof(float));
        pcache_put(&m->prompts, text, clip_skip, entry);
    }
    free(h1), free(h2), free(entry);
    return rc;
}

static void guidance_embedding(float *out, float g, int dim)
{
    int half = dim / 2;
    float w = (g - 1.0f) * 1000.0f;
    float e = (float)(log(10000.0) / (half - 1));
    for (int i = 0; i < half; i++) {
        float f = expf((float)i * -e);
        out[i] = sinf(w * f);
        out[half + i] = cosf(w * f);
    }
    if (dim % 2)
        out[dim - 1] = 0;
}

static void progress(const struct sd_callbacks *cb, enum sd_phase ph, int step, int total,
                     double step_s, double t0)
{
    if (!cb || !cb->progress)
        return;
    struct sd_progress p = {ph, step, total, step_s, now_s() - t0};
    cb->progress(cb->user, &p);
}

static int cancelled(const struct sd_callbacks *cb)
{
    return cb && cb->cancel && atomic_load(cb->cancel);
}

/* The init image and mask as the pipelines preprocess them, at W x H:
 * image[3, H, W] in [-1, 1] (NCHW, diffusers' VaeImageProcessor: PIL
 * Lanczos resize, /255, *2 - 1) and mask[H, W] in {0, 1} (grayscale,
 * resized, binarized at 0.5). */
struct inputs {
    float *image;  /* [3, H, W] */
    float *mask;   /* [H, W] or NULL */
};

static int prepare_inputs(const struct sd_params *p, int W, int H, struct inputs *in, struct sd_err *err)
{
    size_t npx = (size_t)W * H;
    uint8_t *rgb = malloc(npx * 3), *gray = NULL;
    in->image = malloc(3 * npx * sizeof(float));
    in->mask = NULL;
    if (!rgb || !in->image)
        goto nomem;
    if (p->init_width == W && p->init_height == H)
        memcpy(rgb, p->init_image, npx * 3);
    else if (img_resize_lanczos(p->init_image, p->init_width, p->init_height, 3, rgb, W, H))
        goto nomem;
    for (size_t i = 0; i < npx; i++)
        for (int c = 0; c < 3; c++) {
            float v = (float)rgb[i * 3 + c] / 255.0f;
            in->image[c * npx + i] = 2.0f * v - 1.0f;
        }
    if (p->mask) {
        size_t mpx = (size_t)p->mask_width * p->mask_height;
        uint8_t *src = (uint8_t *)p->mask, *g = NULL;
        if (p->mask_channels == 3) {
            if (!(g = malloc(mpx)))
                goto nomem;
            img_rgb_to_gray(p->mask, (long)mpx, g);
            src = g;
        }
        gray = malloc(npx);
        in->mask = malloc(npx * sizeof(float));
        int rc = gray && in->mask ? 0 : -1;
        if (!rc) {
            if (p->mask_width == W && p->mask_height == H)
                memcpy(gray, src, npx);
            else
                rc = img_resize_lanczos(src, p->mask_width, p->mask_height, 1, gray, W, H);
        }
        free(g);
        if (rc)
            goto nomem;
        for (size_t i = 0; i < npx; i++)
            in->mask[i] = (float)gray[i] / 255.0f >= 0.5f ? 1.0f : 0.0f;
    }
    free(rgb), free(gray);
    return SD_OK;
nomem:
    free(rgb), free(gray), free(in->image), free(in->mask);
    in->image = in->mask = NULL;
    return sd_errf(err, SD_ERR_NOMEM, "out of memory for the init image");
}

/* diffusers' _encode_vae_image: the VAE encoder's latent distribution of
 * image[3, H, W], sampled (mean + std * randn from each generator in
 * turn), times scaling_factor: out[ng][C, h, w], one per generator. */
static int encode_sample(sd_model *m, const float *image, int W, int H, struct torch_gen **gens, int ng,
                         float *out, struct sd_err *err)
{
    int f = m->vae.scale_factor, C = m->vae.cfg.latent_channels;
    size_t npx = (size_t)W * H, n = (size_t)C * (H / f) * (W / f);
    float *hwc = malloc(npx * 3 * sizeof(float)), *mean = malloc(n * sizeof(float)),
          *logvar = malloc(n * sizeof(float)), *eps = malloc(n * sizeof(float));
    int rc = hwc && mean && logvar && eps ? SD_OK : sd_errf(err, SD_ERR_NOMEM, "out of memory");
    if (!rc) {
        for (size_t i = 0; i < npx; i++)
            for (int c = 0; c < 3; c++)
                hwc[i * 3 + c] = image[c * npx + i];
        rc = vae_encode(&m->vae, hwc, H, W, mean, logvar, err);
    }
    for (int g = 0; !rc && g < ng; g++) {
        tgen_randn(gens[g], eps, n);
        float sf = m->vae.cfg.scaling_factor;
        for (size_t i = 0; i < n; i++) {
            float std = expf(0.5f * logvar[i]);
            out[(size_t)g * n + i] = sf * (mean[i] + std * eps[i]);
        }
    }
    free(hwc), free(mean), free(logvar), free(eps);
    return rc;
}

/* x[N, C, hw] = randn for the batch: from one generator for all, or from
 * each entry's own (diffusers' randn_tensor with a list). */
static void draw(struct torch_gen **gens, int per_image, int N, float *x, size_t each)
{
    if (!per_image)
        tgen_randn(gens[0], x, (size_t)N * each);
    else
        for (int k = 0; k < N; k++)
            tgen_randn(gens[k], x + (size_t)k * each, each);
}

int sd_generate(sd_model *m, const struct sd_params *p, const struct sd_callbacks *cb,
                struct sd_image *out, struct sd_err *err)
{
    int N = p->n_images > 0 ? p->n_images : 1;
    memset(out, 0, (size_t)(N > 0 && N <= SD_MAX_IMAGES ? N : 1) * sizeof *out);
    m->have_latents = 0;
    int rc = sd_params_check(m, p, err);
    if (rc)
        return rc;
    double t0 = now_s();
    int f = m->vae.scale_factor, C = m->vae.cfg.latent_channels, Cin = m->unet.cfg.in_channels;
    int W = p->width ? p->width : p->init_image ? p->init_width / 8 * 8 : m->info.default_width;
    int H = p->height ? p->height : p->init_image ? p->init_height / 8 * 8 : m->info.default_height;
    int h = H / f, w = W / f, T = tok_max_length(m->tok), D = m->ctx_dim;
    size_t hw = (size_t)h * w, n = (size_t)C * hw;
    int inpaint = p->mask != NULL, img2img = p->init_image != NULL, unet9 = Cin != C;
    uint64_t seed = p->seed;
    if (!p->seed_set) {
        uint32_t r;
        if (getrandom(&r, sizeof r, 0) != sizeof r)
            r = (uint32_t)time(NULL) ^ (uint32_t)clock();
        seed = r;
    }
    if (ensure_buffers(m, h, w, T, N))
        return sd_errf(err, SD_ERR_NOMEM, "out of memory for %d %dx%d images", N, W, H);

    /* 0. LoRAs: the request's and the prompt's tags (removed from the text). */
    struct sd_lora loras[SD_MAX_LORAS];
    char lnames[SD_MAX_LORAS][SD_LORA_NAME_MAX];
    int nl = p->n_loras, te_changed;
    if (nl)
        memcpy(loras, p->loras, nl * sizeof *loras);
    char *prompt = malloc(strlen(p->prompt) + 1);
    if (!prompt)
        return sd_errf(err, SD_ERR_NOMEM, "out of memory");
    if ((rc = sd_prompt_loras(p->prompt, prompt, strlen(p->prompt) + 1, loras, lnames, SD_MAX_LORAS, &nl, err)) ||
        (rc = lora_apply(m, loras, nl, &te_changed, err))) {
        free(prompt);
        return rc;
    }
    if (te_changed)
        pcache_clear(&m->prompts);

    /* 1. Text. Classifier-free guidance runs the UNet on [uncond x N;
     * cond x N]; LCM-distilled UNets take the guidance as an embedding. */
    int xl = m->arch == SD_ARCH_SDXL;
    float g = p->guidance == SD_GUIDANCE_DEFAULT ? m->info.default_guidance : p->guidance;
    int lcm_unet = m->unet.cfg.time_cond_proj_dim > 0;
    int cfg = g > 1.0f && !lcm_unet;
    int P = m->pooled_dim;
    size_t TD = (size_t)T * D;
    float *uncond = m->ctx, *cond = m->ctx + (size_t)N * TD;
    float *uncond_pooled = m->pooled, *cond_pooled = m->pooled + (size_t)N * P;
    rc = encode_prompt(m, prompt, p->clip_skip, cond, cond_pooled, err);
    free(prompt);
    if (rc)
        return rc;
    if (cfg && xl && !p->negative_prompt && m->force_zeros) { /* force_zeros_for_empty_prompt */
        memset(uncond, 0, TD * sizeof(float));
        memset(uncond_pooled, 0, P * sizeof(float));
    } else if (cfg) { /* diffusers encodes the negative prompt without clip_skip */
        if ((rc = encode_prompt(m, p->negative_prompt ? p->negative_prompt : "", 0, uncond, uncond_pooled, err)))
            return rc;
    }
    for (int k = 1; k < N; k++) { /* the same conditioning for every image */
        memcpy(cond + k * TD, cond, TD * sizeof(float));
        memcpy(uncond + k * TD, uncond, TD * sizeof(float));
        memcpy(cond_pooled + (size_t)k * P, cond_pooled, P * sizeof(float));
        memcpy(uncond_pooled + (size_t)k * P, uncond_pooled, P * sizeof(float));
    }
    progress(cb, SD_PHASE_TEXT, 0, 0, 0, t0);
    /* SDXL micro-conditioning: (original h, w, crop top, left, target h, w) */
    float time_ids[2 * SD_MAX_IMAGES * 6];
    const float ids6[6] = {(float)(p->original_height ? p->original_height : H),
                           (float)(p->original_width ? p->original_width : W),
                           (float)p->crop_top, (float)p->crop_left,
                           (float)(p->target_height ? p->target_height : H),
                           (float)(p->target_width ? p->target_width : W)};
    for (int k = 0; k < 2 * N; k++)
        memcpy(time_ids + 6 * k, ids6, sizeof ids6);

    /* 2. Scheduler: the model's, or another class built from its config;
     * image-to-image runs the end of its schedule (get_timesteps). */
    struct sched_config sc = m->sched_cfg;
    if (p->scheduler != SD_SCHED_DEFAULT) {
        sched_config_derive(&sc, &m->sched_cfg, sched_table[p->scheduler].kind,
                            sched_table[p->scheduler].karras);
        /* "dpmpp_2m" means without Karras sigmas even if the model's
         * config asks for them ("dpmpp_2m_karras" is the other one). */
        if (p->scheduler == SD_SCHED_DPMPP_2M)
            sc.use_karras_sigmas = 0;
    }
    struct sched *s;
    if ((rc = sched_new(&s, &sc, p->steps, (size_t)N * n, err)))
        return rc;
    float strength = p->strength > 0 ? p->strength : inpaint ? 1.0f : 0.8f;
    int max_strength = !img2img || strength == 1.0f;
    if (img2img) {
        int init_t = (int)((float)p->steps * strength);
        init_t = init_t < p->steps ? init_t : p->steps;
        int t_start = p->steps - init_t > 0 ? p->steps - init_t : 0;
        if ((rc = sched_start(s, t_start, err))) {
            sched_free(s);
            return rc;
        }
    }

    /* 3. Generators: one seeded with seed, or one per image (seed + k). */
    struct torch_gen gen_all[SD_MAX_IMAGES], *gens[SD_MAX_IMAGES];
    int per = p->seed_per_image && N > 1;
    for (int k = 0; k < (per ? N : 1); k++) {
        tgen_seed(&gen_all[k], seed + (uint64_t)k);
        gens[k] = &gen_all[k];
    }
    if (per)
        sched_set_generators(s, gens, N);

    /* 4. Initial latents (diffusers' prepare_latents, in its draw order). */
    struct inputs in = {0};
    float *img_lat = NULL, *noise = NULL, *mask_lat = NULL, *masked_lat = NULL, *tcond = NULL;
    int ng = per ? N : 1;
    if (img2img) {
        if ((rc = prepare_inputs(p, W, H, &in, err)))
            goto out;
        img_lat = malloc((size_t)N * n * sizeof(float));
        noise = malloc((size_t)N * n * sizeof(float));
        if (!img_lat || !noise) {
            rc = sd_errf(err, SD_ERR_NOMEM, "out of memory");
            goto out;
        }
        /* image latents (a sample per generator), repeated over the batch */
        int need_image = !inpaint || !unet9 || !max_strength;
        if (need_image && (rc = encode_sample(m, in.image, W, H, gens, ng, img_lat, err)))
            goto out;
        for (int k = ng; need_image && k < N; k++)
            memcpy(img_lat + (size_t)k * n, img_lat, n * sizeof(float));
        draw(gens, per, N, noise, n);
        if (max_strength && inpaint) { /* pure noise, scaled as for text-to-image */
            float sigma = sched_init_noise_sigma(s);
            for (size_t i = 0; i < (size_t)N * n; i++)
                m->latents[i] = noise[i] * sigma;
        } else {
            sched_add_noise(s, 0, img_lat, noise, m->latents, (size_t)N * n);
        }
    } else {
        draw(gens, per, N, m->latents, n);
        float sigma = sched_init_noise_sigma(s);
        for (size_t i = 0; i < (size_t)N * n; i++)
            m->latents[i] *= sigma;
    }
    if (inpaint) {
        /* the mask at latent size (F.interpolate, nearest) and the masked
         * image's latents (drawn after the noise, as diffusers does) */
        size_t npx = (size_t)W * H;
        mask_lat = malloc(hw * sizeof(float));
        masked_lat = malloc((size_t)N * n * sizeof(float));
        float *masked = malloc(3 * npx * sizeof(float));
        if (!mask_lat || !masked_lat || !masked) {
            free(masked);
            rc = sd_errf(err, SD_ERR_NOMEM, "out of memory");
            goto out;
        }
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                mask_lat[y * w + x] = in.mask[(size_t)nn_nearest_src(y, H, h) * W + nn_nearest_src(x, W, w)];
        for (int c = 0; c < 3; c++)
            for (size_t i = 0; i < npx; i++)
                masked[c * npx + i] = in.image[c * npx + i] * (in.mask[i] < 0.5f ? 1.0f : 0.0f);
        rc = encode_sample(m, masked, W, H, gens, ng, masked_lat, err);
        free(masked);
        if (rc)
            goto out;
        for (int k = ng; k < N; k++)
            memcpy(masked_lat + (size_t)k * n, masked_lat, n * sizeof(float));
    }

    if (lcm_unet) {
        if (!(tcond = malloc(m->unet.cfg.time_cond_proj_dim * sizeof(float)))) {
            rc = sd_errf(err, SD_ERR_NOMEM, "out of memory");
            goto out;
        }
        guidance_embedding(tcond, g, m->unet.cfg.time_cond_proj_dim);
    }
    int B = cfg ? 2 * N : N;
    const float *ctx = cfg ? m->ctx : cond;
    struct unet_cond ucond = {.tcond = lcm_unet ? tcond : NULL,
                              .text_embeds = xl ? (cfg ? m->pooled : cond_pooled) : NULL,
                              .time_ids = xl ? time_ids : NULL};
    if ((rc = unet_prepare(&m->unet, B, h, w, T, err)))
        goto out;

    /* 5. Denoising loop. */
    int steps = sched_num_timesteps(s);
    size_t bin = (size_t)Cin * hw; /* one UNet input: latents [+ mask + masked image latents] */
    for (int i = 0; i < steps; i++) {
        if (cancelled(cb)) {
            rc = sd_errf(err, SD_ERR_CANCELLED, "cancelled after %d of %d steps", i, steps);
            goto out;
        }
        double ts = now_s();
        float t = sched_timestep(s, i);
        for (int k = 0; k < N; k++) {
            float *dst = m->unet_in + (size_t)k * bin;
            sched_scale_model_input(s, i, m->latents + (size_t)k * n, dst, n);
            if (unet9) {
                memcpy(dst + n, mask_lat, hw * sizeof(float));
                memcpy(dst + n + hw, masked_lat + (size_t)k * n, n * sizeof(float));
            }
        }
        if (cfg)
            memcpy(m->unet_in + (size_t)N * bin, m->unet_in, (size_t)N * bin * sizeof(float));
        if ((rc = unet_forward(&m->unet, m->unet_in, t, ctx, T, &ucond, m->unet_out, B, h, w, err)))
            goto out;
        if (cfg) {
            float *u = m->unet_out, *c = m->unet_out + (size_t)N * n;
            for (size_t j = 0; j < (size_t)N * n; j++)
                u[j] = u[j] + g * (c[j] - u[j]);
        }
        sched_step(s, i, m->unet_out, m->latents, gens[0], p->eta);
        if (inpaint && !unet9) {
            /* the unmasked area follows the init image, noised to the next timestep */
            float *proper = m->unet_out; /* free until the next step */
            if (i < steps - 1)
                sched_add_noise(s, i + 1, img_lat, noise, proper, (size_t)N * n);
            else
                memcpy(proper, img_lat, (size_t)N * n * sizeof(float));
            for (int k = 0; k < N; k++)
                for (int c = 0; c < C; c++)
                    for (size_t j = 0; j < hw; j++) {
                        size_t at = (size_t)k * n + (size_t)c * hw + j;
                        m->latents[at] = (1.0f - mask_lat[j]) * proper[at] + mask_lat[j] * m->latents[at];
                    }
        }
        progress(cb, SD_PHASE_DENOISE, i + 1, steps, now_s() - ts, t0);
    }

    /* 6. Decode and convert each image: clamp(x / 2 + 0.5, 0, 1) * 255,
     * rounded half to even, as diffusers' VaeImageProcessor + numpy do it. */
    float scale = m->vae.cfg.scaling_factor;
    size_t npx = (size_t)W * H;
    int oc = m->vae.cfg.out_channels;
    for (int k = 0; k < N; k++) {
        for (size_t j = 0; j < n; j++)
            m->unet_in[j] = m->latents[(size_t)k * n + j] / scale;
        if ((rc = vae_decode(&m->vae, m->unet_in, h, w, m->image, err)))
            goto out;
        out[k].rgb = malloc(npx * 3);
        if (!out[k].rgb) {
            rc = sd_errf(err, SD_ERR_NOMEM, "out of memory");
            goto out;
        }
        for (size_t j = 0; j < npx; j++)
            for (int c = 0; c < 3; c++) {
                float v = m->image[j * oc + (c < oc ? c : 0)] / 2.0f + 0.5f;
                v = v < 0 ? 0 : v > 1 ? 1 : v;
                out[k].rgb[j * 3 + c] = (uint8_t)rintf(v * 255.0f);
            }
        out[k].width = W;
        out[k].height = H;
        out[k].seed = per ? seed + (uint64_t)k : seed;
    }
    m->have_latents = 1;
    for (int k = 0; k < N; k++)
        out[k].seconds = now_s() - t0;
    progress(cb, SD_PHASE_DECODE, steps, steps, 0, t0);
out:
    if (rc)
        for (int k = 0; k < N; k++)
            sd_image_free(&out[k]);
    free(in.image), free(in.mask), free(img_lat), free(noise), free(mask_lat), free(masked_lat), free(tcond);
    sched_free(s);
    return rc;
}

void sd_prompt_cache_stats(const sd_model *m, long *hits, long *misses)
{
    *hits = m->prompts.hits;
    *misses = m->prompts.misses;
}

const float *sd_last_latents(const sd_model *m, int *c, int *h, int *w)
{
    if (!m->have_latents)
        return NULL;
    *c = m->vae.cfg.latent_channels, *h = m->buf_h, *w = m->buf_w;
    return m->latents;
}

void sd_image_free(struct sd_image *img)
{
    free(img->rgb);
    memset(img, 0, sizeof *img);
}
