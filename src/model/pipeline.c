/* pipeline.c - text-to-image: diffusers' StableDiffusionPipeline in C.
 *
 * sd-reference.md 6.8. Reads top to bottom like the Python __call__:
 * encode the prompts, draw the initial latents, run the scheduler's loop
 * with classifier-free guidance, decode, convert to 8-bit RGB.
 *
 * Memory: a model owns its networks (weights prepared once at load,
 * activations in one arena the networks share, since they run one after
 * another, sized once per resolution) and the pipeline buffers below, also
 * kept across generations of the same size. Nothing is allocated inside the
 * denoising loop.
 */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <jansson.h>

#include "model/clip.h"
#include "model/prompt_cache.h"
#include "model/rng.h"
#include "model/sched.h"
#include "model/tokenizer.h"
#include "model/unet.h"
#include "model/vae.h"
#include "sd.h"
#include "tensor/cpu.h"

struct sd_model {
    struct sd_model_info info;
    char dir[1024];
    struct tokenizer *tok;
    struct clip clip;
    struct unet unet;
    struct vae vae;
    struct sched_config sched_cfg; /* the model's scheduler_config.json */
    struct prompt_cache prompts;   /* text-encoder outputs by prompt */
    struct arena arena;            /* activations of all four networks */
    /* Pipeline buffers, sized for buf_h x buf_w latents. */
    int buf_h, buf_w;
    float *ctx;       /* [2, T, D]: uncond, cond */
    float *latents;   /* [C, h, w] */
    float *unet_in;   /* [2, C, h, w] */
    float *unet_out;  /* [2, C, h, w] */
    float *image;     /* [H, W, 3] decoder output */
    int have_latents; /* latents hold the last generation's result */
};

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

int sd_precision_from_name(const char *name)
{
    if (name && !strcmp(name, "fp32"))
        return SD_PRECISION_FP32;
    if (name && !strcmp(name, "bf16"))
        return SD_PRECISION_BF16;
    return -1;
}

const char *sd_precision_name(enum sd_precision p)
{
    return p == SD_PRECISION_BF16 ? "bf16" : "fp32";
}

void sd_params_default(struct sd_params *p)
{
    memset(p, 0, sizeof *p);
    p->steps = 50;
    p->guidance = 7.5f;
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* ---------------------------------------------------------------- load */

/* model_index.json: check that each component is a class we implement. */
static int check_model_index(const char *dir, struct sd_err *err)
{
    char path[1100];
    snprintf(path, sizeof path, "%s/model_index.json", dir);
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!root) {
        FILE *f = fopen(path, "r");
        if (!f)
            return sd_errf(err, SD_ERR_IO, "%s: missing; not a diffusers model folder", path);
        fclose(f);
        return sd_errf(err, SD_ERR_FORMAT, "%s: invalid JSON at line %d: %s", path, je.line, je.text);
    }
    static const struct {
        const char *key, *classes[3];
    } want[] = {
        {"unet", {"UNet2DConditionModel"}},
        {"vae", {"AutoencoderKL"}},
        {"text_encoder", {"CLIPTextModel"}},
        {"tokenizer", {"CLIPTokenizer", "CLIPTokenizerFast"}},
    };
    int rc = SD_OK;
    const char *pipe = json_string_value(json_object_get(root, "_class_name"));
    if (pipe && strcmp(pipe, "StableDiffusionPipeline"))
        rc = sd_errf(err, SD_ERR_UNSUPPORTED, "%s: pipeline class \"%s\" is not supported "
                     "(StableDiffusionPipeline is)", path, pipe);
    for (size_t i = 0; !rc && i < sizeof want / sizeof want[0]; i++) {
        json_t *e = json_object_get(root, want[i].key);
        const char *cls = json_string_value(json_array_get(e, 1));
        if (!cls) {
            rc = sd_errf(err, SD_ERR_FORMAT, "%s: no \"%s\" component", path, want[i].key);
            break;
        }
        int ok = 0;
        for (int j = 0; j < 3 && want[i].classes[j]; j++)
            ok |= !strcmp(cls, want[i].classes[j]);
        if (!ok)
            rc = sd_errf(err, SD_ERR_UNSUPPORTED, "%s: %s class \"%s\" is not supported (%s is)", path,
                         want[i].key, cls, want[i].classes[0]);
    }
    json_decref(root);
    return rc;
}

int sd_model_load(sd_model **out, const struct sd_load_opts *o, struct sd_err *err)
{
    *out = NULL;
    if (!o || !o->dir || !*o->dir)
        return sd_errf(err, SD_ERR_ARG, "no model folder given");
    if (o->threads > 0)
        omp_set_num_threads(o->threads);
    int rc = check_model_index(o->dir, err);
    if (rc)
        return rc;
    if ((unsigned)o->precision > SD_PRECISION_BF16)
        return sd_errf(err, SD_ERR_ARG, "unknown precision");
    double t0 = now_s();
    sd_model *m = calloc(1, sizeof *m);
    if (!m)
        return sd_errf(err, SD_ERR_NOMEM, "out of memory");
    snprintf(m->dir, sizeof m->dir, "%s", o->dir);
    /* bf16 only where the CPU computes bf16 products natively: elsewhere
     * oneDNN emulates them, 4-7x slower than float32 (measured on an
     * AVX-512 Xeon without AVX512-BF16), so float32 it is. */
    enum sd_precision prec = o->precision;
    if (prec == SD_PRECISION_BF16 && !cpu_bf16_native()) {
        prec = SD_PRECISION_FP32;
        snprintf(m->info.precision_note, sizeof m->info.precision_note,
                 "bf16 asked for, but bf16 products would be emulated here, several times slower than "
                 "fp32: computing in fp32 (CPU: %s)", cpu_describe());
    }
    const struct nn_backend *be = prec == SD_PRECISION_BF16 ? &nn_backend_cpu_bf16 : &nn_backend_cpu;
    char path[1100];
    snprintf(path, sizeof path, "%s/tokenizer", o->dir);
    if ((rc = tok_load(&m->tok, path, err)))
        goto fail;
    snprintf(path, sizeof path, "%s/scheduler/scheduler_config.json", o->dir);
    if ((rc = sched_config_load(&m->sched_cfg, path, err)))
        goto fail;
    if ((rc = clip_load(&m->clip, o->dir, o->variant, be, err)))
        goto fail;
    int hinted = o->width > 0 && o->height > 0; /* else plan for the model's own size */
    long px = hinted ? (long)o->width * o->height : 0;
    if ((rc = vae_load(&m->vae, o->dir, o->variant, be, px, err)))
        goto fail;
    long f = m->vae.scale_factor;
    if ((rc = unet_load(&m->unet, o->dir, o->variant, be, px / (f * f), err)))
        goto fail;
    if (tok_vocab_size(m->tok) > m->clip.cfg.vocab_size) {
        rc = sd_errf(err, SD_ERR_FORMAT, "%s/tokenizer: %d tokens but the text encoder knows only %d",
                     o->dir, tok_vocab_size(m->tok), m->clip.cfg.vocab_size);
        goto fail;
    }
    if (m->clip.cfg.hidden != m->unet.cfg.cross_attention_dim ||
        m->unet.cfg.in_channels != m->vae.cfg.latent_channels ||
        m->unet.cfg.out_channels != m->vae.cfg.latent_channels) {
        rc = sd_errf(err, SD_ERR_FORMAT, "%s: components do not fit together (text encoder width %d, "
                     "UNet cross-attention %d, UNet channels %d/%d, VAE latent channels %d)", o->dir,
                     m->clip.cfg.hidden, m->unet.cfg.cross_attention_dim, m->unet.cfg.in_channels,
                     m->unet.cfg.out_channels, m->vae.cfg.latent_channels);
        goto fail;
    }
    struct sd_model_info *in = &m->info;
    const char *base = strrchr(o->dir, '/');
    while (base && base[1] == 0 && base > o->dir) { /* "dir/" */
        const char *b = base - 1;
        while (b > o->dir && *b != '/')
            b--;
        base = b;
    }
    snprintf(in->name, sizeof in->name, "%s", base ? base + (*base == '/') : o->dir);
    char *slash = strchr(in->name, '/');
    if (slash)
        *slash = 0;
    in->vae_scale_factor = m->vae.scale_factor;
    in->default_width = in->default_height = m->unet.cfg.sample_size * m->vae.scale_factor;
    in->text_hidden = m->clip.cfg.hidden;
    in->text_layers = m->clip.cfg.layers;
    in->is_v_prediction = !strcmp(m->sched_cfg.prediction_type, "v_prediction");
    in->default_scheduler = SD_SCHED_DEFAULT;
    for (int i = 1; i < SD_SCHED_COUNT; i++)
        if (sched_table[i].kind == m->sched_cfg.kind &&
            sched_table[i].karras == (m->sched_cfg.kind == SCHED_DPMPP_2M && m->sched_cfg.use_karras_sigmas)) {
            in->default_scheduler = i;
            break;
        }
    snprintf(in->scheduler_class, sizeof in->scheduler_class, "%s", m->sched_cfg.class_name);
    in->precision = prec;
    arena_init(&m->arena);
    nn_share_arena(&m->clip.nn, &m->arena);
    nn_share_arena(&m->unet.nn, &m->arena);
    nn_share_arena(&m->vae.dec.nn, &m->arena);
    nn_share_arena(&m->vae.enc.nn, &m->arena);
    pcache_init(&m->prompts, SD_PROMPT_CACHE, (size_t)tok_max_length(m->tok) * m->clip.cfg.hidden);
    /* Plan every network for the expected job (the size hint, guidance's
     * batch of 2, a full prompt) now: oneDNN primitives, Winograd plans and
     * the shared activation arena (faulted in as it is allocated), so the
     * first image runs as fast as the next ones. */
    int T = tok_max_length(m->tok);
    int lat_w = (hinted ? o->width : in->default_width) / (int)f;
    int lat_h = (hinted ? o->height : in->default_height) / (int)f;
    if ((rc = clip_prepare(&m->clip, T, err)) ||
        (rc = unet_prepare(&m->unet, m->unet.cfg.time_cond_proj_dim > 0 ? 1 : 2, lat_h, lat_w, T, err)) ||
        (rc = vae_prepare_decode(&m->vae, lat_h, lat_w, err)))
        goto fail;
    in->weight_bytes = weights_resident(&m->clip.w) + weights_resident(&m->unet.w) +
                       weights_resident(&m->vae.w);
    in->load_seconds = now_s() - t0;
    *out = m;
    return SD_OK;
fail:
    sd_model_free(m);
    return rc;
}

const struct sd_model_info *sd_model_get_info(const sd_model *m)
{
    return &m->info;
}

static void free_buffers(sd_model *m)
{
    free(m->ctx), free(m->latents), free(m->unet_in), free(m->unet_out), free(m->image);
    m->ctx = m->latents = m->unet_in = m->unet_out = m->image = NULL;
    m->buf_h = m->buf_w = 0;
}

void sd_model_free(sd_model *m)
{
    if (!m)
        return;
    free_buffers(m);
    pcache_free(&m->prompts);
    tok_free(m->tok);
    clip_free(&m->clip);
    unet_free(&m->unet);
    vae_free(&m->vae);
    arena_free(&m->arena);
    free(m);
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
    if (!isfinite(p->guidance) || p->guidance < 0 || p->guidance > 100)
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
    int layers = m ? m->info.text_layers : 12;
    if (p->clip_skip < 0 || p->clip_skip >= layers)
        return sd_errf(err, SD_ERR_ARG, "clip_skip must be between 0 and %d", layers - 1);
    return SD_OK;
}

/* ------------------------------------------------------------ generate */


static int ensure_buffers(sd_model *m, int h, int w, int T)
{
    if (m->buf_h == h && m->buf_w == w)
        return SD_OK;
    free_buffers(m);
    size_t n = (size_t)m->unet.cfg.in_channels * h * w, f = m->vae.scale_factor;
    m->ctx = malloc(2 * (size_t)T * m->clip.cfg.hidden * sizeof(float));
    m->latents = malloc(n * sizeof(float));
    m->unet_in = malloc(2 * n * sizeof(float));
    m->unet_out = malloc(2 * n * sizeof(float));
    m->image = malloc(h * f * w * f * m->vae.cfg.out_channels * sizeof(float));
    if (!m->ctx || !m->latents || !m->unet_in || !m->unet_out || !m->image) {
        free_buffers(m);
        return SD_ERR_NOMEM;
    }
    m->buf_h = h, m->buf_w = w;
    return SD_OK;
}

/* Prompt -> [T, D] conditioning, from the cache when it was seen before. */
static int encode_prompt(sd_model *m, const char *text, int clip_skip, float *out, struct sd_err *err)
{
    int T = tok_max_length(m->tok);
    const float *hit = pcache_get(&m->prompts, text, clip_skip);
    if (hit) {
        memcpy(out, hit, (size_t)T * m->clip.cfg.hidden * sizeof(float));
        return SD_OK;
    }
    int32_t ids[T];
    int rc = tok_encode(m->tok, text, ids, T, NULL, err);
    if (!rc)
        rc = clip_encode(&m->clip, ids, T, clip_skip, out, err);
    if (!rc)
        pcache_put(&m->prompts, text, clip_skip, out);
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
    int h = H / f, w = W / f, T = tok_max_length(m->tok), D = m->clip.cfg.hidden;
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

    /* 1. Text. Classifier-free guidance runs the UNet on [uncond; cond];
     * LCM-distilled UNets take the guidance as an embedding instead. */
    int lcm_unet = m->unet.cfg.time_cond_proj_dim > 0;
    int cfg = p->guidance > 1.0f && !lcm_unet;
    float *uncond = m->ctx, *cond = m->ctx + (size_t)T * D;
    if ((rc = encode_prompt(m, p->prompt, p->clip_skip, cond, err)))
        return rc;
    /* diffusers encodes the negative prompt without clip_skip */
    if (cfg && (rc = encode_prompt(m, p->negative_prompt ? p->negative_prompt : "", 0, uncond, err)))
        return rc;
    progress(cb, SD_PHASE_TEXT, 0, 0, 0, t0);

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
        guidance_embedding(tcond, p->guidance, m->unet.cfg.time_cond_proj_dim);
    int B = cfg ? 2 : 1;
    const float *ctx = cfg ? m->ctx : cond;
    if ((rc = unet_prepare(&m->unet, B, h, w, T, err)))
        goto out;

    /* 4. Denoising loop. */
    int steps = sched_num_timesteps(s);
    float g = p->guidance;
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
        if ((rc = unet_forward(&m->unet, m->unet_in, t, ctx, T, lcm_unet ? tcond : NULL, m->unet_out,
                               B, h, w, err)))
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
