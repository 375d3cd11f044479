/* onednn.c - convolutions and matrix products through oneDNN (v2 C API).
 *
 * A conv or linear layer's be_state is a `struct dn_layer`: its weights,
 * prepared once at load time in the blocked layout oneDNN's fastest kernel
 * wants (and in bfloat16 for the bf16 backend), plus one primitive per
 * input shape met in planning. After preparation the plain weights are not
 * read again, so the loader can drop them (weights_drop).
 *
 * bf16: weights are held in bf16 and each input is rounded to bf16 in a
 * workspace just before the primitive runs (compute-bound ops, so the extra
 * pass costs ~1%); accumulation and outputs stay float32, except for the
 * products whose output is the next product's input (onednn_linear_run_b2b:
 * bf16 in and out, rounded once as the consumer would).
 *
 * wide (mode 2 of the prepare functions): the float32 primitives and
 * weight layouts, with the prepared weights rounded to bf16 for storage and
 * widened into widen.h's scratch just before each run.
 *
 * "accumulate" runs the primitive with a sum post-op: out += op(in), which
 * is how residual additions are fused into the layer before them.
 */
#include "tensor/onednn.h"

#include "tensor/arena.h"
#include "tensor/vmath.h"
#include "tensor/widen.h"

#include <limits.h>
#include <oneapi/dnnl/dnnl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef __AVX512BF16__
#include <immintrin.h>
#endif

static dnnl_engine_t engine;
static dnnl_stream_t stream;
static dnnl_status_t engine_status = dnnl_success;
static pthread_once_t engine_once = PTHREAD_ONCE_INIT;

static void engine_init(void)
{
    engine_status = dnnl_engine_create(&engine, dnnl_cpu, 0);
    if (engine_status == dnnl_success)
        engine_status = dnnl_stream_create(&stream, engine, dnnl_stream_default_flags);
}

#define MAX_SHAPES 6

/* onednn_extra_weight_bytes: one counter for every level, in kernels.c. */

/* One primitive for one input shape (conv: B, H, W; linear: M) and mode. */
struct dn_entry {
    int key[4]; /* conv: B, H, W, accumulate; linear: M, accumulate, bf16 output, 0 */
    dnnl_primitive_t prim; /* shared, owned by the primitive cache */
    dnnl_memory_t src, wei, bias, dst;
    void *wei_own; /* weights reordered for this primitive only (rare); bf16 when wide */
    size_t wei_own_bytes;
};

struct dn_layer {
    int bf16;
    int wide;                  /* bf16-held weights, widened for float32 products (widen.h) */
    dnnl_memory_desc_t wei_md; /* layout of `wei` */
    void *wei;                 /* prepared weights, owned; wide: bf16 values in wei_md's order */
    int n;
    struct dn_entry e[MAX_SHAPES];
};

static int dn_fail(struct sd_err *err, const char *what, dnnl_status_t s)
{
    return sd_errf(err, SD_ERR_INTERNAL, "oneDNN: %s failed (status %d)", what, (int)s);
}

#define TRY(call, what)                                                   \
    do {                                                                  \
        dnnl_status_t s_ = (call);                                        \
        if (s_ != dnnl_success) {                                         \
            rc = dn_fail(err, what, s_);                                  \
            goto fail;                                                    \
        }                                                                 \
    } while (0)

static int engine_ready(struct sd_err *err)
{
    pthread_once(&engine_once, engine_init);
    return engine_status == dnnl_success ? SD_OK : dn_fail(err, "engine creation", engine_status);
}

/* Copy src (described by from) into a new buffer laid out as `to`. */
static int reorder(const dnnl_memory_desc_t *from, const void *src, const dnnl_memory_desc_t *to,
                   void **out, struct sd_err *err)
{
    int rc = SD_OK;
    dnnl_memory_t msrc = NULL, mdst = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t p = NULL;
    size_t bytes = dnnl_memory_desc_get_size(to);
    void *buf = big_alloc(bytes);
    if (!buf)
        return sd_errf(err, SD_ERR_NOMEM, "out of memory preparing weights");
    TRY(dnnl_memory_create(&msrc, from, engine, (void *)src), "memory");
    TRY(dnnl_memory_create(&mdst, to, engine, buf), "memory");
    TRY(dnnl_reorder_primitive_desc_create(&pd, from, engine, to, engine, NULL), "reorder desc");
    TRY(dnnl_primitive_create(&p, pd), "reorder");
    dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, msrc}, {DNNL_ARG_TO, mdst}};
    TRY(dnnl_primitive_execute(p, stream, 2, args), "reorder");
    TRY(dnnl_stream_wait(stream), "stream wait");
    *out = buf;
    buf = NULL;
fail:
    big_free(buf, bytes);
    if (p) dnnl_primitive_destroy(p);
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (msrc) dnnl_memory_destroy(msrc);
    if (mdst) dnnl_memory_destroy(mdst);
    return rc;
}

static void entry_destroy(struct dn_entry *e)
{
    if (e->src) dnnl_memory_destroy(e->src);
    if (e->wei) dnnl_memory_destroy(e->wei);
    if (e->bias) dnnl_memory_destroy(e->bias);
    if (e->dst) dnnl_memory_destroy(e->dst);
    big_free(e->wei_own, e->wei_own_bytes);
    memset(e, 0, sizeof *e);
}

static struct dn_entry *entry_find(const struct dn_layer *st, const int key[4])
{
    for (int i = 0; st && i < st->n; i++)
        if (!memcmp(st->e[i].key, key, sizeof st->e[i].key))
            return (struct dn_entry *)&st->e[i];
    return NULL;
}

/* ------------------------------------------------------ descriptors */

static dnnl_data_type_t compute_type(int bf16) { return bf16 ? dnnl_bf16 : dnnl_f32; }

static dnnl_status_t conv_desc(dnnl_convolution_desc_t *cd, const struct nn_conv2d *l, int B, int H,
                               int W, int bf16, const dnnl_memory_desc_t *wei)
{
    dnnl_memory_desc_t src, bias, dst;
    int OH = nn_conv2d_out_size(l, H), OW = nn_conv2d_out_size(l, W);
    dnnl_dims_t sd = {B, l->cin, H, W}, bd = {l->cout}, dd = {B, l->cout, OH, OW};
    dnnl_dims_t strides = {l->stride, l->stride}, pl = {l->pad_lo, l->pad_lo}, pr = {l->pad_hi, l->pad_hi};
    dnnl_status_t s;
    if ((s = dnnl_memory_desc_init_by_tag(&src, 4, sd, compute_type(bf16), dnnl_nhwc)) ||
        (s = dnnl_memory_desc_init_by_tag(&dst, 4, dd, dnnl_f32, dnnl_nhwc)) ||
        (s = dnnl_memory_desc_init_by_tag(&bias, 1, bd, dnnl_f32, dnnl_x)))
        return s;
    return dnnl_convolution_forward_desc_init(cd, dnnl_forward_inference, dnnl_convolution_direct, &src,
                                              wei, l->b ? &bias : NULL, &dst, strides, pl, pr);
}

static dnnl_status_t matmul_desc(dnnl_matmul_desc_t *md, const struct nn_linear *l, int M, int bf16,
                                 int dst_bf16, const dnnl_memory_desc_t *wei)
{
    dnnl_memory_desc_t src, bias, dst;
    dnnl_dims_t sd = {M, l->in}, bd = {1, l->out}, dd = {M, l->out};
    dnnl_status_t s;
    if ((s = dnnl_memory_desc_init_by_tag(&src, 2, sd, compute_type(bf16), dnnl_ab)) ||
        (s = dnnl_memory_desc_init_by_tag(&dst, 2, dd, compute_type(dst_bf16), dnnl_ab)) ||
        (s = dnnl_memory_desc_init_by_tag(&bias, 2, bd, dnnl_f32, dnnl_ab)))
        return s;
    return dnnl_matmul_desc_init(md, &src, wei, l->b ? &bias : NULL, &dst);
}

/* Weights as stored in the file: conv [O, I, kh, kw], linear [N, K] (which
 * is matmul's K x N weights in "ba" order). */
static dnnl_status_t plain_weights(dnnl_memory_desc_t *md, int conv, int o, int i, int k)
{
    if (conv) {
        dnnl_dims_t d = {o, i, k, k};
        return dnnl_memory_desc_init_by_tag(md, 4, d, dnnl_f32, dnnl_oihw);
    }
    dnnl_dims_t d = {i, o};
    return dnnl_memory_desc_init_by_tag(md, 2, d, dnnl_f32, dnnl_ba);
}

static dnnl_status_t any_weights(dnnl_memory_desc_t *md, int conv, int o, int i, int k, int bf16)
{
    if (conv) {
        dnnl_dims_t d = {o, i, k, k};
        return dnnl_memory_desc_init_by_tag(md, 4, d, compute_type(bf16), dnnl_format_tag_any);
    }
    dnnl_dims_t d = {i, o};
    return dnnl_memory_desc_init_by_tag(md, 2, d, compute_type(bf16), dnnl_format_tag_any);
}

static const char *impl_name(const_dnnl_primitive_desc_t pd)
{
    const char *name = "";
    dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &name);
    return name;
}

/* The best primitive descriptor for a conv (c) or a matmul (l) at this
 * shape, wei being the weights layout to use (format_tag_any: oneDNN's
 * choice). Reference implementations are skipped: when a forced layout
 * only fits a reference kernel, the caller tries another layout. */
static dnnl_status_t make_pd(dnnl_primitive_desc_t *pd, const struct nn_conv2d *c,
                             const struct nn_linear *l, const int key[4], int bf16,
                             const dnnl_memory_desc_t *wei, int accumulate)
{
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t ops = NULL;
    dnnl_primitive_desc_iterator_t it = NULL;
    dnnl_convolution_desc_t cd;
    dnnl_matmul_desc_t md;
    *pd = NULL;
    dnnl_status_t s = dnnl_primitive_attr_create(&attr);
    if (!s && accumulate) {
        if (!(s = dnnl_post_ops_create(&ops)) && !(s = dnnl_post_ops_append_sum(ops, 1.0f)))
            s = dnnl_primitive_attr_set_post_ops(attr, ops);
    }
    if (!s)
        s = c ? conv_desc(&cd, c, key[0], key[1], key[2], bf16, wei)
              : matmul_desc(&md, l, key[0], bf16, key[2], wei);
    if (!s)
        s = dnnl_primitive_desc_iterator_create(&it, c ? (const_dnnl_op_desc_t)&cd : (const_dnnl_op_desc_t)&md,
                                                attr, engine, NULL);
    for (; !s; s = dnnl_primitive_desc_iterator_next(it)) {
        dnnl_primitive_desc_t cand = dnnl_primitive_desc_iterator_fetch(it);
        if (!cand)
            continue;
        if (strncmp(impl_name(cand), "ref", 3)) {
            *pd = cand;
            break;
        }
        dnnl_primitive_desc_destroy(cand);
    }
    if (!*pd && (!s || s == dnnl_iterator_ends))
        s = dnnl_unimplemented;
    if (it) dnnl_primitive_desc_iterator_destroy(it);
    if (ops) dnnl_post_ops_destroy(ops);
    if (attr) dnnl_primitive_attr_destroy(attr);
    return *pd ? dnnl_success : s;
}

/* ------------------------------------------------------------ cache */

/* Choosing a kernel and JIT-compiling it costs milliseconds, and a UNet has
 * ~280 convolution and linear layers but only a few dozen distinct ones.
 * So the choices are cached by everything they depend on: the weights
 * layout for a layer shape (prepare), and the primitive itself for a shape,
 * mode and weights layout (plan). A primitive holds no data pointers (they
 * are given at execution), so layers of the same shape share one. */
struct cache_key {
    int dims[12];                 /* conv/linear, shapes, padding, bias, bf16, accumulate */
    dnnl_memory_desc_t wei_in;    /* plan: the prepared layout; prepare: unused (zero) */
};

struct cache_val {
    dnnl_primitive_t prim;        /* plan entries (NULL for prepare entries) */
    dnnl_memory_desc_t wei_md;    /* the weights layout the kernel uses */
    dnnl_memory_desc_t src_md, dst_md, bias_md;
};

static struct {
    struct cache_key k;
    struct cache_val v;
} *cache;
static int cache_n, cache_cap;
static pthread_mutex_t cache_mu = PTHREAD_MUTEX_INITIALIZER;

static void cache_key_make(struct cache_key *k, const struct nn_conv2d *c, const struct nn_linear *l,
                           const int key[4], int bf16, int acc, const dnnl_memory_desc_t *wei_in)
{
    memset(k, 0, sizeof *k);
    if (c) {
        int d[12] = {1, key[0], key[1], key[2], c->cin, c->cout, c->k, c->stride, c->pad_lo, c->pad_hi,
                     !!c->b, bf16 | acc << 1};
        memcpy(k->dims, d, sizeof d);
    } else {
        int d[12] = {2, key[0], l->in, l->out, key[2], 0, 0, 0, 0, 0, !!l->b, bf16 | acc << 1};
        memcpy(k->dims, d, sizeof d);
    }
    if (wei_in)
        k->wei_in = *wei_in;
}

static struct cache_val *cache_find(const struct cache_key *k)
{
    for (int i = 0; i < cache_n; i++)
        if (!memcmp(cache[i].k.dims, k->dims, sizeof k->dims) &&
            dnnl_memory_desc_equal(&cache[i].k.wei_in, &k->wei_in))
            return &cache[i].v;
    return NULL;
}

static struct cache_val *cache_add(const struct cache_key *k, const struct cache_val *v)
{
    if (cache_n == cache_cap) {
        int cap = cache_cap ? 2 * cache_cap : 64;
        void *p = realloc(cache, cap * sizeof *cache);
        if (!p)
            return NULL;
        cache = p;
        cache_cap = cap;
    }
    cache[cache_n].k = *k;
    cache[cache_n].v = *v;
    return &cache[cache_n++].v;
}

/* ------------------------------------------------------------ prepare */

/* dst[i] = bf16(src[i]), round to nearest even. */
static void to_bf16(uint16_t *dst, const float *src, size_t n)
{
#pragma omp parallel for schedule(static) if (n >= 65536)
    for (size_t blk = 0; blk < (n + 4095) / 4096; blk++) {
        size_t i = blk * 4096, end = i + 4096 < n ? i + 4096 : n;
#ifdef __AVX512BF16__
        for (; i + 32 <= end; i += 32) {
            __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + i + 16), _mm512_loadu_ps(src + i));
            _mm512_storeu_si512((void *)(dst + i), (__m512i)v);
        }
#endif
        for (; i < end; i++)
            dst[i] = bf16_round(src[i]);
    }
}

/* The bytes of a layer's weights as held: half the float32 layout's size
 * when wide. */
static size_t held_bytes(const struct dn_layer *st, const dnnl_memory_desc_t *md)
{
    size_t b = dnnl_memory_desc_get_size(md);
    return st->wide ? b / 2 : b;
}

/* Wide: replace the float32 weights *w (bytes of them) by their bf16
 * rounding, and make the scratch big enough to widen them back. On failure
 * *w is left as it was. */
static int make_wide(void **w, size_t bytes, struct sd_err *err)
{
    size_t n = bytes / sizeof(float);
    int rc = widen_reserve(n, err);
    if (rc)
        return rc;
    uint16_t *h = big_alloc(n * sizeof *h);
    if (!h)
        return sd_errf(err, SD_ERR_NOMEM, "out of memory");
    to_bf16(h, *w, n);
    big_free(*w, bytes);
    *w = h;
    return SD_OK;
}

static int prepare(void **state, const struct nn_conv2d *c, const struct nn_linear *l, int mode,
                   struct sd_err *err)
{
    int rc = engine_ready(err);
    if (rc)
        return rc;
    struct dn_layer *st = calloc(1, sizeof *st);
    if (!st)
        return sd_errf(err, SD_ERR_NOMEM, "out of memory");
    int bf16 = mode == 1;
    st->bf16 = bf16;
    st->wide = mode == 2;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_memory_desc_t any, plain;
    /* A typical shape to let oneDNN pick the weights layout; other shapes
     * reuse that layout (see plan). */
    int key[4] = {c ? 2 : 1024, c ? 32 : 0, c ? 32 : 0, 0}; /* conv: B, H, W; linear: M, f32 out */
    int o = c ? c->cout : l->out, i = c ? c->cin : l->in, k = c ? c->k : 1;
    struct cache_key ck;
    cache_key_make(&ck, c, l, key, bf16, 0, NULL);
    TRY(plain_weights(&plain, !!c, o, i, k), "weights desc");
    pthread_mutex_lock(&cache_mu);
    struct cache_val *cv = cache_find(&ck);
    if (cv) {
        st->wei_md = cv->wei_md;
    } else {
        dnnl_status_t s1 = any_weights(&any, !!c, o, i, k, bf16);
        if (!s1)
            s1 = make_pd(&pd, c, l, key, bf16, &any, 0);
        if (!s1) {
            struct cache_val v = {.wei_md = *dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0)};
            st->wei_md = v.wei_md;
            cache_add(&ck, &v);
        }
        if (s1) {
            pthread_mutex_unlock(&cache_mu);
            rc = dn_fail(err, c ? "convolution desc" : "matmul desc", s1);
            goto fail;
        }
    }
    pthread_mutex_unlock(&cache_mu);
    rc = reorder(&plain, c ? c->w : l->w, &st->wei_md, &st->wei, err);
    if (!rc && st->wide)
        rc = make_wide(&st->wei, dnnl_memory_desc_get_size(&st->wei_md), err);
    if (rc)
        goto fail;
    dnnl_primitive_desc_destroy(pd);
    *state = st;
    return SD_OK;
fail:
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    big_free(st->wei, dnnl_memory_desc_get_size(&st->wei_md)); /* still float32 (make_wide failed) */
    free(st);
    return rc;
}

int onednn_conv2d_prepare(struct nn_conv2d *l, int mode, struct sd_err *err)
{
    return prepare(&l->be_state, l, NULL, mode, err);
}

int onednn_linear_prepare(struct nn_linear *l, int mode, struct sd_err *err)
{
    return prepare(&l->be_state, NULL, l, mode, err);
}

/* --------------------------------------------------------------- plan */

/* A cache miss: the kernel oneDNN prefers for this shape. If it wants
 * another weights layout than the prepared one, the prepared layout is
 * kept as long as the same kernel accepts it (no second copy); else the
 * layer will need a reordered copy (see plan). Called with cache_mu held. */
static int choose_primitive(const struct cache_key *ck, const struct dn_layer *st,
                            const struct nn_conv2d *c, const struct nn_linear *l, const int key[4],
                            int acc, struct cache_val **out, struct sd_err *err)
{
    int rc = SD_OK;
    dnnl_primitive_desc_t pd = NULL, forced = NULL;
    dnnl_memory_desc_t any;
    int o = c ? c->cout : l->out, i = c ? c->cin : l->in, k = c ? c->k : 1;
    TRY(any_weights(&any, !!c, o, i, k, st->bf16), "weights desc");
    TRY(make_pd(&pd, c, l, key, st->bf16, &any, acc), c ? "convolution desc" : "matmul desc");
    if (!dnnl_memory_desc_equal(dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0), &st->wei_md) &&
        make_pd(&forced, c, l, key, st->bf16, &st->wei_md, acc) == dnnl_success &&
        !strcmp(impl_name(forced), impl_name(pd))) {
        dnnl_primitive_desc_destroy(pd);
        pd = forced;
        forced = NULL;
    }
    struct cache_val v;
    v.wei_md = *dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    v.src_md = *dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0);
    v.dst_md = *dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
    v.bias_md = *dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 1);
    TRY(dnnl_primitive_create(&v.prim, pd), "primitive creation");
    if (!(*out = cache_add(ck, &v))) {
        dnnl_primitive_destroy(v.prim);
        rc = sd_errf(err, SD_ERR_NOMEM, "out of memory");
    }
fail:
    if (forced)
        dnnl_primitive_desc_destroy(forced);
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    return rc;
}


static int plan(struct dn_layer *st, const struct nn_conv2d *c, const struct nn_linear *l,
                const int key[4], struct sd_err *err)
{
    if (entry_find(st, key))
        return SD_OK;
    if (st->n == MAX_SHAPES) { /* forget the oldest shape */
        entry_destroy(&st->e[0]);
        memmove(&st->e[0], &st->e[1], sizeof st->e[0] * (MAX_SHAPES - 1));
        st->n--;
    }
    int rc = SD_OK, acc = c ? key[3] : key[1];
    struct dn_entry *e = &st->e[st->n];
    memset(e, 0, sizeof *e);
    struct cache_key ck;
    cache_key_make(&ck, c, l, key, st->bf16, acc, &st->wei_md);
    pthread_mutex_lock(&cache_mu);
    struct cache_val *cv = cache_find(&ck);
    if (!cv && (rc = choose_primitive(&ck, st, c, l, key, acc, &cv, err))) {
        pthread_mutex_unlock(&cache_mu);
        return rc;
    }
    struct cache_val v = *cv;
    pthread_mutex_unlock(&cache_mu);
    e->prim = v.prim;
    void *wei = st->wei;
    if (!dnnl_memory_desc_equal(&v.wei_md, &st->wei_md)) {
        /* This shape's best kernel wants another weights layout: derive it
         * from the prepared copy, for this layer and shape only. */
        if (st->wide) { /* from the widened weights, rounded back (exact) */
            size_t n = dnnl_memory_desc_get_size(&st->wei_md) / sizeof(float);
            rc = reorder(&st->wei_md, widen_begin(st->wei, n), &v.wei_md, &e->wei_own, err);
            widen_end();
            if (!rc && (rc = make_wide(&e->wei_own, dnnl_memory_desc_get_size(&v.wei_md), err))) {
                big_free(e->wei_own, dnnl_memory_desc_get_size(&v.wei_md));
                e->wei_own = NULL;
            }
        } else {
            rc = reorder(&st->wei_md, st->wei, &v.wei_md, &e->wei_own, err);
        }
        if (rc)
            goto fail;
        e->wei_own_bytes = held_bytes(st, &v.wei_md);
        onednn_extra_weight_bytes += e->wei_own_bytes;
        wei = e->wei_own;
    }
    TRY(dnnl_memory_create(&e->src, &v.src_md, engine, DNNL_MEMORY_NONE), "memory");
    TRY(dnnl_memory_create(&e->dst, &v.dst_md, engine, DNNL_MEMORY_NONE), "memory");
    /* wide: the weights' handle is the scratch, set at each run */
    TRY(dnnl_memory_create(&e->wei, &v.wei_md, engine, st->wide ? DNNL_MEMORY_NONE : wei), "memory");
    const float *b = c ? c->b : l->b;
    if (b)
        TRY(dnnl_memory_create(&e->bias, &v.bias_md, engine, (void *)b), "memory");
    memcpy(e->key, key, sizeof e->key);
    st->n++;
    return SD_OK;
fail:
    entry_destroy(e);
    return rc;
}

int onednn_conv2d_plan(struct nn_conv2d *l, int B, int H, int W, int accumulate, struct sd_err *err)
{
    if (!l->be_state)
        return sd_errf(err, SD_ERR_INTERNAL, "convolution used before its weights were prepared");
    int key[4] = {B, H, W, accumulate};
    return plan(l->be_state, l, NULL, key, err);
}

int onednn_linear_plan(struct nn_linear *l, int M, int accumulate, struct sd_err *err)
{
    if (!l->be_state)
        return sd_errf(err, SD_ERR_INTERNAL, "linear layer used before its weights were prepared");
    int key[4] = {M, accumulate, 0, 0};
    return plan(l->be_state, NULL, l, key, err);
}

int onednn_linear_plan_b2b(struct nn_linear *l, int M, struct sd_err *err)
{
    const struct dn_layer *st = l->be_state;
    if (!st || !st->bf16)
        return sd_errf(err, SD_ERR_INTERNAL, "bf16-to-bf16 product on a layer not prepared in bf16");
    int key[4] = {M, 0, 1, 0};
    return plan(l->be_state, NULL, l, key, err);
}

/* ---------------------------------------------------------------- run */

/* src: float32, or bf16 when the layer is (converted by the caller); out:
 * float32, or bf16 for the key's bf16-output primitive. */
static void execute(const struct dn_layer *st, const int key[4], const void *src, void *out)
{
    struct dn_entry *e = entry_find(st, key);
    SD_ASSERT(e); /* planned in measure mode */
    dnnl_memory_set_data_handle(e->src, (void *)src);
    dnnl_memory_set_data_handle(e->dst, out);
    if (st->wide) {
        size_t n = e->wei_own ? e->wei_own_bytes / 2 : dnnl_memory_desc_get_size(&st->wei_md) / 4;
        dnnl_memory_set_data_handle(e->wei, (void *)widen_begin(e->wei_own ? e->wei_own : st->wei, n));
    }
    dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, e->src}, {DNNL_ARG_WEIGHTS, e->wei},
                               {DNNL_ARG_DST, e->dst}, {DNNL_ARG_BIAS, e->bias}};
    dnnl_status_t s = dnnl_primitive_execute(e->prim, stream, e->bias ? 4 : 3, args);
    SD_ASSERT(s == dnnl_success);
    s = dnnl_stream_wait(stream);
    SD_ASSERT(s == dnnl_success);
    if (st->wide)
        widen_end();
}

static void run(const struct dn_layer *st, const int key[4], const float *in, size_t in_n, float *out,
                float *ws)
{
    if (st->bf16)
        to_bf16((uint16_t *)ws, in, in_n);
    execute(st, key, st->bf16 ? (const void *)ws : in, out);
}

void onednn_conv2d_run(const struct nn_conv2d *l, const float *in, float *out, int B, int H, int W,
                       int accumulate, float *ws)
{
    int key[4] = {B, H, W, accumulate};
    run(l->be_state, key, in, (size_t)B * H * W * l->cin, out, ws);
}

void onednn_linear_run(const struct nn_linear *l, const float *in, float *out, int M, int accumulate,
                       float *ws)
{
    int key[4] = {M, accumulate, 0, 0};
    run(l->be_state, key, in, (size_t)M * l->in, out, ws);
}

void onednn_conv2d_run_in16(const struct nn_conv2d *l, const uint16_t *in16, float *out, int B, int H,
                            int W, int accumulate)
{
    const struct dn_layer *st = l->be_state;
    SD_ASSERT(st->bf16);
    int key[4] = {B, H, W, accumulate};
    execute(st, key, in16, out);
}

void onednn_linear_run_bf16(const struct nn_linear *l, const uint16_t *in16, float *out, int M,
                            int accumulate)
{
    const struct dn_layer *st = l->be_state;
    SD_ASSERT(st->bf16);
    int key[4] = {M, accumulate, 0, 0};
    execute(st, key, in16, out);
}

void onednn_linear_run_b2b(const struct nn_linear *l, const uint16_t *in16, uint16_t *out16, int M)
{
    const struct dn_layer *st = l->be_state;
    SD_ASSERT(st->bf16);
    int key[4] = {M, 0, 1, 0};
    execute(st, key, in16, out16);
}

size_t onednn_conv2d_ws(const struct nn_conv2d *l, int B, int H, int W)
{
    const struct dn_layer *st = l->be_state;
    return st && st->bf16 ? ((size_t)B * H * W * l->cin + 1) / 2 : 0;
}

size_t onednn_linear_ws(const struct nn_linear *l, int M)
{
    const struct dn_layer *st = l->be_state;
    return st && st->bf16 ? ((size_t)M * l->in + 1) / 2 : 0;
}

size_t onednn_weight_bytes(const void *be_state)
{
    const struct dn_layer *st = be_state;
    return st ? held_bytes(st, &st->wei_md) : 0;
}

void onednn_layer_release(void **be_state)
{
    struct dn_layer *st = *be_state;
    if (!st)
        return;
    for (int i = 0; i < st->n; i++)
        entry_destroy(&st->e[i]);
    big_free(st->wei, held_bytes(st, &st->wei_md));
    free(st);
    *be_state = NULL;
}

/* ------------------------------------------------------ batched matmul */

/* One batched product: the primitive (shared through the cache, keyed by
 * batch, M, K, N and type) and this user's memory objects. */
struct onednn_bmm {
    dnnl_primitive_t prim;
    dnnl_memory_t a, b, c;
};

int onednn_bmm_plan(struct onednn_bmm **out, int batch, int M, int K, int N, size_t a_stride,
                    size_t c_stride, int bf16, struct sd_err *err)
{
    *out = NULL;
    int rc = engine_ready(err);
    if (rc)
        return rc;
    struct onednn_bmm *h = calloc(1, sizeof *h);
    if (!h)
        return sd_errf(err, SD_ERR_NOMEM, "out of memory");
    dnnl_primitive_desc_t pd = NULL;
    dnnl_memory_desc_t a, b, c;
    SD_ASSERT(a_stride >= (size_t)M * K && c_stride >= (size_t)M * N && a_stride <= INT_MAX &&
              c_stride <= INT_MAX);
    dnnl_dims_t ad = {batch, M, K}, bd = {batch, K, N}, cd = {batch, M, N};
    dnnl_dims_t as = {(dnnl_dim_t)a_stride, K, 1}, cs = {(dnnl_dim_t)c_stride, N, 1};
    TRY(dnnl_memory_desc_init_by_strides(&a, 3, ad, compute_type(bf16), as), "matmul desc");
    TRY(dnnl_memory_desc_init_by_tag(&b, 3, bd, compute_type(bf16), dnnl_abc), "matmul desc");
    TRY(dnnl_memory_desc_init_by_strides(&c, 3, cd, dnnl_f32, cs), "matmul desc");
    struct cache_key ck = {.dims = {3, batch, M, K, N, (int)a_stride, (int)c_stride, 0, 0, 0, 0, bf16}};
    pthread_mutex_lock(&cache_mu);
    struct cache_val *cv = cache_find(&ck);
    if (!cv) {
        dnnl_matmul_desc_t md;
        struct cache_val v = {0};
        dnnl_status_t s = dnnl_matmul_desc_init(&md, &a, &b, NULL, &c);
        if (!s)
            s = dnnl_primitive_desc_create(&pd, &md, NULL, engine, NULL);
        if (!s)
            s = dnnl_primitive_create(&v.prim, pd);
        if (!s && !(cv = cache_add(&ck, &v))) {
            dnnl_primitive_destroy(v.prim);
            s = dnnl_out_of_memory;
        }
        if (s) {
            pthread_mutex_unlock(&cache_mu);
            rc = dn_fail(err, "batched matmul", s);
            goto fail;
        }
    }
    h->prim = cv->prim;
    pthread_mutex_unlock(&cache_mu);
    TRY(dnnl_memory_create(&h->a, &a, engine, DNNL_MEMORY_NONE), "memory");
    TRY(dnnl_memory_create(&h->b, &b, engine, DNNL_MEMORY_NONE), "memory");
    TRY(dnnl_memory_create(&h->c, &c, engine, DNNL_MEMORY_NONE), "memory");
    *out = h;
    h = NULL;
fail:
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    onednn_bmm_free(h);
    return rc;
}

void onednn_bmm_run(struct onednn_bmm *h, const void *A, const void *B, float *C)
{
    dnnl_memory_set_data_handle(h->a, (void *)A);
    dnnl_memory_set_data_handle(h->b, (void *)B);
    dnnl_memory_set_data_handle(h->c, C);
    dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, h->a}, {DNNL_ARG_WEIGHTS, h->b}, {DNNL_ARG_DST, h->c}};
    dnnl_status_t s = dnnl_primitive_execute(h->prim, stream, 3, args);
    SD_ASSERT(s == dnnl_success);
    s = dnnl_stream_wait(stream);
    SD_ASSERT(s == dnnl_success);
}

void onednn_bmm_free(struct onednn_bmm *h)
{
    if (!h)
        return;
    if (h->a) dnnl_memory_destroy(h->a);
    if (h->b) dnnl_memory_destroy(h->b);
    if (h->c) dnnl_memory_destroy(h->c);
    free(h);
}

void onednn_gemm(char tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
                 int ldb, float beta, float *C, int ldc)
{
    dnnl_status_t s = dnnl_sgemm('N', tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    SD_ASSERT(s == dnnl_success);
}
