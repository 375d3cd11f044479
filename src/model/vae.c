/* vae.c - see vae.h. */
#include "model/vae.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define VAE_EPS 1e-6f /* every GroupNorm of the autoencoder */

/* ------------------------------------------------------------- loading */

/* Mid-block attention; files written by diffusers <= 0.13 name the
 * projections query/key/value/proj_attn (sd-reference 3.4). */
static void attn_load(struct weights *w, struct vae_attn *a, const char *prefix, int C, int groups)
{
    static const char *names[2][4] = {{"to_q", "to_k", "to_v", "to_out.0"},
                                      {"query", "key", "value", "proj_attn"}};
    char n[256];
    a->C = C;
    a->groups = groups;
    snprintf(n, sizeof n, "%s.group_norm", prefix);
    load_norm(w, &a->norm, n, C);
    snprintf(n, sizeof n, "%s.to_q.weight", prefix);
    int legacy = !weights_has(w, n);
    struct nn_linear *ls[4] = {&a->q, &a->k, &a->v, &a->o};
    for (int i = 0; i < 4; i++) {
        snprintf(n, sizeof n, "%s.%s", prefix, names[legacy][i]);
        load_linear(w, ls[i], n, C, C, 1, 0);
    }
}

static void mid_load(struct weights *w, struct vae_coder *d, const char *prefix, int C,
                     const struct vae_config *c)
{
    char n[160];
    for (int i = 0; i < 2; i++) {
        snprintf(n, sizeof n, "%s.mid_block.resnets.%d", prefix, i);
        resnet_load(w, &d->mid_res[i], n, C, C, 0, c->norm_groups, VAE_EPS);
    }
    if (c->mid_attn) {
        snprintf(n, sizeof n, "%s.mid_block.attentions.0", prefix);
        attn_load(w, &d->mid_attn, n, C, c->norm_groups);
    }
}

static void decoder_load(struct weights *w, struct vae *v, long image_px)
{
    const struct vae_config *c = &v->cfg;
    struct vae_coder *d = &v->dec;
    int nb = c->n_blocks, Ctop = c->block_out[nb - 1];
    char n[256];
    long L = image_px >> (2 * (nb - 1)); /* latent pixels */
    w->conv_px = conv_px(L);             /* hint for the backend */
    if (c->use_post_quant_conv)
        load_conv(w, &v->post_quant_conv, "post_quant_conv", c->latent_channels, c->latent_channels,
                  1, 1, 0, 0);
    load_conv(w, &d->conv_in, "decoder.conv_in", c->latent_channels, Ctop, 3, 1, 1, 1);
    mid_load(w, d, "decoder", Ctop, c);
    int prev = Ctop;
    for (int i = 0; i < nb; i++) {
        struct vae_level *l = &d->level[i];
        int C = c->block_out[nb - 1 - i];
        l->n_res = c->layers_per_block + 1;
        w->conv_px = conv_px(L << (2 * i));
        for (int j = 0; j < l->n_res; j++) {
            snprintf(n, sizeof n, "decoder.up_blocks.%d.resnets.%d", i, j);
            resnet_load(w, &l->res[j], n, j ? C : prev, C, 0, c->norm_groups, VAE_EPS);
        }
        l->has_sampler = i < nb - 1;
        if (l->has_sampler) {
            snprintf(n, sizeof n, "decoder.up_blocks.%d.upsamplers.0.conv", i);
            load_upconv(w, &l->sampler, n, C, C); /* on this level's pixels (conv_px) */
        }
        prev = C;
    }
    load_norm(w, &d->norm_out, "decoder.conv_norm_out", c->block_out[0]);
    load_conv(w, &d->conv_out, "decoder.conv_out", c->block_out[0], c->out_channels, 3, 1, 1, 1);
}

static void encoder_load(struct weights *w, struct vae *v, long image_px)
{
    const struct vae_config *c = &v->cfg;
    struct vae_coder *e = &v->enc;
    int nb = c->n_blocks;
    char n[256];
    w->conv_px = conv_px(image_px); /* hint for the backend */
    load_conv(w, &e->conv_in, "encoder.conv_in", c->in_channels, c->block_out[0], 3, 1, 1, 1);
    int prev = c->block_out[0];
    for (int i = 0; i < nb; i++) {
        struct vae_level *l = &e->level[i];
        int C = c->block_out[i];
        l->n_res = c->layers_per_block;
        w->conv_px = conv_px(image_px >> (2 * i));
        for (int j = 0; j < l->n_res; j++) {
            snprintf(n, sizeof n, "encoder.down_blocks.%d.resnets.%d", i, j);
            resnet_load(w, &l->res[j], n, j ? C : prev, C, 0, c->norm_groups, VAE_EPS);
        }
        /* The encoder's downsampler pads one zero row/column at the
         * bottom/right only, then convolves with stride 2 (sd-reference 3.2). */
        l->has_sampler = i < nb - 1;
        if (l->has_sampler) {
            snprintf(n, sizeof n, "encoder.down_blocks.%d.downsamplers.0.conv", i);
            load_conv(w, &l->sampler, n, C, C, 3, 2, 0, 1);
        }
        prev = C;
    }
    int Ctop = c->block_out[nb - 1];
    w->conv_px = conv_px(image_px >> (2 * (nb - 1)));
    mid_load(w, e, "encoder", Ctop, c);
    load_norm(w, &e->norm_out, "encoder.conv_norm_out", Ctop);
    load_conv(w, &e->conv_out, "encoder.conv_out", Ctop, 2 * c->latent_channels, 3, 1, 1, 1);
    if (c->use_quant_conv)
        load_conv(w, &v->quant_conv, "quant_conv", 2 * c->latent_channels, 2 * c->latent_channels, 1,
                  1, 0, 0);
}

int vae_load(struct vae *v, const char *dir, const char *variant, const struct nn_backend *be,
             long image_px, struct sd_err *err)
{
    struct weights_src src;
    weights_src_folder(&src, dir, "vae", "diffusion_pytorch_model", variant);
    return vae_load_src(v, &src, be, image_px, err);
}

int vae_load_src(struct vae *v, const struct weights_src *src, const struct nn_backend *be, long image_px,
                 struct sd_err *err)
{
    memset(v, 0, sizeof *v);
    nn_init(&v->dec.nn, be);
    nn_init(&v->enc.nn, be);
    int rc = vae_config_load(&v->cfg, src->config, err);
    if (rc)
        return rc;
    v->scale_factor = 1 << (v->cfg.n_blocks - 1);
    rc = weights_open_src(&v->w, src, err);
    if (rc)
        return rc;
    v->w.be = be;
    decoder_load(&v->w, v, image_px > 0 ? image_px : (long)v->cfg.sample_size * v->cfg.sample_size);
    /* Some checkpoints ship the decoder only; the encoder is optional, and
     * prepared on first use: text-to-image never needs it (it would hold
     * 34M parameters, ~0.25 GB in float32 with its Winograd weights). */
    v->has_encoder = weights_has(&v->w, "encoder.conv_in.weight");
    return weights_status(&v->w);
}

/* ------------------------------------------------------------- forward */

/* x[HW, C] += attention(group_norm(x)), one head over all HW tokens. */
static void attn_forward(struct nn *nn, struct vae_attn *a, float *x, int HW)
{
    size_t m = nn_mark(nn), n = (size_t)HW * a->C;
    float *h = nn_alloc(nn, n), *q = nn_alloc(nn, n), *k = nn_alloc(nn, n), *v = nn_alloc(nn, n);
    nn_groupnorm(nn, h, x, &a->norm, 1, HW, a->groups, VAE_EPS, 0);
    nn_linear(nn, &a->q, h, q, HW);
    nn_linear(nn, &a->k, h, k, HW);
    nn_linear(nn, &a->v, h, v, HW);
    nn_attention(nn, h, q, k, v, 1, HW, HW, 1, a->C, a->C, a->C, a->C, 1.0f / sqrtf((float)a->C), 0);
    nn_linear_ex(nn, &a->o, h, x, HW, 1); /* x += to_out(attention) */
    nn_release(nn, m);
}

struct vae_args {
    struct vae *v;
    const float *in;
    float *out, *out2;
    int h, w;
};

/* A resnet step of the ping-pong: in place when the block keeps its
 * channel count (no shortcut convolution), else into the other buffer. */
static void step(struct nn *nn, struct resnet *r, float **buf, int *cur, int h, int w)
{
    if (r->has_shortcut) {
        resnet_forward(nn, r, buf[*cur], buf[!*cur], 1, h, w, NULL);
        *cur = !*cur;
    } else {
        resnet_forward(nn, r, buf[*cur], buf[*cur], 1, h, w, NULL);
    }
}

/* Largest activation of each coder (channels x pixels over its stages).
 * Stages ping-pong between two buffers of that size, so the arena holds two
 * full-resolution activations plus one resnet's temporaries rather than
 * every stage's output. */
static size_t decoder_max_activation(const struct vae_config *c, int h, int w)
{
    int nb = c->n_blocks;
    size_t mx = (size_t)h * w * c->block_out[nb - 1];
    for (int i = 0; i < nb; i++) {
        size_t px = (size_t)(h << i) * (w << i);
        int C = c->block_out[nb - 1 - i], Cin = c->block_out[i ? nb - i : nb - 1];
        size_t n = px * (C > Cin ? C : Cin);
        mx = n > mx ? n : mx;
        if (i < nb - 1 && 4 * px * C > mx)
            mx = 4 * px * C; /* the upsampler's output */
    }
    return mx;
}

static size_t encoder_max_activation(const struct vae_config *c, int h, int w)
{
    size_t mx = 0;
    for (int i = 0; i < c->n_blocks; i++) {
        int C = c->block_out[i], Cin = c->block_out[i ? i - 1 : 0];
        size_t n = (size_t)h * w * (C > Cin ? C : Cin);
        mx = n > mx ? n : mx;
        h = (h + 1) / 2, w = (w + 1) / 2; /* stride 2 with (0,1) padding: ceil */
    }
    return mx;
}

/* Decoder pass; a->in is NCHW latents [Cl, h, w], a->out [H, W, out_ch]. */
static void decode_run(void *arg)
{
    struct vae_args *a = arg;
    struct vae *v = a->v;
    const struct vae_config *c = &v->cfg;
    struct vae_coder *d = &v->dec;
    struct nn *nn = &d->nn;
    int h = a->h, w = a->w, nb = c->n_blocks, Cl = c->latent_channels;
    size_t mx = decoder_max_activation(c, h, w);
    float *buf[2] = {nn_alloc(nn, mx), nn_alloc(nn, mx)};
    int cur = 0;
    float *z = buf[1];
    if (!nn_measuring(nn))
        for (int ch = 0; ch < Cl; ch++)
            for (int p = 0; p < h * w; p++)
                z[(size_t)p * Cl + ch] = a->in[(size_t)ch * h * w + p];
    if (c->use_post_quant_conv) {
        nn_conv2d(nn, &v->post_quant_conv, z, buf[0], 1, h, w);
        z = buf[0];
    }
    float *x = z == buf[0] ? buf[1] : buf[0];
    nn_conv2d(nn, &d->conv_in, z, x, 1, h, w);
    cur = x == buf[1];

    /* mid block */
    step(nn, &d->mid_res[0], buf, &cur, h, w);
    if (c->mid_attn)
        attn_forward(nn, &d->mid_attn, buf[cur], h * w);
    step(nn, &d->mid_res[1], buf, &cur, h, w);

    for (int i = 0; i < nb; i++) {
        struct vae_level *l = &d->level[i];
        for (int j = 0; j < l->n_res; j++)
            step(nn, &l->res[j], buf, &cur, h, w);
        if (l->has_sampler) {
            nn_upconv(nn, &l->sampler, buf[cur], buf[!cur], 1, h, w);
            h *= 2, w *= 2;
            cur = !cur;
        }
    }
    nn_groupnorm_conv(nn, &d->conv_out, a->out, buf[cur], &d->norm_out, 1, h, w, c->norm_groups, VAE_EPS,
                      1, 0, buf[!cur]);
}

/* Encoder pass; a->in is [H, W, in_ch], outputs NCHW mean and logvar. */
static void encode_run(void *arg)
{
    struct vae_args *a = arg;
    struct vae *v = a->v;
    const struct vae_config *c = &v->cfg;
    struct vae_coder *e = &v->enc;
    struct nn *nn = &e->nn;
    int h = a->h, w = a->w, nb = c->n_blocks, Cl = c->latent_channels;
    size_t mx = encoder_max_activation(c, h, w);
    float *buf[2] = {nn_alloc(nn, mx), nn_alloc(nn, mx)};
    int cur = 0;
    nn_conv2d(nn, &e->conv_in, a->in, buf[0], 1, h, w);
    for (int i = 0; i < nb; i++) {
        struct vae_level *l = &e->level[i];
        for (int j = 0; j < l->n_res; j++)
            step(nn, &l->res[j], buf, &cur, h, w);
        if (l->has_sampler) {
            nn_conv2d(nn, &l->sampler, buf[cur], buf[!cur], 1, h, w);
            h = nn_conv2d_out_size(&l->sampler, h), w = nn_conv2d_out_size(&l->sampler, w);
            cur = !cur;
        }
    }
    step(nn, &e->mid_res[0], buf, &cur, h, w);
    if (c->mid_attn)
        attn_forward(nn, &e->mid_attn, buf[cur], h * w);
    step(nn, &e->mid_res[1], buf, &cur, h, w);
    nn_groupnorm(nn, buf[!cur], buf[cur], &e->norm_out, 1, h * w, c->norm_groups, VAE_EPS, 1);
    nn_conv2d(nn, &e->conv_out, buf[!cur], buf[cur], 1, h, w);
    float *mo = buf[cur];
    if (c->use_quant_conv) {
        nn_conv2d(nn, &v->quant_conv, buf[cur], buf[!cur], 1, h, w);
        mo = buf[!cur];
    }
    if (nn_measuring(nn))
        return;
    for (int ch = 0; ch < Cl; ch++)
        for (int p = 0; p < h * w; p++) {
            float lv = mo[(size_t)p * 2 * Cl + Cl + ch];
            a->out[(size_t)ch * h * w + p] = mo[(size_t)p * 2 * Cl + ch];
            a->out2[(size_t)ch * h * w + p] = lv < -30.0f ? -30.0f : lv > 20.0f ? 20.0f : lv;
        }
}

/* Plan the coder for a->h x a->w unless it already is (measure mode reads
 * none of a's data). */
static int coder_prepare(struct vae_coder *d, void (*run)(void *), struct vae_args *a,
                         struct sd_err *err)
{
    if (d->planned_h == a->h && d->planned_w == a->w)
        return SD_OK;
    int rc = nn_prepare(&d->nn, run, a, err);
    if (!rc)
        d->planned_h = a->h, d->planned_w = a->w;
    return rc;
}

static int coder_run(struct vae_coder *d, void (*run)(void *), struct vae_args *a, struct sd_err *err)
{
    int rc = coder_prepare(d, run, a, err);
    if (rc)
        return rc;
    nn_begin(&d->nn);
    run(a);
    return SD_OK;
}

int vae_prepare_decode(struct vae *v, int h, int w, struct sd_err *err)
{
    struct vae_args a = {v, NULL, NULL, NULL, h, w};
    return coder_prepare(&v->dec, decode_run, &a, err);
}

int vae_decode(struct vae *v, const float *z, int h, int w, float *image, struct sd_err *err)
{
    struct vae_args a = {v, z, image, NULL, h, w};
    return coder_run(&v->dec, decode_run, &a, err);
}

int vae_encode(struct vae *v, const float *image, int H, int W, float *mean, float *logvar,
               struct sd_err *err)
{
    if (!v->has_encoder)
        return sd_errf(err, SD_ERR_UNSUPPORTED, "%s: this VAE has no encoder weights", v->w.path);
    if (!v->enc_loaded) {
        if (weights_status(&v->w))
            return sd_errf(err, weights_status(&v->w), "%s: the encoder failed to load", v->w.path);
        v->w.err = err; /* the load's error report is long gone */
        encoder_load(&v->w, v, (long)H * W); /* the size it is first asked for */
        if (weights_status(&v->w))
            return weights_status(&v->w);
        v->enc_loaded = 1;
    }
    struct vae_args a = {v, image, mean, logvar, H, W};
    return coder_run(&v->enc, encode_run, &a, err);
}

/* ------------------------------------------------------------- freeing */

static void coder_release(const struct nn_backend *be, struct vae_coder *d)
{
    nn_conv2d_release(be, &d->conv_in);
    nn_conv2d_release(be, &d->conv_out);
    for (int i = 0; i < CFG_MAX_BLOCKS; i++) {
        for (int j = 0; j < VAE_MAX_LAYERS; j++)
            resnet_release(be, &d->level[i].res[j]);
        nn_conv2d_release(be, &d->level[i].sampler);
    }
    for (int i = 0; i < 2; i++)
        resnet_release(be, &d->mid_res[i]);
    struct nn_linear *ls[] = {&d->mid_attn.q, &d->mid_attn.k, &d->mid_attn.v, &d->mid_attn.o};
    for (int i = 0; i < 4; i++)
        nn_linear_release(be, ls[i]);
    nn_free(&d->nn);
}

void vae_free(struct vae *v)
{
    const struct nn_backend *be = v->dec.nn.be;
    if (be) {
        coder_release(be, &v->dec);
        coder_release(be, &v->enc);
        nn_conv2d_release(be, &v->quant_conv);
        nn_conv2d_release(be, &v->post_quant_conv);
    }
    weights_free(&v->w);
    memset(v, 0, sizeof *v);
}
