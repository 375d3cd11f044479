/* model.c - loading a model: a diffusers folder, or a single-file
 * checkpoint with a standard (or given) config; its networks, tokenizers
 * and scheduler config, checked against each other, and planned for the
 * expected job. See sd.h (sd_load_opts) and model.h.
 */
#include <jansson.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "model/model.h"
#include "model/pytorch.h"
#include "tensor/cpu.h"
#include "util/paths.h"

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
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

/* ----------------------------------------------------- model_index.json */

/* Check that each component is a class we implement; *arch from the
 * pipeline class (and *force_zeros from its option). */
static int check_model_index(const char *dir, enum sd_arch *arch, int *force_zeros, struct sd_err *err)
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
        int xl_only;
    } want[] = {
        {"unet", {"UNet2DConditionModel"}, 0},
        {"vae", {"AutoencoderKL"}, 0},
        {"text_encoder", {"CLIPTextModel"}, 0},
        {"tokenizer", {"CLIPTokenizer", "CLIPTokenizerFast"}, 0},
        {"text_encoder_2", {"CLIPTextModelWithProjection"}, 1},
        {"tokenizer_2", {"CLIPTokenizer", "CLIPTokenizerFast"}, 1},
    };
    int rc = SD_OK;
    const char *pipe = json_string_value(json_object_get(root, "_class_name"));
    *arch = SD_ARCH_SD;
    *force_zeros = 0;
    /* the image-to-image and inpainting pipelines' folders hold the same parts */
    if (pipe && (!strcmp(pipe, "StableDiffusionXLPipeline") || !strcmp(pipe, "StableDiffusionXLImg2ImgPipeline") ||
                 !strcmp(pipe, "StableDiffusionXLInpaintPipeline"))) {
        *arch = SD_ARCH_SDXL;
        json_t *fz = json_object_get(root, "force_zeros_for_empty_prompt");
        *force_zeros = !fz || json_is_true(fz); /* the pipeline's default: true */
    } else if (pipe && strcmp(pipe, "StableDiffusionPipeline") && strcmp(pipe, "StableDiffusionImg2ImgPipeline") &&
               strcmp(pipe, "StableDiffusionInpaintPipeline"))
        rc = sd_errf(err, SD_ERR_UNSUPPORTED, "%s: pipeline class \"%s\" is not supported "
                     "(StableDiffusionPipeline and StableDiffusionXLPipeline are)", path, pipe);
    for (size_t i = 0; !rc && i < sizeof want / sizeof want[0]; i++) {
        if (want[i].xl_only && *arch != SD_ARCH_SDXL)
            continue;
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

/* ------------------------------------------------------- single files */

static int is_regular_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* Open a single-file checkpoint and decide what it is. */
static int single_open(struct sd_single *s, const char *path, struct sd_err *err)
{
    memset(s, 0, sizeof *s);
    size_t n = strlen(path);
    long global_step = -1;
    int pickle = (n > 5 && !strcmp(path + n - 5, ".ckpt")) || (n > 3 && !strcmp(path + n - 3, ".pt")) ||
                 (n > 4 && !strcmp(path + n - 4, ".pth")) || (n > 4 && !strcmp(path + n - 4, ".bin"));
    int rc = pickle ? pt_open(&s->file, path, &global_step, err) : st_open(&s->file, path, err);
    if (rc)
        return rc;
    ckpt_detect(s->file, &s->info);
    s->info.global_step = global_step;
    s->used = calloc(st_count(s->file) ? st_count(s->file) : 1, 1);
    if (!s->used)
        return sd_errf(err, SD_ERR_NOMEM, "out of memory");
    return SD_OK;
}

static void single_close(struct sd_single *s)
{
    st_close(s->file);
    free(s->used);
    memset(s, 0, sizeof *s);
}

/* The standard config folder for a detected checkpoint. */
static const char *standard_config(const struct ckpt_info *in, const char *prediction)
{
    switch (in->family) {
    case CKPT_SD1:
        return in->unet_in == 9 ? "sd15-inpainting" : "sd15";
    case CKPT_SD2:
        /* diffusers: a 2.x single file is v-prediction (stable-diffusion-2-1,
         * 768 px) unless it says otherwise; epsilon means the 512 px base. */
        if (in->unet_in == 9)
            return "sd2-inpainting";
        return prediction && !strcmp(prediction, "epsilon") ? "sd21-base" : "sd21";
    case CKPT_SDXL:
        return in->unet_in == 9 ? "sdxl-inpainting" : "sdxl-base";
    default:
        return NULL;
    }
}

/* The prediction type a single file implies, or NULL to keep the config's. */
static const char *single_prediction(const struct ckpt_info *in)
{
    if (in->prediction) { /* modelspec.prediction_type (Stability's model spec) */
        if (!strcmp(in->prediction, "epsilon"))
            return "epsilon";
        if (!strcmp(in->prediction, "v") || !strcmp(in->prediction, "v_prediction"))
            return "v_prediction";
    }
    if (in->family == CKPT_SD2) /* diffusers' _legacy_load_scheduler rule */
        return in->global_step == 875000 ? "epsilon" : "v_prediction";
    if (in->v_pred)
        return "v_prediction";
    return NULL;
}

/* A translator for one part of a single file. */
static void single_map(struct sd_single *s, struct weights_src *src, enum ckpt_part part, const char *prefix,
                       enum ckpt_te te)
{
    struct ckpt_map *m = &s->maps[s->n_maps++];
    memset(m, 0, sizeof *m);
    m->part = part;
    char pre[sizeof m->prefix];
    snprintf(pre, sizeof pre, "%s", prefix);
    memcpy(m->prefix, pre, sizeof pre);
    m->te = te;
    m->used = s->used;
    src->file = s->file;
    src->map = ckpt_map_tensor;
    src->map_ctx = m;
}

/* --vae: a diffusers vae folder, or a file in either layout. */
static int vae_override(sd_model *m, const char *vae, const char model_vae_config[1100], struct weights_src *src,
                        struct sd_err *err)
{
    if (!is_regular_file(vae)) { /* <parent>/<name>/config.json + weights */
        char *parent = m->vae_dir, *name = m->vae_leaf;
        snprintf(parent, sizeof m->vae_dir, "%s", vae);
        size_t n = strlen(parent);
        while (n > 1 && parent[n - 1] == '/')
            parent[--n] = 0;
        char *slash = strrchr(parent, '/');
        int len = snprintf(name, sizeof m->vae_leaf, "%s", slash ? slash + 1 : parent);
        if (len < 0 || (size_t)len >= sizeof m->vae_leaf)
            return sd_errf(err, SD_ERR_ARG, "--vae %s: folder name too long", vae);
        if (slash)
            *slash = 0;
        else
            snprintf(parent, sizeof m->vae_dir, ".");
        weights_src_folder(src, parent, name, "diffusion_pytorch_model", NULL);
        return SD_OK;
    }
    int rc = single_open(&m->vae_file, vae, err);
    if (rc)
        return rc;
    const struct st_file *f = m->vae_file.file;
    memset(src, 0, sizeof *src);
    snprintf(src->config, sizeof src->config, "%s", model_vae_config);
    if (st_find(f, "decoder.up_blocks.0.resnets.0.conv1.weight") || st_find(f, "decoder.conv_in.weight")) {
        if (st_find(f, "decoder.up_blocks.0.resnets.0.conv1.weight")) { /* diffusers names */
            src->file = f;
            return SD_OK;
        }
        single_map(&m->vae_file, src, CKPT_PART_VAE, "", CKPT_TE_NONE);
    } else if (m->vae_file.info.vae_prefix[0]) {
        single_map(&m->vae_file, src, CKPT_PART_VAE, m->vae_file.info.vae_prefix, CKPT_TE_NONE);
    } else
        return sd_errf(err, SD_ERR_FORMAT, "%s: no VAE in this file (a %s file)", vae,
                       ckpt_family_name(m->vae_file.info.family));
    return SD_OK;
}

/* ---------------------------------------------------------------- load */

/* Where the configs (and tokenizers) are: the folder itself, --config (a
 * folder or a standard name), or the detected family's standard config. */
static int config_dir(char *out, size_t cap, const char *given, const char *fallback, struct sd_err *err)
{
    const char *name = given ? given : fallback;
    if (!name)
        return sd_errf(err, SD_ERR_ARG, "no config");
    struct stat st;
    if (given && stat(given, &st) == 0 && S_ISDIR(st.st_mode)) {
        snprintf(out, cap, "%s", given);
        return SD_OK;
    }
    if (strchr(name, '/') || !name[0])
        return sd_errf(err, SD_ERR_IO, "--config %s: not a folder", name);
    char rel[128];
    snprintf(rel, sizeof rel, "configs/%s", name);
    if (!sd_data_path(out, cap, rel))
        return sd_errf(err, SD_ERR_IO, "config \"%s\": neither a folder nor a bundled config (%s missing; "
                       "bundled: sd15, sd21, sd21-base, sd-turbo, sdxl-base, sdxl-turbo)", name, out);
    return SD_OK;
}

static void base_name(char *out, size_t cap, const char *path)
{
    char tmp[1024];
    snprintf(tmp, sizeof tmp, "%s", path);
    size_t n = strlen(tmp);
    while (n > 1 && tmp[n - 1] == '/')
        tmp[--n] = 0;
    const char *b = strrchr(tmp, '/');
    if (snprintf(out, cap, "%s", b ? b + 1 : tmp) >= (int)cap)
        out[cap - 1] = 0; /* a display name: a cut one is fine */
    char *dot = strrchr(out, '.');
    if (dot && (!strcmp(dot, ".safetensors") || !strcmp(dot, ".ckpt")))
        *dot = 0;
}

int sd_model_load(sd_model **out, const struct sd_load_opts *o, struct sd_err *err)
{
    *out = NULL;
    if (!o || !o->dir || !*o->dir)
        return sd_errf(err, SD_ERR_ARG, "no model given");
    if (o->threads > 0)
        omp_set_num_threads(o->threads);
    if ((unsigned)o->precision > SD_PRECISION_BF16)
        return sd_errf(err, SD_ERR_ARG, "unknown precision");
    if (o->prediction_type && strcmp(o->prediction_type, "epsilon") && strcmp(o->prediction_type, "v_prediction"))
        return sd_errf(err, SD_ERR_ARG, "prediction type must be epsilon or v_prediction (got '%s')",
                       o->prediction_type);
    double t0 = now_s();
    sd_model *m = calloc(1, sizeof *m);
    if (!m)
        return sd_errf(err, SD_ERR_NOMEM, "out of memory");
    struct sd_model_info *in = &m->info;
    int rc;
    if (o->lora_dir)
        snprintf(m->lora.dir, sizeof m->lora.dir, "%s", o->lora_dir);
    /* bf16 products only where the CPU computes them natively: elsewhere
     * oneDNN emulates them, 4-7x slower than float32 (measured on an
     * AVX-512 Xeon without AVX512-BF16). There the weights are still held
     * in bf16, half the memory, and widened for float32 products just
     * before each layer runs (the wide backend, widen.h): float32's speed. */
    enum sd_precision prec = o->precision;
    const struct nn_backend *be = &nn_backend_cpu;
    if (prec == SD_PRECISION_BF16 && cpu_bf16_native()) {
        be = &nn_backend_cpu_bf16;
    } else if (prec == SD_PRECISION_BF16) {
        be = &nn_backend_cpu_wide;
        snprintf(in->precision_note, sizeof in->precision_note,
                 "bf16: weights held in bf16, products computed in float32 (this CPU has no bf16 dot "
                 "products: %s)", cpu_describe());
    }

    /* 1. What it is, and where its configs are. */
    char cdir[1024];
    const char *prediction = o->prediction_type;
    int single = is_regular_file(o->dir);
    if (single) {
        if ((rc = single_open(&m->single, o->dir, err)) ||
            (rc = ckpt_check_runnable(o->dir, &m->single.info, err)))
            goto fail;
        if (!prediction)
            prediction = single_prediction(&m->single.info);
        if ((rc = config_dir(cdir, sizeof cdir, o->config, standard_config(&m->single.info, prediction), err)))
            goto fail;
    } else {
        if (o->config) {
            rc = sd_errf(err, SD_ERR_ARG, "--config is for single-file checkpoints; %s is a folder", o->dir);
            goto fail;
        }
        snprintf(cdir, sizeof cdir, "%s", o->dir);
    }
    if ((rc = check_model_index(cdir, &m->arch, &m->force_zeros, err)))
        goto fail;
    int xl = m->arch == SD_ARCH_SDXL;
    if (single && (m->single.info.family == CKPT_SDXL) != xl) {
        rc = sd_errf(err, SD_ERR_FORMAT, "%s: a %s checkpoint, but the config in %s is for %s", o->dir,
                     ckpt_family_name(m->single.info.family), cdir, xl ? "SDXL" : "SD 1.x/2.x");
        goto fail;
    }

    /* 2. Tokenizers and the scheduler config. */
    char path[1200];
    snprintf(path, sizeof path, "%s/tokenizer", cdir);
    if ((rc = tok_load(&m->tok, path, err)))
        goto fail;
    if (xl) {
        snprintf(path, sizeof path, "%s/tokenizer_2", cdir);
        if ((rc = tok_load(&m->tok2, path, err)))
            goto fail;
    }
    snprintf(path, sizeof path, "%s/scheduler/scheduler_config.json", cdir);
    if ((rc = sched_config_load(&m->sched_cfg, path, err)))
        goto fail;
    if (prediction) {
        snprintf(m->sched_cfg.prediction_type, sizeof m->sched_cfg.prediction_type, "%s", prediction);
        m->sched_cfg.present |= 1ull << SCHED_KEY_PREDICTION_TYPE;
    }
    if (single && m->single.info.ztsnr) {
        m->sched_cfg.rescale_betas_zero_snr = 1;
        m->sched_cfg.present |= 1ull << SCHED_KEY_RESCALE_BETAS_ZERO_SNR;
    }

    /* 3. The networks. */
    struct sd_single *s = &m->single;
    struct weights_src src;
    static const char *const te_dir[2] = {"text_encoder", "text_encoder_2"};
    for (int i = 0; i < (xl ? 2 : 1); i++) {
        weights_src_folder(&src, o->dir, te_dir[i], "model", o->variant);
        snprintf(src.config, sizeof src.config, "%s/%s/config.json", cdir, te_dir[i]);
        if (single) {
            int k = s->info.n_te == 2 ? i : 0;
            single_map(s, &src, i ? CKPT_PART_TE2 : CKPT_PART_TE1, s->info.te_prefix[k], s->info.te_kind[k]);
        }
        struct clip *c = i ? &m->clip2 : &m->clip;
        if ((rc = clip_load_src(c, &src, be, err)))
            goto fail;
        if (single) {
            s->maps[s->n_maps - 1].te_layers = c->cfg.layers;
            s->maps[s->n_maps - 1].te_projection = c->cfg.with_projection;
        }
    }
    int hinted = o->width > 0 && o->height > 0; /* else plan for the model's own size */
    long px = hinted ? (long)o->width * o->height : 0;
    char vae_config[1100];
    snprintf(vae_config, sizeof vae_config, "%s/vae/config.json", cdir);
    if (o->vae) {
        if ((rc = vae_override(m, o->vae, vae_config, &src, err)))
            goto fail;
    } else {
        weights_src_folder(&src, o->dir, "vae", "diffusion_pytorch_model", o->variant);
        snprintf(src.config, sizeof src.config, "%s", vae_config);
        if (single) {
            if (!s->info.vae_prefix[0]) {
                rc = sd_errf(err, SD_ERR_FORMAT, "%s: the checkpoint has no VAE; give one with --vae", o->dir);
                goto fail;
            }
            single_map(s, &src, CKPT_PART_VAE, s->info.vae_prefix, CKPT_TE_NONE);
        }
    }
    struct vae_config vcfg;
    if ((rc = vae_config_load(&vcfg, src.config, err)))
        goto fail;
    if (src.map)
        ((struct ckpt_map *)src.map_ctx)->vae_blocks = vcfg.n_blocks;
    /* SDXL's VAE runs in float32 (diffusers upcasts it: it overflows in
     * half precision), whatever the precision of the rest. */
    if ((rc = vae_load_src(&m->vae, &src, xl ? &nn_backend_cpu : be, px, err)))
        goto fail;
    long f = m->vae.scale_factor;
    weights_src_folder(&src, o->dir, "unet", "diffusion_pytorch_model", o->variant);
    snprintf(src.config, sizeof src.config, "%s/unet/config.json", cdir);
    if (single) {
        single_map(s, &src, CKPT_PART_UNET, s->info.unet_prefix, CKPT_TE_NONE);
        /* the translator needs the block layout: read the config first */
        struct unet_config *ucfg = malloc(sizeof *ucfg);
        if (!ucfg || (rc = unet_config_load(ucfg, src.config, err))) {
            free(ucfg);
            rc = rc ? rc : sd_errf(err, SD_ERR_NOMEM, "out of memory");
            goto fail;
        }
        s->maps[s->n_maps - 1].unet = ucfg;
    }
    rc = unet_load_src(&m->unet, &src, be, px / (f * f), err);
    if (single) { /* point the translator at the UNet's own copy of the config */
        free((void *)s->maps[s->n_maps - 1].unet);
        s->maps[s->n_maps - 1].unet = &m->unet.cfg;
    }
    if (rc)
        goto fail;
    if (single && (rc = ckpt_check_all_used(s->file, s->maps, s->n_maps, err)))
        goto fail;

    /* 4. Do the parts fit together? */
    const struct unet_config *uc = &m->unet.cfg;
    int ctx_dim = m->clip.cfg.hidden + (xl ? m->clip2.cfg.hidden : 0);
    if (tok_vocab_size(m->tok) > m->clip.cfg.vocab_size || (xl && tok_vocab_size(m->tok2) > m->clip2.cfg.vocab_size)) {
        rc = sd_errf(err, SD_ERR_FORMAT, "%s: a tokenizer knows more tokens than its text encoder", cdir);
        goto fail;
    }
    int lc = m->vae.cfg.latent_channels; /* inpainting UNets: latents + mask + masked image latents */
    if (ctx_dim != uc->cross_attention_dim || (uc->in_channels != lc && uc->in_channels != 2 * lc + 1) ||
        uc->out_channels != lc) {
        rc = sd_errf(err, SD_ERR_FORMAT, "%s: components do not fit together (text encoder width %d, "
                     "UNet cross-attention %d, UNet channels %d/%d, VAE latent channels %d)", o->dir, ctx_dim,
                     uc->cross_attention_dim, uc->in_channels, uc->out_channels, m->vae.cfg.latent_channels);
        goto fail;
    }
    if (xl && (!uc->addition_time_embed_dim || !m->clip2.cfg.with_projection ||
               m->clip2.cfg.projection_dim + 6 * uc->addition_time_embed_dim !=
                   uc->projection_class_embeddings_input_dim ||
               tok_max_length(m->tok) != tok_max_length(m->tok2))) {
        rc = sd_errf(err, SD_ERR_FORMAT, "%s: an SDXL pipeline needs a \"text_time\" UNet whose "
                     "add_embedding reads the second text encoder's projection (%d) and 6 x %d time ids "
                     "(it reads %d)", o->dir, m->clip2.cfg.projection_dim, uc->addition_time_embed_dim,
                     uc->projection_class_embeddings_input_dim);
        goto fail;
    }
    if (!xl && uc->addition_time_embed_dim) {
        rc = sd_errf(err, SD_ERR_FORMAT, "%s: the UNet has SDXL's text_time embedding but the pipeline is "
                     "not StableDiffusionXLPipeline", o->dir);
        goto fail;
    }
    m->ctx_dim = ctx_dim;
    m->pooled_dim = xl ? m->clip2.cfg.projection_dim : 0;

    /* 5. What callers see. */
    base_name(in->name, sizeof in->name, o->dir);
    snprintf(in->family, sizeof in->family, "%s",
             xl ? "SDXL" : m->clip.cfg.act == CLIP_QUICK_GELU ? "SD 1.x" : "SD 2.x"); /* CLIP-L : OpenCLIP */
    snprintf(in->format, sizeof in->format, "%s", single ? "single-file" : "diffusers");
    snprintf(in->prediction_type, sizeof in->prediction_type, "%s", m->sched_cfg.prediction_type);
    in->default_guidance = xl ? 5.0f : 7.5f;
    in->vae_scale_factor = m->vae.scale_factor;
    in->default_width = in->default_height = uc->sample_size * m->vae.scale_factor;
    in->text_hidden = ctx_dim;
    in->text_layers = m->clip.cfg.layers;
    in->max_clip_skip = xl ? (m->clip.cfg.layers < m->clip2.cfg.layers ? m->clip.cfg.layers : m->clip2.cfg.layers) - 2
                           : m->clip.cfg.layers - 1;
    in->is_v_prediction = !strcmp(m->sched_cfg.prediction_type, "v_prediction");
    in->default_scheduler = SD_SCHED_DEFAULT;
    for (int i = 1; i < SD_SCHED_COUNT; i++) {
        int karras;
        if (sd_sched_kind(i, &karras) == m->sched_cfg.kind &&
            karras == (m->sched_cfg.kind == SCHED_DPMPP_2M && m->sched_cfg.use_karras_sigmas)) {
            in->default_scheduler = i;
            break;
        }
    }
    snprintf(in->scheduler_class, sizeof in->scheduler_class, "%s", m->sched_cfg.class_name);
    in->precision = prec;
    snprintf(in->compute, sizeof in->compute, "%s",
             be == &nn_backend_cpu_bf16 ? "bf16" : be == &nn_backend_cpu_wide ? "float32 on bf16 weights" : "float32");

    /* 6. Plan every network for the expected job (the size hint,
     * guidance's batch of 2, a full prompt) now: oneDNN primitives,
     * Winograd plans and the shared activation arena (faulted in as it is
     * allocated), so the first image runs as fast as the next ones. */
    arena_init(&m->arena);
    nn_share_arena(&m->clip.nn, &m->arena);
    if (xl)
        nn_share_arena(&m->clip2.nn, &m->arena);
    nn_share_arena(&m->unet.nn, &m->arena);
    nn_share_arena(&m->vae.dec.nn, &m->arena);
    nn_share_arena(&m->vae.enc.nn, &m->arena);
    int T = tok_max_length(m->tok);
    pcache_init(&m->prompts, SD_PROMPT_CACHE, (size_t)T * ctx_dim + m->pooled_dim);
    int lat_w = (hinted ? o->width : in->default_width) / (int)f;
    int lat_h = (hinted ? o->height : in->default_height) / (int)f;
    if ((rc = clip_prepare(&m->clip, T, err)) || (xl && (rc = clip_prepare(&m->clip2, T, err))) ||
        (rc = unet_prepare(&m->unet, uc->time_cond_proj_dim > 0 ? 1 : 2, lat_h, lat_w, T, err)) ||
        (rc = vae_prepare_decode(&m->vae, lat_h, lat_w, err)))
        goto fail;
    in->weight_bytes = weights_resident(&m->clip.w) + weights_resident(&m->clip2.w) +
                       weights_resident(&m->unet.w) + weights_resident(&m->vae.w);
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

void sd_model_free(sd_model *m)
{
    if (!m)
        return;
    sd_free_buffers(m);
    pcache_free(&m->prompts);
    tok_free(m->tok);
    tok_free(m->tok2);
    clip_free(&m->clip);
    clip_free(&m->clip2);
    unet_free(&m->unet);
    vae_free(&m->vae);
    arena_free(&m->arena);
    single_close(&m->single);
    single_close(&m->vae_file);
    lora_state_free(&m->lora);
    free(m);
}
