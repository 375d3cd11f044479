/* clip.c - see clip.h. */
#include "model/clip.h"

#include "model/blocks.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int clip_load(struct clip *c, const char *dir, const char *variant, const struct nn_backend *be,
              struct sd_err *err)
{
    struct weights_src src;
    weights_src_folder(&src, dir, "text_encoder", "model", variant);
    return clip_load_src(c, &src, be, err);
}

int clip_load_src(struct clip *c, const struct weights_src *src, const struct nn_backend *be,
                  struct sd_err *err)
{
    memset(c, 0, sizeof *c);
    nn_init(&c->nn, be);
    int rc = clip_config_load(&c->cfg, src->config, err);
    if (rc)
        return rc;
    rc = weights_open_src(&c->w, src, err);
    if (rc)
        return rc;
    c->w.be = be;
    const struct clip_config *g = &c->cfg;
    int H = g->hidden, I = g->intermediate;
    struct weights *w = &c->w;
    /* transformers <= 4 writes "text_model.*" names (every SD release);
     * transformers 5 drops the prefix. Accept both. */
    const char *pre = weights_has(w, "text_model.embeddings.token_embedding.weight") ? "text_model." : "";
    char n[192];
    snprintf(n, sizeof n, "%sembeddings.token_embedding.weight", pre);
    /* 49408 rows of which a prompt reads 77: kept as the file has them
     * (half the memory for F16 files), converted row by row */
    weights_get_raw(w, n, &c->tok_emb, 2, g->vocab_size, H);
    snprintf(n, sizeof n, "%sembeddings.position_embedding.weight", pre);
    c->pos_emb = weights_get(w, n, 2, g->max_positions, H);
    c->layers = calloc(g->layers, sizeof *c->layers);
    if (!c->layers)
        return sd_errf(err, SD_ERR_NOMEM, "out of memory");
    for (int i = 0; i < g->layers; i++) {
        struct clip_layer *l = &c->layers[i];
        char p[96];
        snprintf(p, sizeof p, "%sencoder.layers.%d", pre, i);
#define NAME(s) (snprintf(n, sizeof n, "%s.%s", p, s), n)
        load_norm(w, &l->ln1, NAME("layer_norm1"), H);
        load_norm(w, &l->ln2, NAME("layer_norm2"), H);
        static const char *const qkv[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"};
        load_linear_stacked(w, &l->qkv, p, qkv, 3, H, H, 1);
        load_linear(w, &l->o, NAME("self_attn.out_proj"), H, H, 1, 0);
        load_linear(w, &l->fc1, NAME("mlp.fc1"), H, I, 1, 0);
        load_linear(w, &l->fc2, NAME("mlp.fc2"), I, H, 1, 0);
#undef NAME
    }
    snprintf(n, sizeof n, "%sfinal_layer_norm", pre);
    load_norm(w, &c->final_ln, n, H);
    if (g->with_projection)
        load_linear(w, &c->proj, "text_projection", H, g->projection_dim, 0, 0);
    return weights_status(w);
}

/* row[0..H) = row id of an F32/F16/BF16 table (exact conversions). */
static void embedding_row(const struct st_tensor *t, int id, int H, float *row)
{
    const uint8_t *p = t->data + (size_t)id * H * st_dtype_size(t->dtype);
    for (int i = 0; i < H; i++) {
        if (t->dtype == ST_F32)
            memcpy(&row[i], p + 4 * (size_t)i, 4);
        else {
            uint16_t h;
            memcpy(&h, p + 2 * (size_t)i, 2);
            row[i] = t->dtype == ST_F16 ? st_f16_to_f32(h) : st_bf16_to_f32(h);
        }
    }
}

/* What a pass computes: n_layers layers; `keep` gets the raw output of
 * layer keep_after (1-based; 0: none); `out` the final LayerNorm of the
 * last layer run (NULL: not wanted); `pooled` the projection of that
 * LayerNorm's row `eos` (NULL: not wanted). */
struct clip_want {
    int n_layers, keep_after, eos;
    float *keep, *out, *pooled;
};

/* The forward pass; in measure mode (nn.h) it only sizes the arena. */
static void clip_run(struct clip *c, const int32_t *ids, int T, const struct clip_want *want)
{
    int n_layers = want->n_layers;
    const struct clip_config *g = &c->cfg;
    struct nn *nn = &c->nn;
    int H = g->hidden, dh = H / g->heads;
    size_t TH = (size_t)T * H;
    float *x = nn_alloc(nn, TH), *h = nn_alloc(nn, TH);
    float *qkv = nn_alloc(nn, 3 * TH);
    float *mlp = nn_alloc(nn, (size_t)T * g->intermediate);
    if (!nn_measuring(nn))
        for (int t = 0; t < T; t++) {
            float *row = x + (size_t)t * H;
            embedding_row(&c->tok_emb, ids[t], H, row);
            for (int i = 0; i < H; i++)
                row[i] += c->pos_emb[(size_t)t * H + i];
        }
    enum nn_act act = g->act == CLIP_GELU ? NN_GELU : NN_QUICK_GELU;
    for (int li = 0; li < n_layers; li++) {
        struct clip_layer *l = &c->layers[li];
        nn_layernorm_linear(nn, &l->qkv, qkv, x, &l->ln1, T, g->eps, h, 0); /* rows [q | k | v] */
        nn_attention(nn, h, qkv, qkv + H, qkv + 2 * H, 1, T, T, g->heads, dh, 3 * H, 3 * H, 3 * H,
                     1.0f / sqrtf((float)dh), 1);
        nn_linear(nn, &l->o, h, qkv, T);
        nn_add(nn, x, x, qkv, TH);
        nn_layernorm_linear(nn, &l->fc1, mlp, x, &l->ln2, T, g->eps, h, 0);
        nn_activation(nn, mlp, (size_t)T * g->intermediate, act);
        nn_linear(nn, &l->fc2, mlp, h, T);
        nn_add(nn, x, x, h, TH);
        if (want->keep && li + 1 == want->keep_after && !nn_measuring(nn))
            memcpy(want->keep, x, TH * sizeof(float));
    }
    float *out = want->out ? want->out : want->pooled ? h : NULL;
    if (out)
        nn_layernorm(nn, out, x, &c->final_ln, T, g->eps);
    if (want->pooled)
        nn_linear(nn, &c->proj, out + (size_t)want->eos * H, want->pooled, 1);
}

struct clip_pass {
    struct clip *c;
    const int32_t *ids;
    int T;
};

static void clip_pass(void *arg)
{
    struct clip_pass *p = arg;
    float dummy;
    struct clip_want w = {.n_layers = p->c->cfg.layers, .out = &dummy,
                          .pooled = p->c->cfg.with_projection ? &dummy : NULL};
    clip_run(p->c, p->ids, p->T, &w);
}

int clip_prepare(struct clip *c, int T, struct sd_err *err)
{
    if (T < 1 || T > c->cfg.max_positions)
        return sd_errf(err, SD_ERR_ARG, "text encoder: %d tokens, at most %d", T, c->cfg.max_positions);
    if (c->planned_T == T)
        return SD_OK;
    struct clip_pass p = {c, NULL, T}; /* measure mode reads no ids */
    int rc = nn_prepare(&c->nn, clip_pass, &p, err);
    if (!rc)
        c->planned_T = T;
    return rc;
}

static int check_ids(struct clip *c, const int32_t *ids, int T, struct sd_err *err)
{
    const struct clip_config *g = &c->cfg;
    if (T < 1 || T > g->max_positions)
        return sd_errf(err, SD_ERR_ARG, "text encoder: %d tokens, at most %d", T, g->max_positions);
    for (int t = 0; t < T; t++)
        if (ids[t] < 0 || ids[t] >= g->vocab_size)
            return sd_errf(err, SD_ERR_ARG, "token id %d outside the text encoder's vocabulary (%d)",
                           ids[t], g->vocab_size);
    return clip_prepare(c, T, err);
}

int clip_encode(struct clip *c, const int32_t *ids, int T, int clip_skip, float *out,
                struct sd_err *err)
{
    const struct clip_config *g = &c->cfg;
    if (clip_skip < 0 || clip_skip >= g->layers)
        return sd_errf(err, SD_ERR_ARG, "clip_skip %d out of range 0..%d", clip_skip, g->layers - 1);
    int rc = check_ids(c, ids, T, err);
    if (rc)
        return rc;
    nn_begin(&c->nn);
    struct clip_want w = {.n_layers = g->layers - clip_skip, .out = out};
    clip_run(c, ids, T, &w);
    return SD_OK;
}

int clip_encode_hidden(struct clip *c, const int32_t *ids, int T, int skip, float *hidden, float *pooled,
                       struct sd_err *err)
{
    const struct clip_config *g = &c->cfg;
    if (skip < 0 || skip > g->layers - 2)
        return sd_errf(err, SD_ERR_ARG, "clip_skip %d out of range 0..%d", skip, g->layers - 2);
    if (pooled && !g->with_projection)
        return sd_errf(err, SD_ERR_INTERNAL, "text encoder has no projection");
    int rc = check_ids(c, ids, T, err);
    if (rc)
        return rc;
    int eos = 0;
    for (int t = 0; t < T; t++) /* transformers' CLIPTextTransformer pooling */
        if (g->eos_token_id == 2 ? ids[t] > ids[eos] : ids[t] == g->eos_token_id) {
            eos = t;
            if (g->eos_token_id != 2)
                break;
        }
    nn_begin(&c->nn);
    struct clip_want w = {.n_layers = pooled ? g->layers : g->layers - 1 - skip,
                          .keep_after = g->layers - 1 - skip, .keep = hidden, .pooled = pooled, .eos = eos};
    clip_run(c, ids, T, &w);
    return SD_OK;
}

void clip_free(struct clip *c)
{
    if (c->layers)
        for (int i = 0; i < c->cfg.layers; i++) {
            struct nn_linear *ls[] = {&c->layers[i].qkv, &c->layers[i].o, &c->layers[i].fc1,
                                      &c->layers[i].fc2};
            for (int j = 0; j < 4; j++)
                nn_linear_release(c->nn.be, ls[j]);
        }
    if (c->nn.be)
        nn_linear_release(c->nn.be, &c->proj);
    free(c->layers);
    nn_free(&c->nn);
    weights_free(&c->w);
    memset(c, 0, sizeof *c);
}
