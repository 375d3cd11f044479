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
    m->buf_h = m->buf_w = 0;
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
    int w = p->width ? p->width : m ? m->info.default_width : 512;
    int h = p->height ? p->height : m ? m->info.default_height : 512;
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
    const int micro[] = {p->original_width, p->original_height, p->crop_top, p->crop_left, p->target_width,
                         p->target_height};
    for (int i = 0; i < 6; i++)
        if (micro[i] < 0 || micro[i] > 65536)
            return sd_errf(err, SD_ERR_ARG, "original size, crop and target size must be between 0 and 65536");
    return SD_OK;
}

/* ------------------------------------------------------------ generate */


static int ensure_buffers(sd_model *m, int h, int w, int T)
{
    if (m->buf_h == h && m->buf_w == w)
        return SD_OK;
    sd_free_buffers(m);
    size_t n = (size_t)m->unet.cfg.in_channels * h * w, f = m->vae.scale_factor;
    m->ctx = malloc(2 * (size_t)T * m->ctx_dim * sizeof(float));
    m->pooled = malloc((2 * (size_t)m->pooled_dim + 1) * sizeof(float));
    m->latents = malloc(n * sizeof(float));
    m->unet_in = malloc(2 * n * sizeof(float));
    m->unet_out = malloc(2 * n * sizeof(float));
    m->image = malloc(h * f * w * f * m->vae.cfg.out_channels * sizeof(float));
    if (!m->ctx || !m->pooled || !m->latents || !m->unet_in || !m->unet_out || !m->image) {
        sd_free_buffers(m);
        return SD_ERR_NOMEM;
    }
    m->buf_h = h, m->buf_w = w;
    return SD_OK;
}

/* Prompt -> [T, ctx_dim] conditioning (and SDXL's pooled embedding), from
 * the cache when it was seen before. SD: the text encoder's output with
 * clip_skip. SDXL: both encoders' hidden_states[-(2 + clip_skip)]
 * concatenated, the pooled projection from the second. */
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

/* diffusers get_guidance_scale_embedding, for LCM-distilled UNets. */
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

int sd_generate(sd_model *m, const struct sd_params *p, const struct sd_callbacks *cb,
                struct sd_image *out, struct sd_err *err)
{
    memset(out, 0, sizeof *out);
    m->have_latents = 0;
    int rc = sd_params_check(m, p, err);
    if (rc)
        return rc;
    double t0 = now_s();
    int f = m->vae.scale_factor, C = m->unet.cfg.in_channels;
    int W = p->width ? p->width : m->info.default_width;
    int H = p->height ? p->height : m->info.default_height;
    int h = H / f, w = W / f, T = tok_max_length(m->tok), D = m->ctx_dim;
    size_t n = (size_t)C * h * w;
    uint64_t seed = p->seed;
    if (!p->seed_set) {
        uint32_t r;
        if (getrandom(&r, sizeof r, 0) != sizeof r)
            r = (uint32_t)time(NULL) ^ (uint32_t)clock();
        seed = r;
    }
    if (ensure_buffers(m, h, w, T))
        return sd_errf(err, SD_ERR_NOMEM, "out of memory for a %dx%d image", W, H);

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

    /* 1. Text. Classifier-free guidance runs the UNet on [uncond; cond];
     * LCM-distilled UNets take the guidance as an embedding instead. */
    int xl = m->arch == SD_ARCH_SDXL;
    float g = p->guidance == SD_GUIDANCE_DEFAULT ? m->info.default_guidance : p->guidance;
    int lcm_unet = m->unet.cfg.time_cond_proj_dim > 0;
    int cfg = g > 1.0f && !lcm_unet;
    int P = m->pooled_dim;
    float *uncond = m->ctx, *cond = m->ctx + (size_t)T * D;
    float *uncond_pooled = m->pooled, *cond_pooled = m->pooled + P;
    rc = encode_prompt(m, prompt, p->clip_skip, cond, cond_pooled, err);
    free(prompt);
    if (rc)
        return rc;
    if (cfg && xl && !p->negative_prompt && m->force_zeros) { /* force_zeros_for_empty_prompt */
        memset(uncond, 0, (size_t)T * D * sizeof(float));
        memset(uncond_pooled, 0, P * sizeof(float));
    } else if (cfg) { /* diffusers encodes the negative prompt without clip_skip */
        if ((rc = encode_prompt(m, p->negative_prompt ? p->negative_prompt : "", 0, uncond, uncond_pooled, err)))
            return rc;
    }
    progress(cb, SD_PHASE_TEXT, 0, 0, 0, t0);
    /* SDXL micro-conditioning: (original h, w, crop top, left, target h, w) */
    float time_ids[12];
    const float ids6[6] = {(float)(p->original_height ? p->original_height : H),
                           (float)(p->original_width ? p->original_width : W),
                           (float)p->crop_top, (float)p->crop_left,
                           (float)(p->target_height ? p->target_height : H),
                           (float)(p->target_width ? p->target_width : W)};
    memcpy(time_ids, ids6, sizeof ids6);
    memcpy(time_ids + 6, ids6, sizeof ids6);

    /* 2. Scheduler: the model's, or another class built from its config. */
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
    if ((rc = sched_new(&s, &sc, p->steps, n, err)))
        return rc;

    /* 3. Initial latents from torch's CPU generator. */
    struct torch_gen gen;
    tgen_seed(&gen, seed);
    tgen_randn(&gen, m->latents, n);
    float sigma = sched_init_noise_sigma(s);
    for (size_t i = 0; i < n; i++)
        m->latents[i] *= sigma;

    float tcond[lcm_unet ? m->unet.cfg.time_cond_proj_dim : 1];
    if (lcm_unet)
        guidance_embedding(tcond, g, m->unet.cfg.time_cond_proj_dim);
    int B = cfg ? 2 : 1;
    const float *ctx = cfg ? m->ctx : cond;
    struct unet_cond ucond = {.tcond = lcm_unet ? tcond : NULL,
                              .text_embeds = xl ? (cfg ? m->pooled : cond_pooled) : NULL,
                              .time_ids = xl ? time_ids : NULL};
    if ((rc = unet_prepare(&m->unet, B, h, w, T, err)))
        goto out;

    /* 4. Denoising loop. */
    int steps = sched_num_timesteps(s);
    for (int i = 0; i < steps; i++) {
        if (cancelled(cb)) {
            rc = sd_errf(err, SD_ERR_CANCELLED, "cancelled after %d of %d steps", i, steps);
            goto out;
        }
        double ts = now_s();
        float t = sched_timestep(s, i);
        sched_scale_model_input(s, i, m->latents, m->unet_in, n);
        if (cfg)
            memcpy(m->unet_in + n, m->unet_in, n * sizeof(float));
        if ((rc = unet_forward(&m->unet, m->unet_in, t, ctx, T, &ucond, m->unet_out, B, h, w, err)))
            goto out;
        if (cfg) {
            float *u = m->unet_out, *c = m->unet_out + n;
            for (size_t j = 0; j < n; j++)
                u[j] = u[j] + g * (c[j] - u[j]);
        }
        sched_step(s, i, m->unet_out, m->latents, &gen, p->eta);
        progress(cb, SD_PHASE_DENOISE, i + 1, steps, now_s() - ts, t0);
    }

    /* 5. Decode and convert: clamp(x / 2 + 0.5, 0, 1) * 255, rounded half
     * to even, as diffusers' VaeImageProcessor + numpy do it. */
    float scale = m->vae.cfg.scaling_factor;
    for (size_t j = 0; j < n; j++)
        m->unet_in[j] = m->latents[j] / scale;
    if ((rc = vae_decode(&m->vae, m->unet_in, h, w, m->image, err)))
        goto out;
    size_t npx = (size_t)W * H;
    out->rgb = malloc(npx * 3);
    if (!out->rgb) {
        rc = sd_errf(err, SD_ERR_NOMEM, "out of memory");
        goto out;
    }
    int oc = m->vae.cfg.out_channels;
    for (size_t j = 0; j < npx; j++)
        for (int c = 0; c < 3; c++) {
            float v = m->image[j * oc + (c < oc ? c : 0)] / 2.0f + 0.5f;
            v = v < 0 ? 0 : v > 1 ? 1 : v;
            out->rgb[j * 3 + c] = (uint8_t)rintf(v * 255.0f);
        }
    m->have_latents = 1;
    out->width = W;
    out->height = H;
    out->seed = seed;
    out->seconds = now_s() - t0;
    progress(cb, SD_PHASE_DECODE, steps, steps, 0, t0);
out:
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
    *c = m->unet.cfg.in_channels, *h = m->buf_h, *w = m->buf_w;
    return m->latents;
}

void sd_image_free(struct sd_image *img)
{
    free(img->rgb);
    memset(img, 0, sizeof *img);
}
