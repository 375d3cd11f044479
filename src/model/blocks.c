/* blocks.c - see blocks.h. */
#include "model/blocks.h"

#include <stdio.h>

/* Let the backend prepare the layer now (reorder, convert) and release the
 * plain weights it no longer needs. */
static void prepare_conv(struct weights *w, struct nn_conv2d *c, const char *prefix)
{
    if (w->status || !w->be || !w->be->conv2d_prepare)
        return;
    struct sd_err e;
    if (w->be->conv2d_prepare(c, &e)) {
        w->status = sd_errf(w->err, e.code, "%s: %s: %s", w->path, prefix, e.msg);
        return;
    }
    weights_drop(w, c->w, (size_t)c->cout * c->cin * c->k * c->k);
    c->w = NULL;
    if (w->be->layer_bytes)
        w->prepared += w->be->layer_bytes(c->be_state);
}

static void prepare_linear(struct weights *w, struct nn_linear *l, const char *prefix)
{
    if (w->status || !w->be || !w->be->linear_prepare)
        return;
    struct sd_err e;
    if (w->be->linear_prepare(l, &e)) {
        w->status = sd_errf(w->err, e.code, "%s: %s: %s", w->path, prefix, e.msg);
        return;
    }
    weights_drop(w, l->w, (size_t)l->out * l->in);
    l->w = NULL;
    if (w->be->layer_bytes)
        w->prepared += w->be->layer_bytes(l->be_state);
}

void load_linear(struct weights *w, struct nn_linear *l, const char *prefix, int in, int out,
                 int bias, int conv1x1)
{
    char n[256];
    l->in = in;
    l->out = out;
    snprintf(n, sizeof n, "%s.weight", prefix);
    l->w = conv1x1 ? weights_get(w, n, 4, out, in, 1, 1) : weights_get(w, n, 2, out, in);
    l->b = NULL;
    if (bias) {
        snprintf(n, sizeof n, "%s.bias", prefix);
        l->b = weights_get(w, n, 1, out);
    }
    snprintf(n, sizeof n, "%s.weight", prefix);
    weights_add_layer(w, prefix, n, 0, l, 0, out, in);
    prepare_linear(w, l, prefix);
}

void load_linear_stacked(struct weights *w, struct nn_linear *l, const char *base,
                         const char *const *names, int n, int in, int out, int bias)
{
    char name[320];
    const float *ws[LINEAR_MAX_STACK], *bs[LINEAR_MAX_STACK] = {0};
    SD_ASSERT(n <= LINEAR_MAX_STACK);
    for (int i = 0; i < n; i++) {
        snprintf(name, sizeof name, "%s.%s.weight", base, names[i]);
        ws[i] = weights_get(w, name, 2, out, in);
        if (bias) {
            snprintf(name, sizeof name, "%s.%s.bias", base, names[i]);
            bs[i] = weights_get(w, name, 1, out);
        }
    }
    snprintf(name, sizeof name, "%s.%s", base, names[0]);
    l->in = in;
    l->out = n * out;
    l->w = weights_stack(w, ws, n, (size_t)out * in, name);
    l->b = bias ? weights_stack(w, bs, n, (size_t)out, name) : NULL;
    for (int i = 0; i < n; i++) {
        char part[320], tensor[340];
        snprintf(part, sizeof part, "%s.%s", base, names[i]);
        snprintf(tensor, sizeof tensor, "%s.weight", part);
        weights_add_layer(w, part, tensor, 0, l, i * out, out, in);
    }
    prepare_linear(w, l, name);
}

void load_conv(struct weights *w, struct nn_conv2d *c, const char *prefix, int in, int out, int k,
               int stride, int pad_lo, int pad_hi)
{
    char n[256];
    c->cin = in;
    c->cout = out;
    c->k = k;
    c->stride = stride;
    c->pad_lo = pad_lo;
    c->pad_hi = pad_hi;
    c->px = w->conv_px;
    snprintf(n, sizeof n, "%s.weight", prefix);
    c->w = weights_get(w, n, 4, out, in, k, k);
    snprintf(n, sizeof n, "%s.bias", prefix);
    c->b = weights_get(w, n, 1, out);
    snprintf(n, sizeof n, "%s.weight", prefix);
    weights_add_layer(w, prefix, n, 1, c, 0, out, in * k * k);
    prepare_conv(w, c, prefix);
}

void load_upconv(struct weights *w, struct nn_conv2d *c, const char *prefix, int in, int out)
{
    char n[256];
    *c = (struct nn_conv2d){in, 4 * out, 2, 1, 1, 1, NULL, NULL, NULL, w->conv_px};
    snprintf(n, sizeof n, "%s.weight", prefix);
    const float *w3 = weights_get(w, n, 4, out, in, 3, 3);
    snprintf(n, sizeof n, "%s.bias", prefix);
    const float *b3 = weights_get(w, n, 1, out);
    float *w2 = weights_derived(w, (size_t)16 * out * in, prefix);
    float *b2 = weights_derived(w, (size_t)4 * out, prefix);
    if (!w3 || !b3 || !w2 || !b2)
        return; /* the error is in w */
    nn_upconv_weights(w2, b2, w3, b3, in, out);
    weights_drop(w, w3, (size_t)out * in * 9);
    c->w = w2;
    c->b = b2;
    prepare_conv(w, c, prefix);
}

void load_norm(struct weights *w, struct nn_norm *nm, const char *prefix, int c)
{
    char n[256];
    nm->c = c;
    snprintf(n, sizeof n, "%s.weight", prefix);
    nm->w = weights_get(w, n, 1, c);
    snprintf(n, sizeof n, "%s.bias", prefix);
    nm->b = weights_get(w, n, 1, c);
}

void resnet_load(struct weights *w, struct resnet *r, const char *prefix, int cin, int cout,
                 int temb_dim, int groups, float eps)
{
    char n[256];
    r->cin = cin;
    r->cout = cout;
    r->groups = groups;
    r->eps = eps;
#define NAME(s) (snprintf(n, sizeof n, "%s.%s", prefix, s), n)
    load_norm(w, &r->norm1, NAME("norm1"), cin);
    load_conv(w, &r->conv1, NAME("conv1"), cin, cout, 3, 1, 1, 1);
    load_norm(w, &r->norm2, NAME("norm2"), cout);
    load_conv(w, &r->conv2, NAME("conv2"), cout, cout, 3, 1, 1, 1);
    r->has_temb = temb_dim > 0;
    if (r->has_temb)
        load_linear(w, &r->temb, NAME("time_emb_proj"), temb_dim, cout, 1, 0);
    r->has_shortcut = cin != cout;
    if (r->has_shortcut)
        load_conv(w, &r->shortcut, NAME("conv_shortcut"), cin, cout, 1, 1, 0, 0);
#undef NAME
}

void resnet_forward(struct nn *nn, struct resnet *r, const float *x, float *out, int B, int H, int W,
                    const float *emb_act)
{
    size_t HW = (size_t)H * W, m = nn_mark(nn);
    float *h2 = nn_alloc(nn, B * HW * r->cout);
    nn_groupnorm_conv(nn, &r->conv1, h2, x, &r->norm1, B, H, W, r->groups, r->eps, 1, 0, NULL);
    if (r->has_temb && emb_act) {
        float *t = nn_alloc(nn, (size_t)B * r->cout);
        nn_linear(nn, &r->temb, emb_act, t, B);
        nn_add_channel_bias(nn, h2, t, B, HW, r->cout);
    }
    /* out = shortcut(x), then out += conv2(silu(norm2(h2))) inside the
     * convolution. x is read for the last time here, so out may be x
     * itself (identity). */
    if (r->has_shortcut)
        nn_conv2d(nn, &r->shortcut, x, out, B, H, W);
    else
        nn_copy(nn, out, x, B * HW * r->cout);
    nn_groupnorm_conv(nn, &r->conv2, out, h2, &r->norm2, B, H, W, r->groups, r->eps, 1, 1, NULL);
    nn_release(nn, m);
}

void resnet_release(const struct nn_backend *be, struct resnet *r)
{
    nn_conv2d_release(be, &r->conv1);
    nn_conv2d_release(be, &r->conv2);
    nn_conv2d_release(be, &r->shortcut);
    nn_linear_release(be, &r->temb);
}

int nn_prepare(struct nn *nn, void (*pass)(void *arg), void *arg, struct sd_err *err)
{
    arena_begin_measure(nn->arena);
    nn->status = SD_OK;
    pass(arg);
    if (nn->status) {
        nn->arena->measuring = 0;
        if (err)
            *err = nn->err;
        return nn->status;
    }
    return arena_end_measure(nn->arena, err);
}
