/* nn.h - the engine's op interface: layers, compute backends, dispatch.
 *
 * Data layout. Activations are float32, channels-last: an image batch is
 * [B, H, W, C] (NHWC) and a token sequence [B, N, C]. That is the layout the
 * fastest CPU convolutions want, and it makes a feature map and its
 * attention tokens the same memory (token = row*W + col, as in diffusers),
 * so transformer blocks need no transposes. Weights keep PyTorch's layouts:
 * Conv2d [out, in, kh, kw], Linear [out, in].
 *
 * Backends. Every op has a plain reference implementation (ops_ref.c,
 * single-threaded loops, readable) and a fast one (ops_cpu.c: OpenMP and
 * oneDNN). Both fill the same `struct nn_backend`; tests run each op on both
 * and compare. Networks only call the nn_* dispatch functions below.
 *
 * Measure mode. While the context's arena is measuring (arena.h), the
 * dispatch functions skip the computation and instead let the backend plan
 * the op (create oneDNN primitives for these shapes). Running a network's
 * forward once in measure mode therefore sizes its activation memory and
 * prepares all kernels; the real passes then allocate nothing.
 */
#ifndef SD_NN_H
#define SD_NN_H

#include <math.h>
#include <stddef.h>
#include <string.h>

#include "tensor/arena.h"
#include "util/err.h"

/* Conv2d, zero padding pad_lo on top/left and pad_hi on bottom/right
 * (equal for PyTorch's padding=p; the VAE encoder's downsampler pads (0,1)). */
struct nn_conv2d {
    int cin, cout, k, stride, pad_lo, pad_hi;
    const float *w;   /* [cout, cin, k, k] */
    const float *b;   /* [cout] or NULL */
    void *be_state;   /* owned by the backend (prepared weights, kernels) */
    /* A hint for the backend's choice of algorithm, set before prepare:
     * input pixels per image at the size the model is planned for (64x64
     * latents for SD 1.5 at 512x512, halved per side at each UNet level);
     * 0 when unknown. */
    int px;
};

/* Linear: y = x W^T + b. */
struct nn_linear {
    int in, out;
    const float *w;   /* [out, in] */
    const float *b;   /* [out] or NULL */
    void *be_state;
};

/* Affine parameters of a GroupNorm / LayerNorm over c channels. */
struct nn_norm {
    int c;
    const float *w, *b; /* [c] */
};

enum nn_act { NN_SILU, NN_GELU, NN_QUICK_GELU };

static inline int nn_conv2d_out_size(const struct nn_conv2d *l, int n)
{
    return (n + l->pad_lo + l->pad_hi - l->k) / l->stride + 1;
}

struct nn_backend {
    const char *name;
    /* Load time, optional: prepare a layer's weights (reorder, convert).
     * When it succeeds the backend never reads l->w again (the loader may
     * drop the file pages). */
    int (*conv2d_prepare)(struct nn_conv2d *l, struct sd_err *err);
    int (*linear_prepare)(struct nn_linear *l, struct sd_err *err);
    /* out[B,OH,OW,cout] = conv(in[B,H,W,cin]), or += when accumulate.
     * ws: conv2d_ws() floats of scratch (conv2d_ws may be NULL: none). */
    void (*conv2d)(const struct nn_conv2d *l, const float *in, float *out, int B, int H, int W,
                   int accumulate, float *ws);
    size_t (*conv2d_ws)(const struct nn_conv2d *l, int B, int H, int W);
    /* Optional: prepare for these input sizes (called in measure mode). */
    int (*conv2d_plan)(struct nn_conv2d *l, int B, int H, int W, int accumulate, struct sd_err *err);
    /* out[M,out] = in[M,in] W^T + b, or += when accumulate. */
    void (*linear)(const struct nn_linear *l, const float *in, float *out, int M, int accumulate,
                   float *ws);
    size_t (*linear_ws)(const struct nn_linear *l, int M);
    int (*linear_plan)(struct nn_linear *l, int M, int accumulate, struct sd_err *err);
    /* Release whatever prepare/plan attached to a layer. */
    void (*layer_release)(void **be_state);
    /* Bytes of weights a prepared layer holds (NULL: none). */
    size_t (*layer_bytes)(const void *be_state);
    /* GroupNorm over [B, HW, C] with G groups; silu != 0 applies SiLU after. */
    void (*groupnorm)(float *out, const float *in, const struct nn_norm *n, int B, int HW, int G,
                      float eps, int silu);
    /* LayerNorm over the last dimension of [N, C]. */
    void (*layernorm)(float *out, const float *in, const struct nn_norm *n, int N, float eps);
    /* Multi-head attention. q: [B, Nq, heads*dh] with row stride ldq floats,
     * k/v: [B, Nk, heads*dh] with row strides ldk/ldv, out: [B, Nq, heads*dh]
     * (stride heads*dh). Head h uses channels h*dh .. h*dh+dh-1.
     * out = softmax(q k^T * scale (+ causal mask)) v, per batch and head.
     * ws: attention_ws(B, Nq, Nk, heads, dh) floats of scratch (attention_ws may be NULL: none). */
    void (*attention)(float *out, const float *q, const float *k, const float *v, int B, int Nq,
                      int Nk, int heads, int dh, int ldq, int ldk, int ldv, float scale, int causal,
                      float *ws);
    size_t (*attention_ws)(int B, int Nq, int Nk, int heads, int dh);
    /* out[N, F] = in[N, :F] * gelu(in[N, F:2F]) */
    void (*geglu)(float *out, const float *in, size_t N, int F);
    void (*activation)(float *x, size_t n, enum nn_act act);
    /* out = a + b (out may alias a or b) */
    void (*add)(float *out, const float *a, const float *b, size_t n);
    /* x[b, p, c] += bias[b*C + c] for p < HW */
    void (*add_channel_bias)(float *x, const float *bias, int B, int HW, int C);
    /* Optional fused pairs, for backends whose products read their input
     * in another format than float32 (bf16): the first op writes the
     * product's input in that format, and the float32 activation is never
     * stored or converted. out = linear(layernorm(in)) and out =
     * linear(geglu(in)) (+= when accumulate), same results as the two ops
     * in a row; ws: linear_ws(l, N) floats. NULL: the model runs the two. */
    void (*layernorm_linear)(const struct nn_linear *l, float *out, const float *in,
                             const struct nn_norm *n, int N, float eps, int accumulate, float *ws);
    void (*geglu_linear)(const struct nn_linear *l, float *out, const float *in, int N, int F,
                         int accumulate, float *ws);
    /* Optional: out = conv(groupnorm(in)) (SiLU between when silu; += when
     * accumulate) on [B, H, W, n->c], the normalised image written in the
     * convolution's input format (bf16: rounded once, where the op pair
     * rounds the float32 image inside the convolution; a Winograd layer's
     * input transform then starts from those bf16 values). Planned by
     * conv2d_plan; ws: gn_conv_ws floats. NULL: groupnorm then conv2d. */
    size_t (*gn_conv_ws)(const struct nn_conv2d *l, int B, int H, int W);
    void (*groupnorm_conv)(const struct nn_conv2d *l, float *out, const float *in, const struct nn_norm *n,
                           int B, int H, int W, int G, float eps, int silu, int accumulate, float *ws);
    /* Optional: a transformer block's feed-forward, out += l2(geglu(l1(
     * layernorm(in)))) over N rows (out may alias in; l1->out = 2 * l2->in),
     * with the intermediates in the products' own format (bf16: l1 writes
     * bf16, so the GEGLU reads its inputs rounded to bf16 where the op
     * sequence reads them in float32). ff_plan: measure mode; ws: ff_ws
     * floats. NULL: the model runs layernorm_linear + geglu_linear. */
    int (*ff_plan)(struct nn_linear *l1, struct nn_linear *l2, int N, struct sd_err *err);
    size_t (*ff_ws)(const struct nn_linear *l1, const struct nn_linear *l2, int N);
    void (*layernorm_ff)(const struct nn_linear *l1, const struct nn_linear *l2, float *out,
                         const float *in, const struct nn_norm *n, int N, float eps, float *ws);
    /* Optional: a transformer block's attention, x += lo(attention(q, k, v))
     * over B*N rows with q = lq(layernorm(x)), C = lo->out. Self-attention
     * when k is NULL: lq writes [q | k | v] (3C outputs), T = N. Else
     * cross-attention with k, v [B*T, C] in float32. The intermediates stay
     * in the products' format (bf16: lq writes bf16, the attention reads it
     * and writes its output in bf16 for lo; the same values as the ops one
     * by one). attn_block_plan: measure mode; ws: attn_block_ws floats.
     * NULL: the model runs layernorm_linear, attention and linear. */
    int (*attn_block_plan)(struct nn_linear *lq, struct nn_linear *lo, int B, int N, int heads,
                           struct sd_err *err);
    size_t (*attn_block_ws)(const struct nn_linear *lq, const struct nn_linear *lo, int B, int N, int T,
                            int heads);
    void (*attn_block)(const struct nn_linear *lq, const struct nn_linear *lo, float *x,
                       const struct nn_norm *n, const float *k, const float *v, int B, int N, int T,
                       int heads, float eps, float *ws);
    /* Nearest-neighbour resize [B,H,W,C] -> [B,OH,OW,C] (PyTorch "nearest"). */
    void (*upsample_nearest)(float *out, const float *in, int B, int H, int W, int C, int OH, int OW);
    /* out[p, :] = concat(a[p, :Ca], b[p, :Cb]) for p < npix */
    void (*concat_channels)(float *out, const float *a, int Ca, const float *b, int Cb, size_t npix);
    /* The four phases of an upsampling convolution (nn_upconv) put in
     * place: out[b, 2i+a, 2j+c, :] = in[b, i+a, j+c, (2a+c)*C .. (2a+c+1)*C)
     * for i < H, j < W, a, c in {0, 1}; in is [B, H+1, W+1, 4C],
     * out [B, 2H, 2W, C]. */
    void (*interleave_phases)(float *out, const float *in, int B, int H, int W, int C);
};

/* Optional per-op profile (bench/sdbench --profile): wall time and FLOPs by
 * op kind, accumulated by the dispatch functions below while enabled. */
enum nn_op {
    NN_OP_CONV, NN_OP_LINEAR, NN_OP_ATTENTION, NN_OP_GROUPNORM, NN_OP_LAYERNORM, NN_OP_GEGLU,
    NN_OP_LN_LINEAR, NN_OP_GEGLU_LINEAR, NN_OP_FF, NN_OP_ATTN_BLOCK, NN_OP_GN_CONV, NN_OP_ACT,
    NN_OP_ADD, NN_OP_UPSAMPLE, NN_OP_CONCAT,
    NN_OP_COUNT
};
struct nn_profile {
    int enabled;
    double seconds[NN_OP_COUNT];
    double flops[NN_OP_COUNT];
    long calls[NN_OP_COUNT];
};
extern struct nn_profile nn_prof;
extern const char *const nn_op_names[NN_OP_COUNT];
double nn_now(void);

#define NN_PROF_BEGIN() double prof_t0_ = nn_prof.enabled ? nn_now() : 0
#define NN_PROF_END(op, fl)                                                  \
    do {                                                                     \
        if (nn_prof.enabled) {                                               \
            nn_prof.seconds[op] += nn_now() - prof_t0_;                      \
            nn_prof.flops[op] += (fl);                                       \
            nn_prof.calls[op]++;                                             \
        }                                                                    \
    } while (0)

extern const struct nn_backend nn_backend_ref;      /* ops_ref.c: plain loops */
#ifdef SD_KLEVEL /* inside a per-level kernel build: this level's (kernel_names.h) */
extern const struct nn_backend nn_backend_cpu;      /* ops_cpu.c: oneDNN + OpenMP, float32 */
extern const struct nn_backend nn_backend_cpu_bf16; /* the same, bf16 weights and products */
extern const struct nn_backend nn_backend_cpu_wide; /* bf16 weights, float32 products (widen.h) */
#else
/* Everywhere else: the fast backends of the kernel level in use, chosen
 * once from what the CPU reports (cpu.h, kernels.c). */
const struct nn_backend *nn_backend_cpu_get(void);
const struct nn_backend *nn_backend_cpu_bf16_get(void);
const struct nn_backend *nn_backend_cpu_wide_get(void);
#define nn_backend_cpu (*nn_backend_cpu_get())
#define nn_backend_cpu_bf16 (*nn_backend_cpu_bf16_get())
#define nn_backend_cpu_wide (*nn_backend_cpu_wide_get())
#endif

/* Per-network execution context. */
struct nn {
    const struct nn_backend *be;
    struct arena *arena; /* own, or shared by networks that run one after another */
    struct arena own;
    int status;          /* first planning error (measure mode) */
    struct sd_err err;
};

static inline int nn_measuring(const struct nn *nn) { return nn->arena->measuring; }
static inline float *nn_alloc(struct nn *nn, size_t n) { return arena_alloc(nn->arena, n); }
static inline size_t nn_mark(struct nn *nn) { return arena_mark(nn->arena); }
static inline void nn_release(struct nn *nn, size_t m) { arena_release(nn->arena, m); }
/* Start a real (not measuring) pass from an empty arena. */
static inline void nn_begin(struct nn *nn) { nn->arena->top = 0; }

/* out = conv(in), or out += conv(in) when accumulate (a fused residual add). */
static inline void nn_conv2d_ex(struct nn *nn, struct nn_conv2d *l, const float *in, float *out,
                                int B, int H, int W, int accumulate)
{
    size_t m = nn_mark(nn);
    float *ws = nn->be->conv2d_ws ? nn_alloc(nn, nn->be->conv2d_ws(l, B, H, W)) : NULL;
    if (nn_measuring(nn)) {
        if (!nn->status && nn->be->conv2d_plan)
            nn->status = nn->be->conv2d_plan(l, B, H, W, accumulate, &nn->err);
    } else {
        NN_PROF_BEGIN();
        nn->be->conv2d(l, in, out, B, H, W, accumulate, ws);
        NN_PROF_END(NN_OP_CONV, 2.0 * B * nn_conv2d_out_size(l, H) * nn_conv2d_out_size(l, W) *
                                    l->cout * l->cin * l->k * l->k);
    }
    nn_release(nn, m);
}

static inline void nn_conv2d(struct nn *nn, struct nn_conv2d *l, const float *in, float *out,
                             int B, int H, int W)
{
    nn_conv2d_ex(nn, l, in, out, B, H, W, 0);
}

/* Measure mode: plan the product (and return 1: skip the arithmetic). */
static inline int nn_plan_linear(struct nn *nn, struct nn_linear *l, int M, int accumulate)
{
    if (!nn_measuring(nn))
        return 0;
    if (!nn->status && nn->be->linear_plan)
        nn->status = nn->be->linear_plan(l, M, accumulate, &nn->err);
    return 1;
}

static inline void nn_linear_ex(struct nn *nn, struct nn_linear *l, const float *in, float *out,
                                int M, int accumulate)
{
    size_t m = nn_mark(nn);
    float *ws = nn->be->linear_ws ? nn_alloc(nn, nn->be->linear_ws(l, M)) : NULL;
    if (!nn_plan_linear(nn, l, M, accumulate)) {
        NN_PROF_BEGIN();
        nn->be->linear(l, in, out, M, accumulate, ws);
        NN_PROF_END(NN_OP_LINEAR, 2.0 * M * l->in * l->out);
    }
    nn_release(nn, m);
}

/* out = in W^T + b */
static inline void nn_linear(struct nn *nn, struct nn_linear *l, const float *in, float *out, int M)
{
    nn_linear_ex(nn, l, in, out, M, 0);
}

static inline void nn_groupnorm(struct nn *nn, float *out, const float *in, const struct nn_norm *n,
                                int B, int HW, int G, float eps, int silu)
{
    if (nn_measuring(nn))
        return;
    NN_PROF_BEGIN();
    nn->be->groupnorm(out, in, n, B, HW, G, eps, silu);
    NN_PROF_END(NN_OP_GROUPNORM, 0);
}

/* out = conv(silu?(groupnorm(in))), or += when accumulate: the backend's
 * fused pair where there is one, else the two ops through tmp ([B, H, W,
 * n->c] floats; NULL: taken from the arena). */
static inline void nn_groupnorm_conv(struct nn *nn, struct nn_conv2d *l, float *out, const float *in,
                                     const struct nn_norm *n, int B, int H, int W, int G, float eps,
                                     int silu, int accumulate, float *tmp)
{
    size_t m = nn_mark(nn);
    if (!nn->be->groupnorm_conv) {
        float *h = tmp ? tmp : nn_alloc(nn, (size_t)B * H * W * n->c);
        nn_groupnorm(nn, h, in, n, B, H * W, G, eps, silu);
        nn_conv2d_ex(nn, l, h, out, B, H, W, accumulate);
    } else {
        float *ws = nn_alloc(nn, nn->be->gn_conv_ws(l, B, H, W));
        if (nn_measuring(nn)) {
            if (!nn->status && nn->be->conv2d_plan)
                nn->status = nn->be->conv2d_plan(l, B, H, W, accumulate, &nn->err);
        } else {
            NN_PROF_BEGIN();
            nn->be->groupnorm_conv(l, out, in, n, B, H, W, G, eps, silu, accumulate, ws);
            NN_PROF_END(NN_OP_GN_CONV, 2.0 * B * nn_conv2d_out_size(l, H) * nn_conv2d_out_size(l, W) *
                                           l->cout * l->cin * l->k * l->k);
        }
    }
    nn_release(nn, m);
}

static inline void nn_layernorm(struct nn *nn, float *out, const float *in, const struct nn_norm *n,
                                int N, float eps)
{
    if (nn_measuring(nn))
        return;
    NN_PROF_BEGIN();
    nn->be->layernorm(out, in, n, N, eps);
    NN_PROF_END(NN_OP_LAYERNORM, 0);
}

static inline void nn_attention(struct nn *nn, float *out, const float *q, const float *k,
                                const float *v, int B, int Nq, int Nk, int heads, int dh, int ldq,
                                int ldk, int ldv, float scale, int causal)
{
    size_t m = nn_mark(nn);
    float *ws = nn->be->attention_ws ? nn_alloc(nn, nn->be->attention_ws(B, Nq, Nk, heads, dh)) : NULL;
    if (!nn_measuring(nn)) {
        NN_PROF_BEGIN();
        nn->be->attention(out, q, k, v, B, Nq, Nk, heads, dh, ldq, ldk, ldv, scale, causal, ws);
        NN_PROF_END(NN_OP_ATTENTION, 4.0 * B * heads * Nq * Nk * dh);
    }
    nn_release(nn, m);
}

static inline void nn_geglu(struct nn *nn, float *out, const float *in, size_t N, int F)
{
    if (nn_measuring(nn))
        return;
    NN_PROF_BEGIN();
    nn->be->geglu(out, in, N, F);
    NN_PROF_END(NN_OP_GEGLU, 0);
}

/* out = linear(layernorm(in)) over N rows, or += when accumulate: one
 * fused backend op where there is one, else the two ops through tmp
 * ([N, n->c] floats). */
static inline void nn_layernorm_linear(struct nn *nn, struct nn_linear *l, float *out, const float *in,
                                       const struct nn_norm *n, int N, float eps, float *tmp,
                                       int accumulate)
{
    if (!nn->be->layernorm_linear) {
        nn_layernorm(nn, tmp, in, n, N, eps);
        nn_linear_ex(nn, l, tmp, out, N, accumulate);
        return;
    }
    size_t m = nn_mark(nn);
    float *ws = nn_alloc(nn, nn->be->linear_ws(l, N)); /* the product's bf16 input */
    if (!nn_plan_linear(nn, l, N, accumulate)) {
        NN_PROF_BEGIN();
        nn->be->layernorm_linear(l, out, in, n, N, eps, accumulate, ws);
        NN_PROF_END(NN_OP_LN_LINEAR, 2.0 * N * l->in * l->out);
    }
    nn_release(nn, m);
}

/* out = linear(geglu(in)) over N rows of 2F, or += when accumulate; tmp:
 * [N, F] floats for the unfused path. */
static inline void nn_geglu_linear(struct nn *nn, struct nn_linear *l, float *out, const float *in,
                                   int N, int F, float *tmp, int accumulate)
{
    if (!nn->be->geglu_linear) {
        nn_geglu(nn, tmp, in, N, F);
        nn_linear_ex(nn, l, tmp, out, N, accumulate);
        return;
    }
    size_t m = nn_mark(nn);
    float *ws = nn_alloc(nn, nn->be->linear_ws(l, N)); /* the product's bf16 input */
    if (!nn_plan_linear(nn, l, N, accumulate)) {
        NN_PROF_BEGIN();
        nn->be->geglu_linear(l, out, in, N, F, accumulate, ws);
        NN_PROF_END(NN_OP_GEGLU_LINEAR, 2.0 * N * l->in * l->out);
    }
    nn_release(nn, m);
}

/* x += lo(attention(lq(layernorm(x)), k, v)) over B*N rows (nn_backend.
 * attn_block: self-attention when k is NULL, T = N): the backend's fused
 * block where there is one, else the ops one by one. */
static inline void nn_attention_block(struct nn *nn, struct nn_linear *lq, struct nn_linear *lo, float *x,
                                      const struct nn_norm *n, const float *k, const float *v, int B,
                                      int N, int T, int heads, float eps)
{
    size_t m = nn_mark(nn);
    int C = lo->out, dh = C / heads, BN = B * N;
    if (!nn->be->attn_block) {
        size_t BNC = (size_t)BN * C;
        float scale = 1.0f / sqrtf((float)dh);
        float *h = nn_alloc(nn, BNC), *o = nn_alloc(nn, BNC), *q = nn_alloc(nn, k ? BNC : 3 * BNC);
        nn_layernorm_linear(nn, lq, q, x, n, BN, eps, h, 0);
        if (k)
            nn_attention(nn, o, q, k, v, B, N, T, heads, dh, C, C, C, scale, 0);
        else
            nn_attention(nn, o, q, q + C, q + 2 * C, B, N, N, heads, dh, 3 * C, 3 * C, 3 * C, scale, 0);
        nn_linear_ex(nn, lo, o, x, BN, 1);
    } else {
        float *ws = nn_alloc(nn, nn->be->attn_block_ws(lq, lo, B, N, T, heads));
        if (nn_measuring(nn)) {
            if (!nn->status)
                nn->status = nn->be->attn_block_plan(lq, lo, B, N, heads, &nn->err);
        } else {
            NN_PROF_BEGIN();
            nn->be->attn_block(lq, lo, x, n, k, v, B, N, T, heads, eps, ws);
            NN_PROF_END(NN_OP_ATTN_BLOCK,
                        2.0 * BN * C * lq->out + 2.0 * BN * C * C + 4.0 * B * N * T * C);
        }
    }
    nn_release(nn, m);
}

/* x += l2(geglu(l1(layernorm(x)))) over N rows: the backend's fused
 * feed-forward where there is one, else the pairs above (the dispatcher
 * owns the temporaries either way). */
static inline void nn_layernorm_ff(struct nn *nn, struct nn_linear *l1, struct nn_linear *l2, float *x,
                                   const struct nn_norm *n, int N, float eps)
{
    size_t m = nn_mark(nn);
    int F = l2->in;
    if (!nn->be->layernorm_ff) {
        float *h = nn_alloc(nn, (size_t)N * n->c), *ff = nn_alloc(nn, (size_t)N * 2 * F),
              *g = nn_alloc(nn, (size_t)N * F);
        nn_layernorm_linear(nn, l1, ff, x, n, N, eps, h, 0);
        nn_geglu_linear(nn, l2, x, ff, N, F, g, 1);
    } else {
        float *ws = nn_alloc(nn, nn->be->ff_ws(l1, l2, N));
        if (nn_measuring(nn)) {
            if (!nn->status)
                nn->status = nn->be->ff_plan(l1, l2, N, &nn->err);
        } else {
            NN_PROF_BEGIN();
            nn->be->layernorm_ff(l1, l2, x, x, n, N, eps, ws);
            NN_PROF_END(NN_OP_FF, 2.0 * N * n->c * 2 * F + 2.0 * N * F * l2->out);
        }
    }
    nn_release(nn, m);
}

static inline void nn_activation(struct nn *nn, float *x, size_t n, enum nn_act act)
{
    if (nn_measuring(nn))
        return;
    NN_PROF_BEGIN();
    nn->be->activation(x, n, act);
    NN_PROF_END(NN_OP_ACT, 0);
}

static inline void nn_add(struct nn *nn, float *out, const float *a, const float *b, size_t n)
{
    if (nn_measuring(nn))
        return;
    NN_PROF_BEGIN();
    nn->be->add(out, a, b, n);
    NN_PROF_END(NN_OP_ADD, 0);
}

/* out = in (n floats). */
static inline void nn_copy(struct nn *nn, float *out, const float *in, size_t n)
{
    if (nn_measuring(nn) || out == in)
        return;
    NN_PROF_BEGIN();
#pragma omp parallel for schedule(static) if (n >= (1 << 16))
    for (size_t i = 0; i < n; i += 4096)
        memcpy(out + i, in + i, (n - i < 4096 ? n - i : 4096) * sizeof(float));
    NN_PROF_END(NN_OP_ADD, 0);
}

static inline void nn_add_channel_bias(struct nn *nn, float *x, const float *bias, int B, int HW, int C)
{
    if (nn_measuring(nn))
        return;
    NN_PROF_BEGIN();
    nn->be->add_channel_bias(x, bias, B, HW, C);
    NN_PROF_END(NN_OP_ADD, 0);
}

static inline void nn_upsample_nearest(struct nn *nn, float *out, const float *in, int B, int H, int W,
                                       int C, int OH, int OW)
{
    if (nn_measuring(nn))
        return;
    NN_PROF_BEGIN();
    nn->be->upsample_nearest(out, in, B, H, W, C, OH, OW);
    NN_PROF_END(NN_OP_UPSAMPLE, 0);
}

/* Nearest 2x upsampling followed by a 3x3 convolution (stride 1, padding
 * 1), computed on the small image. Output pixel (2i+a, 2j+c) of the 3x3
 * convolution over the upsampled image reads upsampled rows 2i+a-1 ..
 * 2i+a+1, which are input rows i-1, i, i (a = 0) or i, i, i+1 (a = 1), and
 * the same for columns: so each of the four phases (a, c) is a 2x2
 * convolution of the input, with the 3x3 taps that land on the same input
 * pixel summed. The four are one 2x2 convolution with padding 1 and 4 x
 * cout outputs (phase 2a+c at outputs (2a+c)*cout ..), whose output pixel
 * (i+a, j+c) is phase (a, c)'s (i, j). 16 multiply-adds per 2x2 output
 * block and channel pair instead of the 36 of the direct convolution (as
 * many as Winograd's F(2x2, 3x3), without its transforms), no upsampled
 * image, and weights of 16/9 the size.
 *
 * nn_upconv_weights fills w2 [4*cout, cin, 2, 2] and b2 [4*cout] (b2 NULL:
 * none) from a 3x3 layer's w3 [cout, cin, 3, 3] and b3 [cout]; the layer
 * to give them is {cin, 4*cout, 2, 1, 1, 1, w2, b2}. */
void nn_upconv_weights(float *w2, float *b2, const float *w3, const float *b3, int cin, int cout);

static inline void nn_interleave_phases(struct nn *nn, float *out, const float *in, int B, int H, int W,
                                        int C)
{
    if (nn_measuring(nn))
        return;
    NN_PROF_BEGIN();
    nn->be->interleave_phases(out, in, B, H, W, C);
    NN_PROF_END(NN_OP_UPSAMPLE, 0);
}

/* out[B, 2H, 2W, l->cout/4] = conv3x3(upsample2x(in[B, H, W, l->cin])) for
 * a layer made from nn_upconv_weights. */
static inline void nn_upconv(struct nn *nn, struct nn_conv2d *l, const float *in, float *out, int B, int H,
                             int W)
{
    size_t m = nn_mark(nn);
    float *phases = nn_alloc(nn, (size_t)B * (H + 1) * (W + 1) * l->cout);
    nn_conv2d(nn, l, in, phases, B, H, W);
    nn_interleave_phases(nn, out, phases, B, H, W, l->cout / 4);
    nn_release(nn, m);
}

static inline void nn_concat_channels(struct nn *nn, float *out, const float *a, int Ca,
                                      const float *b, int Cb, size_t npix)
{
    if (nn_measuring(nn))
        return;
    NN_PROF_BEGIN();
    nn->be->concat_channels(out, a, Ca, b, Cb, npix);
    NN_PROF_END(NN_OP_CONCAT, 0);
}

/* Source index of PyTorch's "nearest" resize for output index dst. */
int nn_nearest_src(int dst, int in, int out);

void nn_init(struct nn *nn, const struct nn_backend *be);
/* Use `shared` for activations instead of nn's own arena. Networks that
 * never run at the same time (text encoder, UNet, VAE of one model) can
 * share one, sized for the largest; their passes then allocate from it. */
void nn_share_arena(struct nn *nn, struct arena *shared);
void nn_free(struct nn *nn);
/* Release backend state attached to layers (call before freeing weights). */
void nn_conv2d_release(const struct nn_backend *be, struct nn_conv2d *l);
void nn_linear_release(const struct nn_backend *be, struct nn_linear *l);

#endif
