/* onednn.c - see onednn.h. */
#include "tensor/onednn.h"

#include <oneapi/dnnl/dnnl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

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

#define MAX_SHAPES 4

/* One primitive per input shape (B, H, W) of a conv layer. */
struct conv_entry {
    int B, H, W;
    dnnl_primitive_t prim;
    dnnl_memory_t src, wei, bias, dst;
};

struct conv_state {
    int n;
    struct conv_entry e[MAX_SHAPES];
    /* Weights in the format the first primitive chose; later shapes are
     * created with that same format so the weights exist once. */
    dnnl_memory_desc_t wei_md;
    void *wei_buf;
};

static int onednn_fail(struct sd_err *err, const char *what, dnnl_status_t s)
{
    return sd_errf(err, SD_ERR_INTERNAL, "oneDNN: %s failed (status %d)", what, (int)s);
}

#define TRY(call, what)                                                   \
    do {                                                                  \
        dnnl_status_t s_ = (call);                                        \
        if (s_ != dnnl_success) {                                         \
            rc = onednn_fail(err, what, s_);                                \
            goto fail;                                                    \
        }                                                                 \
    } while (0)

/* Reorder plain OIHW weights into the layout described by md, once. */
static int reorder_weights(const struct nn_conv2d *l, const dnnl_memory_desc_t *md, void **out,
                           struct sd_err *err)
{
    int rc = SD_OK;
    dnnl_memory_desc_t plain;
    dnnl_dims_t wd = {l->cout, l->cin, l->k, l->k};
    dnnl_memory_t msrc = NULL, mdst = NULL;
    dnnl_primitive_desc_t rpd = NULL;
    dnnl_primitive_t rp = NULL;
    size_t bytes = dnnl_memory_desc_get_size(md);
    void *buf = NULL;
    if (posix_memalign(&buf, 64, bytes ? bytes : 64))
        return sd_errf(err, SD_ERR_NOMEM, "oneDNN weights: out of memory");
    TRY(dnnl_memory_desc_init_by_tag(&plain, 4, wd, dnnl_f32, dnnl_oihw), "weights desc");
    TRY(dnnl_memory_create(&msrc, &plain, engine, (void *)l->w), "memory");
    TRY(dnnl_memory_create(&mdst, md, engine, buf), "memory");
    TRY(dnnl_reorder_primitive_desc_create(&rpd, &plain, engine, md, engine, NULL), "reorder desc");
    TRY(dnnl_primitive_create(&rp, rpd), "reorder");
    dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, msrc}, {DNNL_ARG_TO, mdst}};
    TRY(dnnl_primitive_execute(rp, stream, 2, args), "reorder");
    TRY(dnnl_stream_wait(stream), "stream wait");
    *out = buf;
    buf = NULL;
fail:
    free(buf);
    if (rp) dnnl_primitive_destroy(rp);
    if (rpd) dnnl_primitive_desc_destroy(rpd);
    if (msrc) dnnl_memory_destroy(msrc);
    if (mdst) dnnl_memory_destroy(mdst);
    return rc;
}

static void conv_entry_destroy(struct conv_entry *e)
{
    if (e->prim) dnnl_primitive_destroy(e->prim);
    if (e->src) dnnl_memory_destroy(e->src);
    if (e->dst) dnnl_memory_destroy(e->dst);
    if (e->wei) dnnl_memory_destroy(e->wei);
    if (e->bias) dnnl_memory_destroy(e->bias);
    memset(e, 0, sizeof *e);
}

static struct conv_entry *conv_find(const struct conv_state *st, int B, int H, int W)
{
    for (int i = 0; st && i < st->n; i++)
        if (st->e[i].B == B && st->e[i].H == H && st->e[i].W == W)
            return (struct conv_entry *)&st->e[i];
    return NULL;
}

int onednn_conv2d_plan(struct nn_conv2d *l, int B, int H, int W, struct sd_err *err)
{
    pthread_once(&engine_once, engine_init);
    if (engine_status != dnnl_success)
        return onednn_fail(err, "engine creation", engine_status);
    struct conv_state *st = l->be_state;
    if (conv_find(st, B, H, W))
        return SD_OK;
    if (!st) {
        st = calloc(1, sizeof *st);
        if (!st)
            return sd_errf(err, SD_ERR_NOMEM, "out of memory");
        l->be_state = st;
    }
    if (st->n == MAX_SHAPES) { /* forget the oldest shape */
        conv_entry_destroy(&st->e[0]);
        memmove(&st->e[0], &st->e[1], sizeof st->e[0] * (MAX_SHAPES - 1));
        st->n--;
    }
    int rc = SD_OK;
    int OH = nn_conv2d_out_size(l, H), OW = nn_conv2d_out_size(l, W);
    dnnl_memory_desc_t src, wei, bias, dst;
    dnnl_dims_t sd = {B, l->cin, H, W}, wd = {l->cout, l->cin, l->k, l->k}, bd = {l->cout},
                dd = {B, l->cout, OH, OW};
    dnnl_dims_t strides = {l->stride, l->stride}, pl = {l->pad_lo, l->pad_lo}, pr = {l->pad_hi, l->pad_hi};
    dnnl_convolution_desc_t cd;
    dnnl_primitive_desc_t pd = NULL;
    struct conv_entry *e = &st->e[st->n];
    memset(e, 0, sizeof *e);
    TRY(dnnl_memory_desc_init_by_tag(&src, 4, sd, dnnl_f32, dnnl_nhwc), "src desc");
    TRY(dnnl_memory_desc_init_by_tag(&dst, 4, dd, dnnl_f32, dnnl_nhwc), "dst desc");
    TRY(dnnl_memory_desc_init_by_tag(&bias, 1, bd, dnnl_f32, dnnl_x), "bias desc");
    if (st->wei_buf)
        wei = st->wei_md;
    else
        TRY(dnnl_memory_desc_init_by_tag(&wei, 4, wd, dnnl_f32, dnnl_format_tag_any), "weights desc");
    TRY(dnnl_convolution_forward_desc_init(&cd, dnnl_forward_inference, dnnl_convolution_direct, &src,
                                           &wei, l->b ? &bias : NULL, &dst, strides, pl, pr),
        "convolution desc");
    TRY(dnnl_primitive_desc_create(&pd, &cd, NULL, engine, NULL), "convolution primitive desc");
    if (!st->wei_buf) {
        st->wei_md = *dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
        rc = reorder_weights(l, &st->wei_md, &st->wei_buf, err);
        if (rc)
            goto fail;
    }
    TRY(dnnl_primitive_create(&e->prim, pd), "convolution primitive");
    TRY(dnnl_memory_create(&e->src, &src, engine, DNNL_MEMORY_NONE), "memory");
    TRY(dnnl_memory_create(&e->dst, &dst, engine, DNNL_MEMORY_NONE), "memory");
    TRY(dnnl_memory_create(&e->wei, &st->wei_md, engine, st->wei_buf), "memory");
    if (l->b)
        TRY(dnnl_memory_create(&e->bias, &bias, engine, (void *)l->b), "memory");
    e->B = B, e->H = H, e->W = W;
    st->n++;
    dnnl_primitive_desc_destroy(pd);
    return SD_OK;
fail:
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    conv_entry_destroy(e);
    return rc;
}

void onednn_conv2d_run(const struct nn_conv2d *l, const float *in, float *out, int B, int H, int W)
{
    struct conv_entry *e = conv_find(l->be_state, B, H, W);
    SD_ASSERT(e); /* planned in measure mode */
    dnnl_memory_set_data_handle(e->src, (void *)in);
    dnnl_memory_set_data_handle(e->dst, out);
    dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, e->src}, {DNNL_ARG_WEIGHTS, e->wei},
                               {DNNL_ARG_DST, e->dst}, {DNNL_ARG_BIAS, e->bias}};
    dnnl_status_t s = dnnl_primitive_execute(e->prim, stream, l->b ? 4 : 3, args);
    SD_ASSERT(s == dnnl_success);
    s = dnnl_stream_wait(stream);
    SD_ASSERT(s == dnnl_success);
}

void onednn_layer_release(void **be_state)
{
    struct conv_state *st = *be_state;
    if (!st)
        return;
    for (int i = 0; i < st->n; i++)
        conv_entry_destroy(&st->e[i]);
    free(st->wei_buf);
    free(st);
    *be_state = NULL;
}

void onednn_gemm(char tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
               int ldb, float beta, float *C, int ldc)
{
    dnnl_status_t s = dnnl_sgemm('N', tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    SD_ASSERT(s == dnnl_success);
}

void onednn_linear_run(const struct nn_linear *l, const float *in, float *out, int M)
{
    if (l->b) {
        for (int m = 0; m < M; m++)
            memcpy(out + (size_t)m * l->out, l->b, l->out * sizeof(float));
    }
    onednn_gemm('T', M, l->out, l->in, 1.0f, in, l->in, l->w, l->in, l->b ? 1.0f : 0.0f, out, l->out);
}
