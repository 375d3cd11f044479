/* unet.c - see unet.h. */
#include "model/unet.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------- loading */

static int transformer_load(struct weights *w, struct transformer *t, const char *prefix, int C,
                            int heads, int n_blocks, int ctx_dim, const struct unet_config *cfg)
{
    char n[256];
    t->C = C;
    t->heads = heads;
    t->n_blocks = n_blocks;
    t->groups = cfg->norm_groups;
    t->blocks = calloc(n_blocks, sizeof *t->blocks);
    if (!t->blocks)
        return SD_ERR_NOMEM;
    int conv = !cfg->use_linear_projection;
    snprintf(n, sizeof n, "%s.norm", prefix);
    load_norm(w, &t->norm, n, C);
    snprintf(n, sizeof n, "%s.proj_in", prefix);
    load_linear(w, &t->proj_in, n, C, C, 1, conv);
    snprintf(n, sizeof n, "%s.proj_out", prefix);
    load_linear(w, &t->proj_out, n, C, C, 1, conv);
    for (int i = 0; i < n_blocks; i++) {
        struct tblock *b = &t->blocks[i];
#define NAME(s) (snprintf(n, sizeof n, "%s.transformer_blocks.%d.%s", prefix, i, s), n)
        load_norm(w, &b->norm1, NAME("norm1"), C);
        load_norm(w, &b->norm2, NAME("norm2"), C);
        load_norm(w, &b->norm3, NAME("norm3"), C);
        static const char *const qkv[] = {"attn1.to_q", "attn1.to_k", "attn1.to_v"};
        snprintf(n, sizeof n, "%s.transformer_blocks.%d", prefix, i);
        load_linear_stacked(w, &b->qkv1, n, qkv, 3, C, C, 0);
        load_linear(w, &b->o1, NAME("attn1.to_out.0"), C, C, 1, 0);
        load_linear(w, &b->q2, NAME("attn2.to_q"), C, C, 0, 0);
        load_linear(w, &b->k2, NAME("attn2.to_k"), ctx_dim, C, 0, 0);
        load_linear(w, &b->v2, NAME("attn2.to_v"), ctx_dim, C, 0, 0);
        load_linear(w, &b->o2, NAME("attn2.to_out.0"), C, C, 1, 0);
        load_linear(w, &b->ff1, NAME("ff.net.0.proj"), C, 8 * C, 1, 0);
        load_linear(w, &b->ff2, NAME("ff.net.2"), 4 * C, C, 1, 0);
#undef NAME
    }
    return SD_OK;
}

int unet_load(struct unet *u, const char *dir, const char *variant, const struct nn_backend *be,
              long latent_px, struct sd_err *err)
{
    struct weights_src src;
    weights_src_folder(&src, dir, "unet", "diffusion_pytorch_model", variant);
    return unet_load_src(u, &src, be, latent_px, err);
}

int unet_load_src(struct unet *u, const struct weights_src *src, const struct nn_backend *be, long latent_px,
                  struct sd_err *err)
{
    memset(u, 0, sizeof *u);
    nn_init(&u->nn, be);
    char n[256];
    const char *path = src->config;
    int rc = unet_config_load(&u->cfg, path, err);
    if (rc)
        return rc;
    const struct unet_config *c = &u->cfg;
    if (c->layers_per_block + 1 > UNET_MAX_LAYERS)
        return sd_errf(err, SD_ERR_UNSUPPORTED, "%s: layers_per_block %d is too large", path,
                       c->layers_per_block);
    rc = weights_open_src(&u->w, src, err);
    if (rc)
        return rc;
    u->w.be = be;
    struct weights *w = &u->w;
    int nb = c->n_blocks, G = c->norm_groups, C0 = c->block_out[0];
    float eps = c->norm_eps;
    u->temb_dim = 4 * C0;
    int kin = c->conv_in_kernel, kout = c->conv_out_kernel;
    /* Tell the backend how many pixels a convolution sees (nn_conv2d.px;
     * each level halves the latent's sides), as it picks algorithms by
     * pixels per weight. */
    long px0 = latent_px > 0 ? latent_px : (long)c->sample_size * c->sample_size;
#define LEVEL_PX(l) conv_px(px0 >> (2 * (l)))
    w->conv_px = LEVEL_PX(0);
    load_conv(w, &u->conv_in, "conv_in", c->in_channels, C0, kin, 1, kin / 2, kin / 2);
    load_linear(w, &u->time1, "time_embedding.linear_1", C0, u->temb_dim, 1, 0);
    load_linear(w, &u->time2, "time_embedding.linear_2", u->temb_dim, u->temb_dim, 1, 0);
    if (c->time_cond_proj_dim)
        load_linear(w, &u->cond_proj, "time_embedding.cond_proj", c->time_cond_proj_dim, C0, 0, 0);
    if (c->addition_time_embed_dim) {
        load_linear(w, &u->add1, "add_embedding.linear_1", c->projection_class_embeddings_input_dim,
                    u->temb_dim, 1, 0);
        load_linear(w, &u->add2, "add_embedding.linear_2", u->temb_dim, u->temb_dim, 1, 0);
    }

    int cin = C0;
    for (int i = 0; i < nb; i++) {
        struct unet_block *b = &u->down[i];
        int C = c->block_out[i];
        b->n_res = c->layers_per_block;
        b->has_attn = c->down_attn[i];
        w->conv_px = LEVEL_PX(i);
        for (int j = 0; j < b->n_res; j++) {
            snprintf(n, sizeof n, "down_blocks.%d.resnets.%d", i, j);
            resnet_load(w, &b->res[j], n, j ? C : cin, C, u->temb_dim, G, eps);
            if (b->has_attn) {
                snprintf(n, sizeof n, "down_blocks.%d.attentions.%d", i, j);
                if (transformer_load(w, &b->attn[j], n, C, c->heads[i], c->transformer_layers[i],
                                     c->cross_attention_dim, c))
                    return sd_errf(err, SD_ERR_NOMEM, "out of memory");
            }
        }
        b->has_sampler = i < nb - 1;
        if (b->has_sampler) {
            snprintf(n, sizeof n, "down_blocks.%d.downsamplers.0.conv", i);
            load_conv(w, &b->sampler, n, C, C, 3, 2, 1, 1);
        }
        cin = C;
    }
    int Cl = c->block_out[nb - 1];
    w->conv_px = LEVEL_PX(nb - 1);
    resnet_load(w, &u->mid_res[0], "mid_block.resnets.0", Cl, Cl, u->temb_dim, G, eps);
    resnet_load(w, &u->mid_res[1], "mid_block.resnets.1", Cl, Cl, u->temb_dim, G, eps);
    if (transformer_load(w, &u->mid_attn, "mid_block.attentions.0", Cl, c->heads[nb - 1],
                         c->transformer_layers[nb - 1], c->cross_attention_dim, c))
        return sd_errf(err, SD_ERR_NOMEM, "out of memory");

    /* Up blocks mirror the down blocks: level i uses reversed lists, each
     * resnet concatenates one skip tensor (sd-reference 2.7/2.8). */
    int prev = Cl;
    for (int i = 0; i < nb; i++) {
        struct unet_block *b = &u->up[i];
        int lvl = nb - 1 - i, C = c->block_out[lvl];
        int skip_last = c->block_out[lvl > 0 ? lvl - 1 : 0];
        b->n_res = c->layers_per_block + 1;
        b->has_attn = c->up_attn[i];
        w->conv_px = LEVEL_PX(lvl);
        for (int j = 0; j < b->n_res; j++) {
            int skip = j == b->n_res - 1 ? skip_last : C;
            int in = (j == 0 ? prev : C) + skip;
            snprintf(n, sizeof n, "up_blocks.%d.resnets.%d", i, j);
            resnet_load(w, &b->res[j], n, in, C, u->temb_dim, G, eps);
            if (b->has_attn) {
                snprintf(n, sizeof n, "up_blocks.%d.attentions.%d", i, j);
                if (transformer_load(w, &b->attn[j], n, C, c->heads[lvl], c->transformer_layers[lvl],
                                     c->cross_attention_dim, c))
                    return sd_errf(err, SD_ERR_NOMEM, "out of memory");
            }
        }
        b->has_sampler = i < nb - 1;
        if (b->has_sampler) {
            snprintf(n, sizeof n, "up_blocks.%d.upsamplers.0.conv", i);
            w->conv_px = LEVEL_PX(lvl - 1); /* runs after the 2x nearest upsampling */
            load_conv(w, &b->sampler, n, C, C, 3, 1, 1, 1);
        }
        prev = C;
    }
    load_norm(w, &u->norm_out, "conv_norm_out", C0);
    w->conv_px = LEVEL_PX(0);
#undef LEVEL_PX
    load_conv(w, &u->conv_out, "conv_out", C0, c->out_channels, kout, 1, kout / 2, kout / 2);
    return weights_status(w);
}

/* ------------------------------------------------------------- forward */

/* BasicTransformerBlock on x[B, N, C] in place; ctx[B, T, D]. kv_fresh:
 * compute the cross-attention keys and values from ctx into b->kv (else
 * they are there from an earlier step with the same ctx). */
static void tblock_forward(struct nn *nn, struct tblock *b, float *x, int B, int N, int C, int heads,
                           const float *ctx, int T, int kv_fresh)
{
    nn_attention_block(nn, &b->qkv1, &b->o1, x, &b->norm1, NULL, NULL, B, N, N, heads, 1e-5f);
    float *k = b->kv, *v = k + (size_t)B * T * C;
    if (kv_fresh || nn_measuring(nn)) {
        nn_linear(nn, &b->k2, ctx, k, B * T);
        nn_linear(nn, &b->v2, ctx, v, B * T);
    }
    nn_attention_block(nn, &b->q2, &b->o2, x, &b->norm2, k, v, B, N, T, heads, 1e-5f);
    nn_layernorm_ff(nn, &b->ff1, &b->ff2, x, &b->norm3, B * N, 1e-5f); /* x += ff2(geglu(ff1(norm3(x)))) */
}

/* Transformer2DModel on x[B, H*W, C] in place. GroupNorm eps is fixed at
 * 1e-6 in diffusers. */
static void transformer_forward(struct nn *nn, struct transformer *t, float *x, int B, int HW,
                                const float *ctx, int T, int kv_fresh)
{
    size_t m = nn_mark(nn), n = (size_t)B * HW * t->C;
    float *h = nn_alloc(nn, n), *y = nn_alloc(nn, n);
    nn_groupnorm(nn, h, x, &t->norm, B, HW, t->groups, 1e-6f, 0);
    nn_linear(nn, &t->proj_in, h, y, B * HW);
    for (int i = 0; i < t->n_blocks; i++)
        tblock_forward(nn, &t->blocks[i], y, B, HW, t->C, t->heads, ctx, T, kv_fresh);
    nn_linear_ex(nn, &t->proj_out, y, x, B * HW, 1); /* x += proj_out(y) */
    nn_release(nn, m);
}

/* diffusers get_timestep_embedding, in float32 as PyTorch evaluates it. */
static void timestep_embedding(float *out, float t, int dim, int flip, float shift)
{
    int half = dim / 2;
    for (int i = 0; i < half; i++) {
        float e = (float)(-log(10000.0)) * (float)i;
        e = e / ((float)half - shift);
        float arg = t * expf(e);
        float s = sinf(arg), co = cosf(arg);
        out[flip ? half + i : i] = s;
        out[flip ? i : half + i] = co;
    }
    if (dim % 2)
        out[dim - 1] = 0;
}

struct unet_args {
    struct unet *u;
    const float *sample, *ctx;
    const struct unet_cond *cond;
    float t;
    float *out;
    int B, h, w, T;
    int kv_fresh; /* see tblock_forward */
};

static void nchw_to_nhwc(float *dst, const float *src, int B, int C, int HW)
{
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++)
            for (int p = 0; p < HW; p++)
                dst[((size_t)b * HW + p) * C + c] = src[((size_t)b * C + c) * HW + p];
}

static void nhwc_to_nchw(float *dst, const float *src, int B, int C, int HW)
{
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++)
            for (int p = 0; p < HW; p++)
                dst[((size_t)b * C + c) * HW + p] = src[((size_t)b * HW + p) * C + c];
}

static void unet_run(void *arg)
{
    struct unet_args *a = arg;
    struct unet *u = a->u;
    const struct unet_config *c = &u->cfg;
    struct nn *nn = &u->nn;
    int B = a->B, h = a->h, w = a->w, T = a->T, nb = c->n_blocks, C0 = c->block_out[0];
    int measuring = nn_measuring(nn);

    /* time embedding: the same t for every batch entry */
    float *temb = nn_alloc(nn, C0), *e1 = nn_alloc(nn, u->temb_dim), *e2 = nn_alloc(nn, u->temb_dim);
    float *emb = nn_alloc(nn, (size_t)B * u->temb_dim);
    const float *tcond = a->cond ? a->cond->tcond : NULL;
    if (!measuring)
        timestep_embedding(temb, a->t, C0, c->flip_sin_to_cos, c->freq_shift);
    if (c->time_cond_proj_dim && tcond) {
        nn_linear(nn, &u->cond_proj, tcond, e1, 1);
        nn_add(nn, temb, temb, e1, C0);
    }
    nn_linear(nn, &u->time1, temb, e1, 1);
    nn_activation(nn, e1, u->temb_dim, NN_SILU);
    nn_linear(nn, &u->time2, e1, e2, 1);
    if (!measuring)
        for (int b = 0; b < B; b++)
            memcpy(emb + (size_t)b * u->temb_dim, e2, u->temb_dim * sizeof(float));
    if (c->addition_time_embed_dim) {
        /* SDXL: emb += add_embedding(concat(text_embeds, sinusoids of the 6
         * time ids)), per batch entry (diffusers get_aug_embed) */
        int P = c->projection_class_embeddings_input_dim, A = c->addition_time_embed_dim, Pt = P - 6 * A;
        float *in = nn_alloc(nn, (size_t)B * P), *h1 = nn_alloc(nn, (size_t)B * u->temb_dim);
        if (!measuring)
            for (int b = 0; b < B; b++) {
                float *row = in + (size_t)b * P;
                memcpy(row, a->cond->text_embeds + (size_t)b * Pt, Pt * sizeof(float));
                for (int k = 0; k < 6; k++)
                    timestep_embedding(row + Pt + k * A, a->cond->time_ids[b * 6 + k], A, c->flip_sin_to_cos,
                                       c->freq_shift);
            }
        nn_linear(nn, &u->add1, in, h1, B);
        nn_activation(nn, h1, (size_t)B * u->temb_dim, NN_SILU);
        nn_linear_ex(nn, &u->add2, h1, emb, B, 1);
    }
    /* every resnet applies silu to the embedding first: do it once */
    nn_activation(nn, emb, (size_t)B * u->temb_dim, NN_SILU);

    float *x0 = nn_alloc(nn, (size_t)B * h * w * c->in_channels);
    if (!measuring)
        nchw_to_nhwc(x0, a->sample, B, c->in_channels, h * w);
    float *x = nn_alloc(nn, (size_t)B * h * w * C0);
    nn_conv2d(nn, &u->conv_in, x0, x, B, h, w);

    /* Skip tensors persist on the arena stack until the up path pops them. */
    struct { float *p; int h, w, C; } skip[CFG_MAX_BLOCKS * (UNET_MAX_LAYERS + 1) + 1];
    int ns = 0;
    skip[ns].p = x, skip[ns].h = h, skip[ns].w = w, skip[ns].C = C0, ns++;
    int C = C0;
    for (int i = 0; i < nb; i++) {
        struct unet_block *b = &u->down[i];
        C = c->block_out[i];
        for (int j = 0; j < b->n_res; j++) {
            float *y = nn_alloc(nn, (size_t)B * h * w * C);
            resnet_forward(nn, &b->res[j], x, y, B, h, w, emb);
            if (b->has_attn)
                transformer_forward(nn, &b->attn[j], y, B, h * w, a->ctx, T, a->kv_fresh);
            x = y;
            skip[ns].p = x, skip[ns].h = h, skip[ns].w = w, skip[ns].C = C, ns++;
        }
        if (b->has_sampler) {
            int h2 = nn_conv2d_out_size(&b->sampler, h), w2 = nn_conv2d_out_size(&b->sampler, w);
            float *y = nn_alloc(nn, (size_t)B * h2 * w2 * C);
            nn_conv2d(nn, &b->sampler, x, y, B, h, w);
            x = y, h = h2, w = w2;
            skip[ns].p = x, skip[ns].h = h, skip[ns].w = w, skip[ns].C = C, ns++;
        }
    }

    float *y = nn_alloc(nn, (size_t)B * h * w * C);
    resnet_forward(nn, &u->mid_res[0], x, y, B, h, w, emb);
    transformer_forward(nn, &u->mid_attn, y, B, h * w, a->ctx, T, a->kv_fresh);
    x = nn_alloc(nn, (size_t)B * h * w * C);
    resnet_forward(nn, &u->mid_res[1], y, x, B, h, w, emb);

    for (int i = 0; i < nb; i++) {
        struct unet_block *b = &u->up[i];
        int Cout = c->block_out[nb - 1 - i];
        for (int j = 0; j < b->n_res; j++) {
            ns--;
            float *out = nn_alloc(nn, (size_t)B * h * w * Cout);
            size_t m = nn_mark(nn);
            float *cat = nn_alloc(nn, (size_t)B * h * w * (C + skip[ns].C));
            nn_concat_channels(nn, cat, x, C, skip[ns].p, skip[ns].C, (size_t)B * h * w);
            resnet_forward(nn, &b->res[j], cat, out, B, h, w, emb);
            nn_release(nn, m);
            if (b->has_attn)
                transformer_forward(nn, &b->attn[j], out, B, h * w, a->ctx, T, a->kv_fresh);
            x = out, C = Cout;
        }
        if (b->has_sampler) {
            /* Upsample to the size of the skip tensor it meets next: 2x, or
             * the odd size a stride-2 convolution came down from. */
            int h2 = skip[ns - 1].h, w2 = skip[ns - 1].w;
            float *out = nn_alloc(nn, (size_t)B * h2 * w2 * C);
            size_t m = nn_mark(nn);
            float *up = nn_alloc(nn, (size_t)B * h2 * w2 * C);
            nn_upsample_nearest(nn, up, x, B, h, w, C, h2, w2);
            nn_conv2d(nn, &b->sampler, up, out, B, h2, w2);
            nn_release(nn, m);
            x = out, h = h2, w = w2;
        }
    }
    float *o = nn_alloc(nn, (size_t)B * h * w * c->out_channels);
    nn_groupnorm_conv(nn, &u->conv_out, o, x, &u->norm_out, B, h, w, c->norm_groups, c->norm_eps, 1, 0,
                      NULL);
    if (!measuring)
        nhwc_to_nchw(a->out, o, B, c->out_channels, h * w);
}

/* Every Transformer2DModel of the UNet, in a fixed order; returns how many. */
static int all_transformers(struct unet *u, struct transformer **out)
{
    int n = 0;
    for (int i = 0; i < u->cfg.n_blocks; i++) {
        struct unet_block *bs[2] = {&u->down[i], &u->up[i]};
        for (int k = 0; k < 2; k++)
            for (int j = 0; bs[k]->has_attn && j < bs[k]->n_res; j++)
                out[n++] = &bs[k]->attn[j];
    }
    out[n++] = &u->mid_attn;
    return n;
}

/* The cross-attention key/value cache for batch B and context length T:
 * 2 * B * T * C floats per transformer block, and a copy of the context. */
static int kv_cache_size(struct unet *u, int B, int T, struct sd_err *err)
{
    struct transformer *ts[2 * CFG_MAX_BLOCKS * UNET_MAX_LAYERS + 1];
    int nt = all_transformers(u, ts);
    size_t n = 0;
    for (int i = 0; i < nt; i++)
        n += (size_t)ts[i]->n_blocks * 2 * B * T * ts[i]->C;
    size_t nctx = (size_t)B * T * u->cfg.cross_attention_dim, bytes = (n + nctx) * sizeof(float);
    u->kv_valid = 0;
    if (bytes != u->kv_bytes) {
        big_free(u->kv_buf, u->kv_bytes);
        u->kv_bytes = 0;
        if (!(u->kv_buf = big_alloc(bytes)))
            return sd_errf(err, SD_ERR_NOMEM, "out of memory for the cross-attention cache");
        u->kv_bytes = bytes;
    }
    float *p = u->kv_buf;
    for (int i = 0; i < nt; i++)
        for (int j = 0; j < ts[i]->n_blocks; j++) {
            ts[i]->blocks[j].kv = p;
            p += (size_t)2 * B * T * ts[i]->C;
        }
    u->kv_ctx = p;
    u->kv_ctx_n = nctx;
    return SD_OK;
}

int unet_prepare(struct unet *u, int B, int h, int w, int T, struct sd_err *err)
{
    if (u->planned_B == B && u->planned_h == h && u->planned_w == w && u->planned_T == T)
        return SD_OK;
    if ((B != u->planned_B || T != u->planned_T) && kv_cache_size(u, B, T, err))
        return err->code;
    struct unet_args a = {.u = u, .B = B, .h = h, .w = w, .T = T};
    int rc = nn_prepare(&u->nn, unet_run, &a, err);
    if (rc) {
        u->planned_B = u->planned_T = 0; /* the cache may be sized for B, T now: plan again */
        return rc;
    }
    u->planned_B = B, u->planned_h = h, u->planned_w = w, u->planned_T = T;
    return SD_OK;
}

int unet_forward(struct unet *u, const float *sample, float t, const float *ctx, int T,
                 const struct unet_cond *cond, float *out, int B, int h, int w, struct sd_err *err)
{
    if (u->cfg.addition_time_embed_dim && (!cond || !cond->text_embeds || !cond->time_ids))
        return sd_errf(err, SD_ERR_ARG, "this UNet (SDXL) needs text_embeds and time_ids");
    int rc = unet_prepare(u, B, h, w, T, err);
    if (rc)
        return rc;
    int fresh = !u->kv_valid || memcmp(u->kv_ctx, ctx, u->kv_ctx_n * sizeof(float));
    if (fresh)
        memcpy(u->kv_ctx, ctx, u->kv_ctx_n * sizeof(float));
    struct unet_args a = {u, sample, ctx, cond, t, out, B, h, w, T, fresh};
    nn_begin(&u->nn);
    unet_run(&a);
    u->kv_valid = 1;
    return SD_OK;
}

/* ------------------------------------------------------------- freeing */

static void transformer_release(const struct nn_backend *be, struct transformer *t)
{
    nn_linear_release(be, &t->proj_in);
    nn_linear_release(be, &t->proj_out);
    for (int i = 0; t->blocks && i < t->n_blocks; i++) {
        struct tblock *b = &t->blocks[i];
        struct nn_linear *ls[] = {&b->qkv1, &b->o1, &b->q2, &b->k2, &b->v2, &b->o2, &b->ff1, &b->ff2};
        for (size_t j = 0; j < sizeof ls / sizeof ls[0]; j++)
            nn_linear_release(be, ls[j]);
    }
    free(t->blocks);
    t->blocks = NULL;
}

static void block_release(const struct nn_backend *be, struct unet_block *b)
{
    for (int j = 0; j < UNET_MAX_LAYERS; j++) {
        resnet_release(be, &b->res[j]);
        transformer_release(be, &b->attn[j]);
    }
    nn_conv2d_release(be, &b->sampler);
}

void unet_free(struct unet *u)
{
    const struct nn_backend *be = u->nn.be;
    if (be) {
        for (int i = 0; i < CFG_MAX_BLOCKS; i++) {
            block_release(be, &u->down[i]);
            block_release(be, &u->up[i]);
        }
        resnet_release(be, &u->mid_res[0]);
        resnet_release(be, &u->mid_res[1]);
        transformer_release(be, &u->mid_attn);
        nn_conv2d_release(be, &u->conv_in);
        nn_conv2d_release(be, &u->conv_out);
        nn_linear_release(be, &u->time1);
        nn_linear_release(be, &u->time2);
        nn_linear_release(be, &u->cond_proj);
        nn_linear_release(be, &u->add1);
        nn_linear_release(be, &u->add2);
    }
    nn_free(&u->nn);
    big_free(u->kv_buf, u->kv_bytes);
    weights_free(&u->w);
    memset(u, 0, sizeof *u);
}
