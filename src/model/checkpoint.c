/* checkpoint.c - see checkpoint.h. */
#include "model/checkpoint.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const family_names[CKPT_FAMILY_COUNT] = {
    [CKPT_UNKNOWN] = "unknown",
    [CKPT_SD1] = "SD 1.x",
    [CKPT_SD2] = "SD 2.x",
    [CKPT_SDXL] = "SDXL",
    [CKPT_SDXL_REFINER] = "SDXL refiner",
    [CKPT_PLAYGROUND25] = "Playground v2.5",
    [CKPT_SD3] = "Stable Diffusion 3",
    [CKPT_FLUX] = "Flux",
    [CKPT_CASCADE] = "Stable Cascade",
    [CKPT_UPSCALE] = "SD x4 upscaler",
    [CKPT_CONTROLNET] = "ControlNet",
    [CKPT_LORA] = "LoRA",
    [CKPT_VAE] = "VAE",
    [CKPT_DIFFUSERS] = "diffusers component",
};

const char *ckpt_family_name(enum ckpt_family f)
{
    return (unsigned)f < CKPT_FAMILY_COUNT ? family_names[f] : "?";
}

/* ------------------------------------------------------------ detection */

#define UNET "model.diffusion_model."

static const struct st_tensor *find(const struct st_file *f, const char *name)
{
    return st_find(f, name);
}

static int has(const struct st_file *f, const char *name)
{
    return st_find(f, name) != NULL;
}

/* Either spelling: with the "model.diffusion_model." prefix or bare. */
static int has_either(const struct st_file *f, const char *bare)
{
    char n[256];
    snprintf(n, sizeof n, UNET "%s", bare);
    return has(f, n) || has(f, bare);
}

static int64_t last_dim(const struct st_tensor *t)
{
    return t && t->ndim > 0 ? t->shape[t->ndim - 1] : -1;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !memcmp(s + a - b, suffix, b);
}

static int starts_with(const char *s, const char *prefix)
{
    return !strncmp(s, prefix, strlen(prefix));
}

/* Any tensor named like a LoRA or LyCORIS module. */
static int looks_like_lora(const struct st_file *f)
{
    static const char *const marks[] = {".lora_down.weight", ".lora_up.weight", ".lora_A.weight",
                                        ".lora_B.weight", ".hada_w1_a", ".lokr_w1", ".lora.down.weight"};
    for (int i = 0; i < st_count(f); i++)
        for (size_t j = 0; j < sizeof marks / sizeof marks[0]; j++)
            if (ends_with(st_at(f, i)->name, marks[j]))
                return 1;
    return 0;
}

/* The first of the candidate text-encoder prefixes whose embedding is in
 * the file, with its layout. */
static void find_te(const struct st_file *f, const char *const *prefixes, int n, char *out, size_t cap,
                    enum ckpt_te *kind)
{
    char name[160];
    *kind = CKPT_TE_NONE;
    out[0] = 0;
    for (int i = 0; i < n; i++) {
        snprintf(name, sizeof name, "%stoken_embedding.weight", prefixes[i]);
        if (has(f, name)) {
            snprintf(out, cap, "%s", prefixes[i]);
            *kind = CKPT_TE_OPENCLIP;
            return;
        }
        snprintf(name, sizeof name, "%stext_model.embeddings.token_embedding.weight", prefixes[i]);
        char old[160];
        snprintf(old, sizeof old, "%sembeddings.token_embedding.weight", prefixes[i]);
        if (has(f, name) || has(f, old)) {
            snprintf(out, cap, "%s", prefixes[i]);
            *kind = CKPT_TE_HF;
            return;
        }
    }
}

void ckpt_detect(const struct st_file *f, struct ckpt_info *in)
{
    memset(in, 0, sizeof *in);
    in->global_step = -1;
    in->unet_in = 4;
    in->prediction = st_metadata(f, "modelspec.prediction_type");
    const struct st_tensor *conv_in = find(f, UNET "input_blocks.0.0.weight");
    int has_unet = conv_in != NULL;
    if (has_unet) {
        snprintf(in->unet_prefix, sizeof in->unet_prefix, "%s", UNET);
        if (conv_in->ndim == 4)
            in->unet_in = (int)conv_in->shape[1];
    }
    if (has(f, "first_stage_model.decoder.conv_in.weight"))
        snprintf(in->vae_prefix, sizeof in->vae_prefix, "first_stage_model.");
    else if (has(f, "vae.decoder.conv_in.weight"))
        snprintf(in->vae_prefix, sizeof in->vae_prefix, "vae.");
    in->v_pred = has(f, "v_pred");
    in->ztsnr = has(f, "ztsnr");

    /* What diffusers' infer_diffusers_model_type checks, in its order. */
    const struct st_tensor *k2 = find(f, UNET "input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight");
    const struct st_tensor *kxl = find(f, UNET "input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight");
    if (has_unet && last_dim(k2) == 1024)
        in->family = CKPT_SD2;
    else if (has(f, "edm_mean"))
        in->family = CKPT_PLAYGROUND25;
    else if (has(f, "conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias") ||
             (has_unet && (last_dim(kxl) == 2048 || has(f, "conditioner.embedders.1.model.positional_embedding"))))
        in->family = CKPT_SDXL;
    else if (has(f, "conditioner.embedders.0.model.transformer.resblocks.9.mlp.c_proj.bias"))
        in->family = CKPT_SDXL_REFINER;
    else if (has(f, UNET "input_blocks.10.0.skip_connection.bias"))
        in->family = CKPT_UPSCALE;
    else if (has(f, "control_model.time_embed.0.weight") || has(f, "controlnet_cond_embedding.conv_in.weight"))
        in->family = CKPT_CONTROLNET;
    else if (has(f, "clip_txt_mapper.weight") || has(f, "down_blocks.1.0.channelwise.0.weight"))
        in->family = CKPT_CASCADE;
    else if (has_either(f, "joint_blocks.0.context_block.adaLN_modulation.1.bias"))
        in->family = CKPT_SD3;
    else if (has_either(f, "double_blocks.0.img_attn.norm.key_norm.scale"))
        in->family = CKPT_FLUX;
    else if (has_unet)
        in->family = CKPT_SD1; /* diffusers: "otherwise v1" */
    else if (looks_like_lora(f))
        in->family = CKPT_LORA;
    else if (has(f, "decoder.conv_in.weight") || has(f, "decoder.up_blocks.0.resnets.0.conv1.weight") ||
             in->vae_prefix[0])
        in->family = CKPT_VAE;
    else if (has(f, "conv_in.weight") && (has(f, "time_embedding.linear_1.weight") ||
                                          has(f, "down_blocks.0.resnets.0.conv1.weight")))
        in->family = CKPT_DIFFUSERS;

    static const char *const sd_te[] = {"cond_stage_model.transformer.", "cond_stage_model.model.",
                                        "conditioner.embedders.0.transformer.",
                                        "conditioner.embedders.0.model.", "text_encoders.clip_l.transformer."};
    static const char *const xl_te1[] = {"conditioner.embedders.0.transformer.",
                                         "cond_stage_model.0.transformer.", "text_encoders.clip_l.transformer."};
    static const char *const xl_te2[] = {"conditioner.embedders.1.model.", "cond_stage_model.1.model.",
                                         "text_encoders.clip_g.transformer."};
    if (in->family == CKPT_SD1 || in->family == CKPT_SD2) {
        find_te(f, sd_te, 5, in->te_prefix[0], sizeof in->te_prefix[0], &in->te_kind[0]);
        in->n_te = 1;
    } else if (in->family == CKPT_SDXL) {
        find_te(f, xl_te1, 3, in->te_prefix[0], sizeof in->te_prefix[0], &in->te_kind[0]);
        find_te(f, xl_te2, 3, in->te_prefix[1], sizeof in->te_prefix[1], &in->te_kind[1]);
        in->n_te = 2;
    }
}

/* "a" or "an" before a family's name ("an SDXL", "a Flux"). */
static const char *article(const char *name)
{
    return name[0] == 'S' && name[1] == 'D' ? "an" : "a";
}

int ckpt_check_runnable(const char *path, const struct ckpt_info *in, struct sd_err *err)
{
    const char *fam = ckpt_family_name(in->family);
    switch (in->family) {
    case CKPT_SD1:
    case CKPT_SD2:
    case CKPT_SDXL:
        break;
    case CKPT_UNKNOWN:
        return sd_errf(err, SD_ERR_UNSUPPORTED, "%s: not a Stable Diffusion checkpoint diffusiond knows "
                       "(no UNet under \"model.diffusion_model.\")", path);
    case CKPT_LORA:
        return sd_errf(err, SD_ERR_UNSUPPORTED, "%s: a LoRA, not a model: load a model and apply it with "
                       "--lora-dir and --lora NAME:WEIGHT", path);
    case CKPT_VAE:
        return sd_errf(err, SD_ERR_UNSUPPORTED, "%s: a VAE alone, not a model: give it with --vae", path);
    case CKPT_DIFFUSERS:
        return sd_errf(err, SD_ERR_UNSUPPORTED, "%s: one network of a diffusers folder, not a whole model: "
                       "give the folder (with model_index.json) as --model", path);
    default:
        return sd_errf(err, SD_ERR_UNSUPPORTED, "%s: %s %s checkpoint: not supported (diffusiond runs "
                       "SD 1.x, SD 2.x and SDXL)", path, article(fam), fam);
    }
    if (in->unet_in != 4 && in->unet_in != 9) /* 9: inpainting UNets, which the inpainting pipeline runs */
        return sd_errf(err, SD_ERR_UNSUPPORTED, "%s: %s %s %s checkpoint (UNet with %d input channels): not "
                       "supported", path, in->unet_in == 8 ? "an" : "a",
                       in->unet_in == 8 ? "instruct-pix2pix" : "unusual", fam, in->unet_in);
    for (int i = 0; i < in->n_te; i++)
        if (in->te_kind[i] == CKPT_TE_NONE)
            return sd_errf(err, SD_ERR_FORMAT, "%s: %s %s checkpoint without its %stext encoder", path, article(fam), fam,
                           in->n_te > 1 ? (i ? "second " : "first ") : "");
    return SD_OK;
}

/* ---------------------------------------------------- name translation */

/* Parse "<head>.<int>.<rest>" after `head`; returns rest or NULL. */
static const char *take_index(const char *s, const char *head, int *idx)
{
    size_t n = strlen(head);
    if (strncmp(s, head, n))
        return NULL;
    s += n;
    if (*s < '0' || *s > '9')
        return NULL;
    int v = 0;
    while (*s >= '0' && *s <= '9' && v < 100000)
        v = v * 10 + (*s++ - '0');
    if (*s != '.')
        return NULL;
    *idx = v;
    return s + 1;
}

/* ResnetBlock2D's parameter names in the original UNet. */
static const char *unet_resnet_part(const char *rest, char *buf, size_t cap)
{
    static const char *const map[][2] = {{"norm1.", "in_layers.0."},       {"conv1.", "in_layers.2."},
                                         {"time_emb_proj.", "emb_layers.1."}, {"norm2.", "out_layers.0."},
                                         {"conv2.", "out_layers.3."},       {"conv_shortcut.", "skip_connection."}};
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (starts_with(rest, map[i][0])) {
            snprintf(buf, cap, "%s%s", map[i][1], rest + strlen(map[i][0]));
            return buf;
        }
    return NULL;
}

int ckpt_unet_ldm_name(const struct unet_config *c, const char *name, char *out, size_t cap)
{
    static const char *const fixed[][2] = {
        {"conv_in.", "input_blocks.0.0."},         {"time_embedding.linear_1.", "time_embed.0."},
        {"time_embedding.linear_2.", "time_embed.2."}, {"add_embedding.linear_1.", "label_emb.0.0."},
        {"add_embedding.linear_2.", "label_emb.0.2."}, {"conv_norm_out.", "out.0."},
        {"conv_out.", "out.2."},
    };
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        if (starts_with(name, fixed[i][0]))
            return snprintf(out, cap, "%s%s", fixed[i][1], name + strlen(fixed[i][0])) < (int)cap;
    int L = c->layers_per_block, nb = c->n_blocks, b, l;
    char part[192];
    const char *r;
    if ((r = take_index(name, "down_blocks.", &b)) && b < nb) {
        const char *rr;
        if ((rr = take_index(r, "resnets.", &l)) && l < L && unet_resnet_part(rr, part, sizeof part))
            return snprintf(out, cap, "input_blocks.%d.0.%s", 1 + b * (L + 1) + l, part) < (int)cap;
        if ((rr = take_index(r, "attentions.", &l)) && l < L)
            return snprintf(out, cap, "input_blocks.%d.1.%s", 1 + b * (L + 1) + l, rr) < (int)cap;
        if (starts_with(r, "downsamplers.0.conv."))
            return snprintf(out, cap, "input_blocks.%d.0.op.%s", (b + 1) * (L + 1),
                            r + strlen("downsamplers.0.conv.")) < (int)cap;
        return 0;
    }
    if ((r = take_index(name, "up_blocks.", &b)) && b < nb) {
        const char *rr;
        if ((rr = take_index(r, "resnets.", &l)) && l <= L && unet_resnet_part(rr, part, sizeof part))
            return snprintf(out, cap, "output_blocks.%d.0.%s", b * (L + 1) + l, part) < (int)cap;
        if ((rr = take_index(r, "attentions.", &l)) && l <= L)
            return snprintf(out, cap, "output_blocks.%d.1.%s", b * (L + 1) + l, rr) < (int)cap;
        if (starts_with(r, "upsamplers.0.conv."))
            return snprintf(out, cap, "output_blocks.%d.%d.conv.%s", b * (L + 1) + L, c->up_attn[b] ? 2 : 1,
                            r + strlen("upsamplers.0.conv.")) < (int)cap;
        return 0;
    }
    if ((r = take_index(name, "mid_block.resnets.", &l)) && l < 2 && unet_resnet_part(r, part, sizeof part))
        return snprintf(out, cap, "middle_block.%d.%s", 2 * l, part) < (int)cap;
    if (starts_with(name, "mid_block.attentions.0."))
        return snprintf(out, cap, "middle_block.1.%s", name + strlen("mid_block.attentions.0.")) < (int)cap;
    return 0;
}

/* AutoencoderKL names in the original layout (decoder levels reversed). */
static int vae_ldm_name(int nb, const char *name, char *out, size_t cap, int *squeeze)
{
    *squeeze = 0;
    const char *coder = starts_with(name, "encoder.") ? "encoder." : starts_with(name, "decoder.") ? "decoder." : NULL;
    if (!coder)
        return snprintf(out, cap, "%s", name) < (int)cap; /* quant_conv, post_quant_conv */
    const char *r = name + 8, *rr;
    int i, j;
    char tail[192];
    /* ResnetBlock2D: only the shortcut differs */
#define RES_TAIL(s) (starts_with(s, "conv_shortcut.") ? (snprintf(tail, sizeof tail, "nin_shortcut.%s", \
                                                                   (s) + strlen("conv_shortcut.")), tail) \
                                                       : (s))
    if ((rr = take_index(r, "down_blocks.", &i))) {
        const char *x;
        if ((x = take_index(rr, "resnets.", &j)))
            return snprintf(out, cap, "%sdown.%d.block.%d.%s", coder, i, j, RES_TAIL(x)) < (int)cap;
        if (starts_with(rr, "downsamplers.0.conv."))
            return snprintf(out, cap, "%sdown.%d.downsample.conv.%s", coder, i,
                            rr + strlen("downsamplers.0.conv.")) < (int)cap;
        return 0;
    }
    if ((rr = take_index(r, "up_blocks.", &i)) && i < nb) {
        const char *x;
        if ((x = take_index(rr, "resnets.", &j)))
            return snprintf(out, cap, "%sup.%d.block.%d.%s", coder, nb - 1 - i, j, RES_TAIL(x)) < (int)cap;
        if (starts_with(rr, "upsamplers.0.conv."))
            return snprintf(out, cap, "%sup.%d.upsample.conv.%s", coder, nb - 1 - i,
                            rr + strlen("upsamplers.0.conv.")) < (int)cap;
        return 0;
    }
    if ((rr = take_index(r, "mid_block.resnets.", &i)))
        return snprintf(out, cap, "%smid.block_%d.%s", coder, i + 1, RES_TAIL(rr)) < (int)cap;
#undef RES_TAIL
    if (starts_with(r, "mid_block.attentions.0.")) {
        static const char *const map[][2] = {{"group_norm.", "norm."}, {"to_q.", "q."}, {"to_k.", "k."},
                                             {"to_v.", "v."},          {"to_out.0.", "proj_out."}};
        rr = r + strlen("mid_block.attentions.0.");
        for (size_t k = 0; k < sizeof map / sizeof map[0]; k++)
            if (starts_with(rr, map[k][0])) {
                *squeeze = k > 0;
                return snprintf(out, cap, "%smid.attn_1.%s%s", coder, map[k][1], rr + strlen(map[k][0])) <
                       (int)cap;
            }
        return 0;
    }
    if (starts_with(r, "conv_norm_out."))
        return snprintf(out, cap, "%snorm_out.%s", coder, r + strlen("conv_norm_out.")) < (int)cap;
    return snprintf(out, cap, "%s", name) < (int)cap; /* conv_in, conv_out */
}

/* OpenCLIP text tower names; *part: -1, or 0/1/2 for q/k/v rows of
 * in_proj; *transpose for text_projection. */
static int openclip_name(const char *name, char *out, size_t cap, int *part, int *transpose)
{
    *part = -1;
    *transpose = 0;
    static const char *const fixed[][2] = {
        {"text_model.embeddings.token_embedding.weight", "token_embedding.weight"},
        {"text_model.embeddings.position_embedding.weight", "positional_embedding"},
        {"text_model.final_layer_norm.weight", "ln_final.weight"},
        {"text_model.final_layer_norm.bias", "ln_final.bias"},
    };
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        if (!strcmp(name, fixed[i][0]))
            return snprintf(out, cap, "%s", fixed[i][1]) < (int)cap;
    if (!strcmp(name, "text_projection.weight")) {
        *transpose = 1;
        return snprintf(out, cap, "text_projection") < (int)cap;
    }
    int l;
    const char *r = take_index(name, "text_model.encoder.layers.", &l);
    if (!r)
        return 0;
    static const char *const map[][2] = {{"layer_norm1.", "ln_1."}, {"layer_norm2.", "ln_2."},
                                         {"self_attn.out_proj.", "attn.out_proj."},
                                         {"mlp.fc1.", "mlp.c_fc."}, {"mlp.fc2.", "mlp.c_proj."}};
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (starts_with(r, map[i][0]))
            return snprintf(out, cap, "transformer.resblocks.%d.%s%s", l, map[i][1], r + strlen(map[i][0])) <
                   (int)cap;
    static const char *const qkv[] = {"self_attn.q_proj.", "self_attn.k_proj.", "self_attn.v_proj."};
    for (int i = 0; i < 3; i++)
        if (starts_with(r, qkv[i])) {
            *part = i;
            const char *wb = r + strlen(qkv[i]);
            if (strcmp(wb, "weight") && strcmp(wb, "bias"))
                return 0;
            return snprintf(out, cap, "transformer.resblocks.%d.attn.in_proj_%s", l, wb) < (int)cap;
        }
    return 0;
}

static void mark_used(const struct ckpt_map *m, const struct st_file *f, const struct st_tensor *t)
{
    int i = st_index(f, t);
    if (m->used && i >= 0)
        m->used[i] = 1;
}

int ckpt_map_tensor(const void *ctx, const struct st_file *f, const char *name, struct st_tensor *view,
                    int *transpose)
{
    const struct ckpt_map *m = ctx;
    char ldm[320], full[400];
    int squeeze = 0, part = -1;
    *transpose = 0;
    switch (m->part) {
    case CKPT_PART_UNET:
        if (!ckpt_unet_ldm_name(m->unet, name, ldm, sizeof ldm))
            return 0;
        break;
    case CKPT_PART_VAE:
        if (!vae_ldm_name(m->vae_blocks, name, ldm, sizeof ldm, &squeeze))
            return 0;
        break;
    case CKPT_PART_TE1:
    case CKPT_PART_TE2:
        if (m->te == CKPT_TE_OPENCLIP) {
            if (!openclip_name(name, ldm, sizeof ldm, &part, transpose))
                return 0;
        } else {
            snprintf(ldm, sizeof ldm, "%s", name);
            snprintf(full, sizeof full, "%s%s", m->prefix, ldm);
            if (!st_find(f, full) && starts_with(name, "text_model.")) /* old SD 1 files */
                snprintf(ldm, sizeof ldm, "%s", name + strlen("text_model."));
        }
        break;
    }
    snprintf(full, sizeof full, "%s%s", m->prefix, ldm);
    const struct st_tensor *t = st_find(f, full);
    if (!t)
        return 0;
    *view = *t;
    if (squeeze && t->ndim == 4 && t->shape[2] == 1 && t->shape[3] == 1)
        view->ndim = 2;
    if (part >= 0) { /* rows [part*W, (part+1)*W) of [3W, ...] */
        if (t->ndim < 1 || t->shape[0] % 3)
            return 0;
        int64_t rows = t->shape[0] / 3;
        size_t bytes = t->nbytes / 3;
        view->shape[0] = rows;
        view->numel = t->numel / 3;
        view->nbytes = bytes;
        view->data = t->data ? t->data + (size_t)part * bytes : NULL;
    }
    if (*transpose) {
        if (t->ndim != 2)
            return 0;
        view->shape[0] = t->shape[1];
        view->shape[1] = t->shape[0];
    }
    mark_used(m, f, t);
    return 1;
}

/* ------------------------------------------------------- all used? */

/* Tensors under a part's prefix that are expected to stay unread. */
static int known_extra(const struct ckpt_map *m, const char *rest)
{
    if (ends_with(rest, "position_ids") || ends_with(rest, "logit_scale"))
        return 1;
    if (m->part == CKPT_PART_VAE) /* the encoder is read on first use (image-to-image) */
        return starts_with(rest, "encoder.") || starts_with(rest, "quant_conv.");
    if ((m->part == CKPT_PART_TE1 || m->part == CKPT_PART_TE2) && m->te == CKPT_TE_OPENCLIP) {
        int l;
        if (take_index(rest, "transformer.resblocks.", &l) && l >= m->te_layers)
            return 1; /* SD 2.x conditions on the penultimate layer */
        if (!m->te_projection && !strcmp(rest, "text_projection"))
            return 1;
    }
    return 0;
}

int ckpt_check_all_used(const struct st_file *f, const struct ckpt_map *maps, int n, struct sd_err *err)
{
    int unused = 0;
    const char *first[3] = {0};
    for (int i = 0; i < st_count(f); i++) {
        const char *name = st_at(f, i)->name;
        for (int k = 0; k < n; k++) {
            const struct ckpt_map *m = &maps[k];
            if (!m->prefix[0] || !starts_with(name, m->prefix) || (m->used && m->used[i]))
                continue;
            if (known_extra(m, name + strlen(m->prefix)))
                continue;
            if (unused < 3)
                first[unused] = name;
            unused++;
            break;
        }
    }
    if (!unused)
        return SD_OK;
    return sd_errf(err, SD_ERR_FORMAT, "%s: %d tensor%s of the checkpoint fit no layer of the configured "
                   "architecture (%s%s%s%s%s%s): the model differs from the standard config; give its "
                   "configs with --config DIR", st_path(f), unused, unused > 1 ? "s" : "", first[0],
                   first[1] ? ", " : "", first[1] ? first[1] : "", first[2] ? ", " : "",
                   first[2] ? first[2] : "", unused > 3 ? ", ..." : "");
}
