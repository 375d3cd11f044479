/* ops_cpu.c - the fast CPU backend: oneDNN for convolutions and matrix
 * products, OpenMP loops for the rest, sharing oneDNN's OpenMP thread pool.
 *
 * Same contract as the reference backend (nn.h, ops_ref.c); the unit tests
 * compare the two op by op.
 */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "tensor/attention.h"
#include "tensor/gemm_f32.h"
#include "tensor/nn.h"
#include "tensor/onednn.h"
#include "tensor/winograd.h"
#include "tensor/vmath.h"

/* Below this many floats of work an op runs on one thread: waking the pool
 * costs more than the op (and tiny models are all tiny ops). */
#define PAR_MIN 32768

/* ---------------------------------------------------------------- norms */

/* GroupNorm on channels-last data, in two passes over the input. First the
 * statistics per channel, which vectorise along the contiguous channels
 * whatever the group width (4 channels per group in the VAE's 128-wide
 * layers): each thread sums x - k_c and its square over blocks of GN_BLOCK
 * pixels in float, then into doubles (k_c, the channel's first value, keeps
 * E[x^2] - E[x]^2 from cancelling). Per group, the channel means and
 * variances combine as var = mean_c(var_c + (mean_c - mean)^2). Then the
 * per-channel scale and shift (and SiLU) are applied into out. */
#define GN_BLOCK 64
/* Floats of a row computed at a time into an L1 buffer before rounding to
 * bf16 (the bf16 producers below). */
#define ROW_PIECE 256

/* Per-channel scale and shift of image x [HW, C] (see above). */
static void groupnorm_affine(float *scale, float *shift, const float *x, const struct nn_norm *n, int HW,
                             int G, float eps)
{
    int C = n->c, cg = C / G, nblk = (HW + GN_BLOCK - 1) / GN_BLOCK;
    double sum[C], sq[C];
    const float *k = x; /* k_c: pixel 0 */
    memset(sum, 0, (size_t)C * sizeof *sum);
    memset(sq, 0, (size_t)C * sizeof *sq);
#pragma omp parallel if ((size_t)HW * C >= PAR_MIN)
    {
        double ls[C], lq[C];
        float fs[C], fq[C];
        memset(ls, 0, sizeof ls);
        memset(lq, 0, sizeof lq);
#pragma omp for schedule(static)
        for (int blk = 0; blk < nblk; blk++) {
            int p1 = (blk + 1) * GN_BLOCK < HW ? (blk + 1) * GN_BLOCK : HW;
            memset(fs, 0, sizeof fs);
            memset(fq, 0, sizeof fq);
            for (int p = blk * GN_BLOCK; p < p1; p++) {
                const float *xp = x + (size_t)p * C;
                for (int c = 0; c < C; c++) {
                    float d = xp[c] - k[c];
                    fs[c] += d;
                    fq[c] += d * d;
                }
            }
            for (int c = 0; c < C; c++)
                ls[c] += fs[c], lq[c] += fq[c];
        }
#pragma omp critical
        for (int c = 0; c < C; c++)
            sum[c] += ls[c], sq[c] += lq[c];
    }
    for (int g = 0; g < G; g++) {
        double mean = 0, var = 0;
        for (int c = g * cg; c < (g + 1) * cg; c++)
            mean += k[c] + sum[c] / HW;
        mean /= cg;
        for (int c = g * cg; c < (g + 1) * cg; c++) {
            double mc = sum[c] / HW, vc = sq[c] / HW - mc * mc, dm = k[c] + mc - mean;
            var += (vc > 0 ? vc : 0) + dm * dm;
        }
        double rstd = 1.0 / sqrt(var / cg + eps);
        for (int c = g * cg; c < (g + 1) * cg; c++) {
            scale[c] = (float)(rstd * n->w[c]);
            shift[c] = (float)(n->b[c] - mean * rstd * n->w[c]);
        }
    }
}

/* out = silu?(groupnorm(in)) in float32, or in bf16 when out16 (rounded
 * from the same float32 values, a row piece at a time). */
static void groupnorm_run(void *out, int out16, const float *in, const struct nn_norm *n, int B, int HW,
                          int G, float eps, int do_silu)
{
    int C = n->c;
    for (int b = 0; b < B; b++) {
        const float *x = in + (size_t)b * HW * C;
        float scale[C], shift[C];
        groupnorm_affine(scale, shift, x, n, HW, G, eps);
#pragma omp parallel for schedule(static) if ((size_t)HW * C >= PAR_MIN)
        for (int p = 0; p < HW; p++) {
            const float *xp = x + (size_t)p * C;
            size_t at = ((size_t)b * HW + p) * C;
            float piece[ROW_PIECE];
            for (int c0 = 0; c0 < C; c0 += ROW_PIECE) {
                int w = C - c0 < ROW_PIECE ? C - c0 : ROW_PIECE;
                float *y = out16 ? piece : (float *)out + at + c0;
                for (int c = 0; c < w; c++)
                    y[c] = xp[c0 + c] * scale[c0 + c] + shift[c0 + c];
                if (do_silu)
                    vsilu(y, w);
                if (out16)
                    to_bf16_row((uint16_t *)out + at + c0, piece, w, w);
            }
        }
    }
}

static void cpu_groupnorm(float *out, const float *in, const struct nn_norm *n, int B, int HW, int G,
                          float eps, int do_silu)
{
    groupnorm_run(out, 0, in, n, B, HW, G, eps, do_silu);
}

/* Sum of x[0..n) in 16 float lanes (each lane a separate chain, so the
 * compiler vectorises it without reassociating), combined in double. */
static double lane_sum(const float *x, int n)
{
    float acc[16] = {0};
    int c = 0;
    for (; c + 16 <= n; c += 16)
        for (int j = 0; j < 16; j++)
            acc[j] += x[c + j];
    double s = 0;
    for (; c < n; c++)
        s += x[c];
    for (int j = 0; j < 16; j++)
        s += acc[j];
    return s;
}

/* Sum of (x[c] - m)^2, the same way. */
static double lane_sq(const float *x, int n, float m)
{
    float acc[16] = {0};
    int c = 0;
    for (; c + 16 <= n; c += 16)
        for (int j = 0; j < 16; j++)
            acc[j] += (x[c + j] - m) * (x[c + j] - m);
    double s = 0;
    for (; c < n; c++)
        s += (double)(x[c] - m) * (x[c] - m);
    for (int j = 0; j < 16; j++)
        s += acc[j];
    return s;
}

/* LayerNorm in two passes per row (mean, then the centred sum of squares),
 * 16 lanes wide: the rows are short (320-1280 floats), and a one-chain
 * double accumulation was bound by the add latency (1.8 ms for 8192 x 320
 * on 2 threads, 3x the time of reading the row). */
static void layernorm_stats(const float *x, int C, float eps, float *mean, float *rstd)
{
    *mean = (float)(lane_sum(x, C) / C);
    *rstd = (float)(1.0 / sqrt(lane_sq(x, C, *mean) / C + eps));
}

/* y[c] for c0 <= c < c1 of a row with these statistics (y indexed from c0). */
static void layernorm_apply(float *y, const float *x, const struct nn_norm *n, int c0, int c1,
                            float mean, float rstd)
{
    for (int c = c0; c < c1; c++)
        y[c - c0] = (x[c] - mean) * rstd * n->w[c] + n->b[c];
}

static void cpu_layernorm(float *out, const float *in, const struct nn_norm *n, int N, float eps)
{
    int C = n->c;
#pragma omp parallel for schedule(static) if ((size_t)N * C >= PAR_MIN)
    for (int r = 0; r < N; r++) {
        const float *x = in + (size_t)r * C;
        float mean, rstd;
        layernorm_stats(x, C, eps, &mean, &rstd);
        layernorm_apply(out + (size_t)r * C, x, n, 0, C, mean, rstd);
    }
}

/* ---------------------------------------------------------- elementwise */

static void cpu_geglu(float *out, const float *in, size_t N, int F)
{
#pragma omp parallel for schedule(static) if (N * F >= PAR_MIN)
    for (size_t r = 0; r < N; r++)
        vgeglu(out + r * F, in + r * 2 * F, in + r * 2 * F + F, F);
}

/* ------------------------------------------- bf16 producer + product */

/* The bf16 backend's fused pairs (nn.h): the row is computed in float32
 * as by the plain op, a piece at a time into an L1 buffer, and stored as
 * the product's bf16 input in ws (the same rounding the product's own
 * conversion applies, so the results are bit for bit those of the two ops);
 * ROW_PIECE floats at a time (defined with the norms). */

/* h[N, C] = bf16(layernorm(in)) */
static void layernorm_to_bf16(uint16_t *h, const float *in, const struct nn_norm *n, int N, float eps)
{
    int C = n->c;
#pragma omp parallel for schedule(static) if ((size_t)N * C >= PAR_MIN)
    for (int r = 0; r < N; r++) {
        const float *x = in + (size_t)r * C;
        float mean, rstd, piece[ROW_PIECE];
        layernorm_stats(x, C, eps, &mean, &rstd);
        for (int c0 = 0; c0 < C; c0 += ROW_PIECE) {
            int c1 = C - c0 < ROW_PIECE ? C : c0 + ROW_PIECE;
            layernorm_apply(piece, x, n, c0, c1, mean, rstd);
            to_bf16_row(h + (size_t)r * C + c0, piece, c1 - c0, c1 - c0);
        }
    }
}

static void cpu_layernorm_linear_bf16(const struct nn_linear *l, float *out, const float *in,
                                      const struct nn_norm *n, int N, float eps, int accumulate,
                                      float *ws)
{
    layernorm_to_bf16((uint16_t *)ws, in, n, N, eps);
    onednn_linear_run_bf16(l, (uint16_t *)ws, out, N, accumulate);
}

static void cpu_geglu_linear_bf16(const struct nn_linear *l, float *out, const float *in, int N, int F,
                                  int accumulate, float *ws)
{
    uint16_t *g = (uint16_t *)ws;
#pragma omp parallel for schedule(static) if ((size_t)N * F >= PAR_MIN)
    for (int r = 0; r < N; r++) {
        const float *x = in + (size_t)r * 2 * F;
        float piece[ROW_PIECE];
        for (int c0 = 0; c0 < F; c0 += ROW_PIECE) {
            int w = F - c0 < ROW_PIECE ? F - c0 : ROW_PIECE;
            vgeglu(piece, x + c0, x + F + c0, w);
            to_bf16_row(g + (size_t)r * F + c0, piece, w, w);
        }
    }
    onednn_linear_run_bf16(l, g, out, N, accumulate);
}

/* bf16 elements of a buffer in a fused op's ws, rounded up so that the
 * next buffer starts on a 64-byte boundary. */
static size_t bf16_part(size_t halves) { return (halves + 31) / 32 * 32; }

/* The feed-forward (nn.h layernorm_ff) with bf16 intermediates: the
 * LayerNorm's rows, l1's output (oneDNN writes it in bf16, which is all
 * the float32 values were used for besides the GEGLU, and 3-9% faster
 * than writing float32 for these shapes: K = 320..1280) and the GEGLU's
 * output. ws holds the three. */

static size_t cpu_ff_ws_bf16(const struct nn_linear *l1, const struct nn_linear *l2, int N)
{
    size_t halves =
        bf16_part((size_t)N * l1->in) + bf16_part((size_t)N * l1->out) + bf16_part((size_t)N * l2->in);
    return halves / 2;
}

static int cpu_ff_plan_bf16(struct nn_linear *l1, struct nn_linear *l2, int N, struct sd_err *err)
{
    if (l1->out != 2 * l2->in)
        return sd_errf(err, SD_ERR_INTERNAL, "feed-forward: %d outputs for a GEGLU of %d", l1->out, l2->in);
    int rc = onednn_linear_plan_b2b(l1, N, err);
    return rc ? rc : onednn_linear_plan(l2, N, 1, err);
}

static void cpu_layernorm_ff_bf16(const struct nn_linear *l1, const struct nn_linear *l2, float *out,
                                  const float *in, const struct nn_norm *n, int N, float eps, float *ws)
{
    int F = l2->in;
    uint16_t *h = (uint16_t *)ws, *p = h + bf16_part((size_t)N * n->c), *g = p + bf16_part((size_t)N * 2 * F);
    layernorm_to_bf16(h, in, n, N, eps);
    onednn_linear_run_b2b(l1, h, p, N);
#pragma omp parallel for schedule(static) if ((size_t)N * F >= PAR_MIN)
    for (int r = 0; r < N; r++)
        vgeglu_bf16(g + (size_t)r * F, p + (size_t)r * 2 * F, p + (size_t)r * 2 * F + F, F);
    onednn_linear_run_bf16(l2, g, out, N, 1);
}

#ifdef __AVX512BF16__
/* A transformer block's attention (nn.h attn_block) with bf16 between the
 * products: the LayerNorm's rows, lq's output (queries, and keys and
 * values in self-attention) and the attention's output, which the lanes
 * kernel reads and writes in bf16 (attention_lanes_forward_ex). Each
 * value is rounded to bf16 once, where the ops one by one round it on the
 * way into the next product: the same results, without a float32 copy
 * written and converted. ws: the three, then the attention's scratch. */
static size_t cpu_attn_block_ws_bf16(const struct nn_linear *lq, const struct nn_linear *lo, int B, int N,
                                     int T, int heads)
{
    size_t BN = (size_t)B * N;
    size_t halves = 2 * bf16_part(BN * lo->out) + bf16_part(BN * lq->out);
    return halves / 2 + attention_lanes_ws(B, T, heads, lo->out / heads) + 16;
}

static int cpu_attn_block_plan_bf16(struct nn_linear *lq, struct nn_linear *lo, int B, int N, int heads,
                                    struct sd_err *err)
{
    if (lo->out / heads > ATTENTION_LANES_MAX_DH)
        return sd_errf(err, SD_ERR_UNSUPPORTED, "bf16 attention: head size %d over %d", lo->out / heads,
                       ATTENTION_LANES_MAX_DH);
    int rc = onednn_linear_plan_b2b(lq, B * N, err);
    return rc ? rc : onednn_linear_plan(lo, B * N, 1, err);
}

static void cpu_attn_block_bf16(const struct nn_linear *lq, const struct nn_linear *lo, float *x,
                                const struct nn_norm *n, const float *k, const float *v, int B, int N,
                                int T, int heads, float eps, float *ws)
{
    int C = lo->out, BN = B * N, ld = k ? C : 3 * C; /* rows of q (and self k, v): [q] or [q|k|v] */
    uint16_t *h = (uint16_t *)ws, *q = h + bf16_part((size_t)BN * C), *o = q + bf16_part((size_t)BN * lq->out);
    float *aws = (float *)(o + bf16_part((size_t)BN * C));
    layernorm_to_bf16(h, x, n, BN, eps);
    onednn_linear_run_b2b(lq, h, q, BN);
    struct attention_io io = {.out = o, .out16 = 1, .q = q, .q16 = 1};
    if (k)
        io.k = k, io.v = v;
    else
        io.k = q + C, io.v = q + 2 * C, io.kv16 = 1;
    attention_lanes_forward_ex(&io, B, N, k ? T : N, heads, C / heads, ld, ld, ld,
                               1.0f / sqrtf((float)(C / heads)), aws);
    onednn_linear_run_bf16(lo, o, x, BN, 1);
}
#endif

/* GroupNorm (+ SiLU) -> convolution (nn.h groupnorm_conv) for the bf16
 * backend: the normalised image is written in bf16, the convolution's
 * input format, and read by it directly (oneDNN: the same bits as
 * converting the float32 op's output; Winograd: its input transform
 * starts from the bf16 values instead of float32 ones). ws: the bf16
 * image, then the convolution's scratch. */
static size_t cpu_gn_conv_ws_bf16(const struct nn_conv2d *l, int B, int H, int W)
{
    size_t halves = bf16_part((size_t)B * H * W * l->cin);
    return halves / 2 + (winograd_owns(l->be_state) ? winograd_ws(l, B, H, W) : 0);
}

static void cpu_groupnorm_conv_bf16(const struct nn_conv2d *l, float *out, const float *in,
                                    const struct nn_norm *n, int B, int H, int W, int G, float eps,
                                    int do_silu, int accumulate, float *ws)
{
    int C = n->c, HW = H * W;
    uint16_t *h = (uint16_t *)ws;
    groupnorm_run(h, 1, in, n, B, HW, G, eps, do_silu);
    float *cws = ws + bf16_part((size_t)B * HW * C) / 2;
    if (winograd_owns(l->be_state))
        winograd_run_in16(l, h, out, B, H, W, accumulate, cws);
    else
        onednn_conv2d_run_in16(l, h, out, B, H, W, accumulate);
}

static void cpu_activation(float *x, size_t n, enum nn_act act)
{
    switch (act) {
    case NN_SILU:
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
        for (size_t i = 0; i < n; i += 4096)
            vsilu(x + i, n - i < 4096 ? n - i : 4096);
        break;
    case NN_GELU:
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
        for (size_t i = 0; i < n; i += 4096)
            vgelu(x + i, n - i < 4096 ? n - i : 4096);
        break;
    case NN_QUICK_GELU:
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
        for (size_t i = 0; i < n; i++)
            x[i] = x[i] / (1.0f + expf(-1.702f * x[i]));
        break;
    }
}

static void cpu_add(float *out, const float *a, const float *b, size_t n)
{
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++)
        out[i] = a[i] + b[i];
}

static void cpu_add_channel_bias(float *x, const float *bias, int B, int HW, int C)
{
#pragma omp parallel for collapse(2) schedule(static) if ((size_t)B * HW * C >= PAR_MIN)
    for (int b = 0; b < B; b++)
        for (int p = 0; p < HW; p++) {
            float *xp = x + ((size_t)b * HW + p) * C;
            const float *bp = bias + (size_t)b * C;
            for (int c = 0; c < C; c++)
                xp[c] += bp[c];
        }
}

static void cpu_upsample_nearest(float *out, const float *in, int B, int H, int W, int C, int OH, int OW)
{
#pragma omp parallel for collapse(2) schedule(static) if ((size_t)B * OH * OW * C >= PAR_MIN)
    for (int b = 0; b < B; b++)
        for (int y = 0; y < OH; y++) {
            int sy = nn_nearest_src(y, H, OH);
            for (int x = 0; x < OW; x++) {
                int sx = nn_nearest_src(x, W, OW);
                memcpy(out + (((size_t)b * OH + y) * OW + x) * C,
                       in + (((size_t)b * H + sy) * W + sx) * C, C * sizeof(float));
            }
        }
}

static void cpu_concat_channels(float *out, const float *a, int Ca, const float *b, int Cb, size_t npix)
{
#pragma omp parallel for schedule(static) if (npix * (Ca + Cb) >= PAR_MIN)
    for (size_t p = 0; p < npix; p++) {
        memcpy(out + p * (Ca + Cb), a + p * Ca, Ca * sizeof(float));
        memcpy(out + p * (Ca + Cb) + Ca, b + p * Cb, Cb * sizeof(float));
    }
}

static void cpu_interleave_phases(float *out, const float *in, int B, int H, int W, int C)
{
#pragma omp parallel for collapse(2) schedule(static) if ((size_t)B * 4 * H * W * C >= PAR_MIN)
    for (int b = 0; b < B; b++)
        for (int y = 0; y < 2 * H; y++) {
            int a = y & 1;
            const float *row = in + ((size_t)b * (H + 1) + y / 2 + a) * (W + 1) * 4 * C;
            float *o = out + ((size_t)b * 2 * H + y) * 2 * W * C;
            for (int x = 0; x < 2 * W; x++) {
                int c = x & 1;
                memcpy(o + (size_t)x * C, row + (size_t)(x / 2 + c) * 4 * C + (size_t)(2 * a + c) * C,
                       C * sizeof(float));
            }
        }
}

/* Convolutions: Winograd where it pays (winograd.h), oneDNN's direct
 * convolution elsewhere; the layer's be_state says which. */
static int conv_prepare(struct nn_conv2d *l, int bf16, struct sd_err *err)
{
    return winograd_eligible(l, bf16) ? winograd_prepare(l, bf16, err) : onednn_conv2d_prepare(l, bf16, err);
}

static int conv_plan(struct nn_conv2d *l, int B, int H, int W, int accumulate, struct sd_err *err)
{
    return winograd_owns(l->be_state) ? winograd_plan(l, B, H, W, accumulate, err)
                                      : onednn_conv2d_plan(l, B, H, W, accumulate, err);
}

static size_t conv_ws(const struct nn_conv2d *l, int B, int H, int W)
{
    return winograd_owns(l->be_state) ? winograd_ws(l, B, H, W) : onednn_conv2d_ws(l, B, H, W);
}

static void conv_run(const struct nn_conv2d *l, const float *in, float *out, int B, int H, int W,
                     int accumulate, float *ws)
{
    if (winograd_owns(l->be_state))
        winograd_run(l, in, out, B, H, W, accumulate, ws);
    else
        onednn_conv2d_run(l, in, out, B, H, W, accumulate, ws);
}

static size_t layer_bytes(const void *be_state)
{
    if (gemm_f32_owns(be_state))
        return ((const struct gemm_f32 *)be_state)->wbytes;
    return winograd_owns(be_state) ? winograd_weight_bytes(be_state) : onednn_weight_bytes(be_state);
}

static void layer_release(void **be_state)
{
    if (gemm_f32_owns(*be_state))
        gemm_f32_free((struct gemm_f32 **)be_state);
    else if (winograd_owns(*be_state))
        winograd_release(be_state);
    else
        onednn_layer_release(be_state);
}

static int linear_pack(struct nn_linear *l, int bf16, struct sd_err *err)
{
    struct gemm_f32 *g;
    int rc = gemm_f32_pack(&g, l->w, l->b, l->out, l->in, bf16, err);
    if (!rc)
        l->be_state = g;
    return rc;
}

static void linear_run(const struct nn_linear *l, const float *in, float *out, int M, int accumulate,
                       float *ws)
{
    if (gemm_f32_owns(l->be_state))
        gemm_f32_run(l->be_state, M, in, (size_t)l->in, out, (size_t)l->out, accumulate);
    else
        onednn_linear_run(l, in, out, M, accumulate, ws);
}

static size_t linear_ws(const struct nn_linear *l, int M)
{
    return gemm_f32_owns(l->be_state) ? 0 : onednn_linear_ws(l, M);
}

static int linear_plan(struct nn_linear *l, int M, int accumulate, struct sd_err *err)
{
    return gemm_f32_owns(l->be_state) ? SD_OK : onednn_linear_plan(l, M, accumulate, err);
}

static int conv_prepare_f32(struct nn_conv2d *l, struct sd_err *err)
{
    return conv_prepare(l, 0, err);
}

static int linear_prepare_f32(struct nn_linear *l, struct sd_err *err)
{
    return gemm_f32_wanted(0) ? linear_pack(l, 0, err) : onednn_linear_prepare(l, 0, err);
}

static int conv_prepare_bf16(struct nn_conv2d *l, struct sd_err *err)
{
    return conv_prepare(l, 1, err);
}

static int linear_prepare_bf16(struct nn_linear *l, struct sd_err *err)
{
    return onednn_linear_prepare(l, 1, err);
}

/* ------------------------------------------------- the wide backend */

/* Wide (widen.h): float32's kernels and layouts, weights held in bf16
 * (mode 2 of the prepare functions) and widened before each run. A layer
 * whose float32 weights would not fit in the last-level cache (over
 * SPLIT_BYTES: the innermost levels' direct convolutions, 59-118 MB in SD
 * 1.5, the 1280 -> 10240 feed-forward) is split by output channels into
 * pieces of at most PIECE_BYTES, each its own layer: a piece's widened
 * copy stays in cache for its product instead of going to memory and
 * back. Each piece writes its columns to ws, copied (or added) into out. */
#define SPLIT_BYTES (24u << 20)
#define PIECE_BYTES (12u << 20)
#define SPLIT_MAGIC 0x53706c74u

struct split {
    uint32_t magic;
    int n, nc;           /* pieces, output channels each */
    struct nn_conv2d *c; /* the pieces of a convolution, or */
    struct nn_linear *l; /* of a linear layer */
};

static int split_owns(const void *be_state)
{
    return be_state && ((const struct split *)be_state)->magic == SPLIT_MAGIC;
}

/* Output channels per piece (a multiple of 16 dividing n, weights within
 * PIECE_BYTES), or 0: no split. DIFFUSIOND_WIDE_SPLIT=0 turns splitting
 * off (for comparisons). */
static int split_cols(int n, size_t col_bytes)
{
    const char *e = getenv("DIFFUSIOND_WIDE_SPLIT");
    if ((size_t)n * col_bytes <= SPLIT_BYTES || (e && !strcmp(e, "0")))
        return 0;
    for (int nc = n / 2 / 16 * 16; nc >= 16; nc -= 16)
        if (n % nc == 0 && (size_t)nc * col_bytes <= PIECE_BYTES)
            return nc;
    return 0;
}

static void split_release(void **be_state)
{
    struct split *sp = *be_state;
    for (int i = 0; i < sp->n; i++) {
        if (sp->c && sp->c[i].be_state)
            onednn_layer_release(&sp->c[i].be_state);
        if (sp->l && sp->l[i].be_state)
            onednn_layer_release(&sp->l[i].be_state);
    }
    free(sp->c);
    free(sp->l);
    free(sp);
    *be_state = NULL;
}

static int split_make(void **state, int n, int nc, int conv, struct split **out, struct sd_err *err)
{
    struct split *sp = calloc(1, sizeof *sp);
    if (!sp)
        return sd_errf(err, SD_ERR_NOMEM, "out of memory");
    sp->magic = SPLIT_MAGIC;
    sp->n = n / nc;
    sp->nc = nc;
    if (conv ? !(sp->c = calloc(sp->n, sizeof *sp->c)) : !(sp->l = calloc(sp->n, sizeof *sp->l))) {
        free(sp);
        return sd_errf(err, SD_ERR_NOMEM, "out of memory");
    }
    *state = sp;
    *out = sp;
    return SD_OK;
}

/* Direct convolutions whose float32 weights are over PACK_CONV_BYTES (SD
 * 1.5's innermost 1280-channel levels: 59-118 MB, the 1x1 projections of
 * 1280 channels, strided downsamples of 640 and more) run on gemm_f32
 * with their weights packed in bf16 pairs: an implicit GEMM over the
 * output pixels (rows: pixels, k: the k x k taps' input channels), the
 * input gathered into ws (im2col) in chunks of at most IM2COL_BYTES; a
 * 1x1 stride-1 convolution reads its input in place. These layers see few
 * pixels per weight (32 output pixels per 1280 x 1280 x 9 weights at 4x4,
 * batch 2) and are bound by reading their weights: widening them into a
 * float32 copy first (read 2 bytes, write 4, read 4 again per weight)
 * cost 0.2-0.4 s of a 1.5 s step; in registers they read 2. Smaller ones
 * keep the widening (their copy stays in cache). */
#define PACK_CONV_BYTES (4u << 20)
#define IM2COL_BYTES (16u << 20)

static int conv_pack_pays(const struct nn_conv2d *l)
{
    return gemm_f32_wanted(1) && !winograd_eligible(l, 2) && l->cout >= 32 &&
           (size_t)l->cin * l->cout * l->k * l->k * sizeof(float) >= PACK_CONV_BYTES;
}

/* Weights [cout, cin, k, k] -> rows [cout][(ky * k + kx) * cin + ci] (the
 * im2col order: each tap's channels side by side), then packed. */
static int conv_pack(struct nn_conv2d *l, struct sd_err *err)
{
    int K = l->cin * l->k * l->k, kk = l->k * l->k;
    float *t = malloc((size_t)l->cout * K * sizeof(float));
    if (!t)
        return sd_errf(err, SD_ERR_NOMEM, "out of memory packing a %d -> %d convolution", l->cin, l->cout);
#pragma omp parallel for schedule(static)
    for (int co = 0; co < l->cout; co++)
        for (int ci = 0; ci < l->cin; ci++)
            for (int tap = 0; tap < kk; tap++)
                t[(size_t)co * K + (size_t)tap * l->cin + ci] = l->w[((size_t)co * l->cin + ci) * kk + tap];
    struct gemm_f32 *g;
    int rc = gemm_f32_pack(&g, t, l->b, l->cout, K, 1, err);
    free(t);
    if (!rc)
        l->be_state = g;
    return rc;
}

static int conv_in_place(const struct nn_conv2d *l)
{
    return l->k == 1 && l->stride == 1 && l->pad_lo == 0 && l->pad_hi == 0;
}

/* Output pixels per im2col chunk (all of them when they fit). */
static int im2col_rows(const struct nn_conv2d *l, int rows)
{
    size_t row = (size_t)l->cin * l->k * l->k * sizeof(float), cap = IM2COL_BYTES / row;
    cap = cap < 6 ? 6 : cap;
    return rows < (int)cap ? rows : (int)cap;
}

static size_t conv_ws_packed(const struct nn_conv2d *l, int B, int H, int W)
{
    if (conv_in_place(l))
        return 0;
    int rows = B * nn_conv2d_out_size(l, H) * nn_conv2d_out_size(l, W);
    return (size_t)im2col_rows(l, rows) * l->cin * l->k * l->k;
}

static void conv_run_packed(const struct nn_conv2d *l, const float *in, float *out, int B, int H, int W,
                            int accumulate, float *ws)
{
    int OH = nn_conv2d_out_size(l, H), OW = nn_conv2d_out_size(l, W), rows = B * OH * OW;
    if (conv_in_place(l)) {
        gemm_f32_run(l->be_state, rows, in, (size_t)l->cin, out, (size_t)l->cout, accumulate);
        return;
    }
    int cin = l->cin, k = l->k, K = cin * k * k, chunk = im2col_rows(l, rows);
    for (int r0 = 0; r0 < rows; r0 += chunk) {
        int nr = rows - r0 < chunk ? rows - r0 : chunk;
#pragma omp parallel for schedule(static) if ((size_t)nr * K >= PAR_MIN)
        for (int r = 0; r < nr; r++) {
            int p = r0 + r, b = p / (OH * OW), oy = p / OW % OH, ox = p % OW;
            float *a = ws + (size_t)r * K;
            for (int ky = 0; ky < k; ky++)
                for (int kx = 0; kx < k; kx++) {
                    int iy = oy * l->stride - l->pad_lo + ky, ix = ox * l->stride - l->pad_lo + kx;
                    float *dst = a + (size_t)(ky * k + kx) * cin;
                    if (iy < 0 || iy >= H || ix < 0 || ix >= W)
                        memset(dst, 0, sizeof(float) * cin);
                    else
                        memcpy(dst, in + (((size_t)b * H + iy) * W + ix) * cin, sizeof(float) * cin);
                }
        }
        gemm_f32_run(l->be_state, nr, ws, (size_t)K, out + (size_t)r0 * l->cout, (size_t)l->cout,
                     accumulate);
    }
}

static int conv_prepare_wide(struct nn_conv2d *l, struct sd_err *err)
{
    if (conv_pack_pays(l))
        return conv_pack(l, err);
    int nc = winograd_eligible(l, 2) ? 0 : split_cols(l->cout, (size_t)l->cin * l->k * l->k * sizeof(float));
    if (!nc)
        return conv_prepare(l, 2, err);
    struct split *sp;
    int rc = split_make(&l->be_state, l->cout, nc, 1, &sp, err);
    for (int i = 0; !rc && i < sp->n; i++) {
        sp->c[i] = *l;
        sp->c[i].cout = nc;
        sp->c[i].w = l->w + (size_t)i * nc * l->cin * l->k * l->k;
        sp->c[i].b = l->b ? l->b + (size_t)i * nc : NULL;
        sp->c[i].be_state = NULL;
        rc = onednn_conv2d_prepare(&sp->c[i], 2, err);
    }
    if (rc && l->be_state)
        split_release(&l->be_state);
    return rc;
}

static int linear_prepare_wide(struct nn_linear *l, struct sd_err *err)
{
    if (gemm_f32_wanted(1))
        return linear_pack(l, 1, err);
    int nc = split_cols(l->out, (size_t)l->in * sizeof(float));
    if (!nc)
        return onednn_linear_prepare(l, 2, err);
    struct split *sp;
    int rc = split_make(&l->be_state, l->out, nc, 0, &sp, err);
    for (int i = 0; !rc && i < sp->n; i++) {
        sp->l[i] = *l;
        sp->l[i].out = nc;
        sp->l[i].w = l->w + (size_t)i * nc * l->in;
        sp->l[i].b = l->b ? l->b + (size_t)i * nc : NULL;
        sp->l[i].be_state = NULL;
        rc = onednn_linear_prepare(&sp->l[i], 2, err);
    }
    if (rc && l->be_state)
        split_release(&l->be_state);
    return rc;
}

/* out[r, c0 + j] = (or +=) piece[r, j] for r < rows, j < nc */
static void split_store(float *out, int ldo, int c0, const float *piece, int nc, int rows, int accumulate)
{
#pragma omp parallel for schedule(static) if ((size_t)rows * nc >= PAR_MIN)
    for (int r = 0; r < rows; r++) {
        float *o = out + (size_t)r * ldo + c0;
        const float *p = piece + (size_t)r * nc;
        if (accumulate)
            for (int j = 0; j < nc; j++)
                o[j] += p[j];
        else
            memcpy(o, p, sizeof(float) * nc);
    }
}

static int conv_plan_wide(struct nn_conv2d *l, int B, int H, int W, int accumulate, struct sd_err *err)
{
    if (gemm_f32_owns(l->be_state))
        return SD_OK;
    if (!split_owns(l->be_state))
        return conv_plan(l, B, H, W, accumulate, err);
    struct split *sp = l->be_state;
    int rc = SD_OK;
    for (int i = 0; !rc && i < sp->n; i++)
        rc = onednn_conv2d_plan(&sp->c[i], B, H, W, 0, err);
    return rc;
}

static size_t conv_ws_wide(const struct nn_conv2d *l, int B, int H, int W)
{
    if (gemm_f32_owns(l->be_state))
        return conv_ws_packed(l, B, H, W);
    if (!split_owns(l->be_state))
        return conv_ws(l, B, H, W);
    const struct split *sp = l->be_state;
    return (size_t)B * nn_conv2d_out_size(l, H) * nn_conv2d_out_size(l, W) * sp->nc;
}

static void conv_run_wide(const struct nn_conv2d *l, const float *in, float *out, int B, int H, int W,
                          int accumulate, float *ws)
{
    if (gemm_f32_owns(l->be_state)) {
        conv_run_packed(l, in, out, B, H, W, accumulate, ws);
        return;
    }
    if (!split_owns(l->be_state)) {
        conv_run(l, in, out, B, H, W, accumulate, ws);
        return;
    }
    const struct split *sp = l->be_state;
    int rows = B * nn_conv2d_out_size(l, H) * nn_conv2d_out_size(l, W);
    for (int i = 0; i < sp->n; i++) {
        onednn_conv2d_run(&sp->c[i], in, ws, B, H, W, 0, NULL);
        split_store(out, l->cout, i * sp->nc, ws, sp->nc, rows, accumulate);
    }
}

static int linear_plan_wide(struct nn_linear *l, int M, int accumulate, struct sd_err *err)
{
    if (!split_owns(l->be_state))
        return linear_plan(l, M, accumulate, err);
    struct split *sp = l->be_state;
    int rc = SD_OK;
    for (int i = 0; !rc && i < sp->n; i++)
        rc = onednn_linear_plan(&sp->l[i], M, 0, err);
    return rc;
}

static size_t linear_ws_wide(const struct nn_linear *l, int M)
{
    return split_owns(l->be_state) ? (size_t)M * ((const struct split *)l->be_state)->nc : 0;
}

static void linear_run_wide(const struct nn_linear *l, const float *in, float *out, int M, int accumulate,
                            float *ws)
{
    if (!split_owns(l->be_state)) {
        linear_run(l, in, out, M, accumulate, NULL);
        return;
    }
    const struct split *sp = l->be_state;
    for (int i = 0; i < sp->n; i++) {
        onednn_linear_run(&sp->l[i], in, ws, M, 0, NULL);
        split_store(out, l->out, i * sp->nc, ws, sp->nc, M, accumulate);
    }
}

static size_t layer_bytes_wide(const void *be_state)
{
    if (!split_owns(be_state))
        return layer_bytes(be_state);
    const struct split *sp = be_state;
    size_t b = 0;
    for (int i = 0; i < sp->n; i++)
        b += onednn_weight_bytes(sp->c ? sp->c[i].be_state : sp->l[i].be_state);
    return b;
}

static void layer_release_wide(void **be_state)
{
    if (split_owns(*be_state))
        split_release(be_state);
    else
        layer_release(be_state);
}

#define CPU_NORMS_AND_ELEMENTWISE                                                                  \
    .groupnorm = cpu_groupnorm, .layernorm = cpu_layernorm, .geglu = cpu_geglu,                     \
    .activation = cpu_activation, .add = cpu_add, .add_channel_bias = cpu_add_channel_bias,        \
    .upsample_nearest = cpu_upsample_nearest, .concat_channels = cpu_concat_channels,            \
    .interleave_phases = cpu_interleave_phases
#define CPU_OPS                                                                                    \
    .conv2d = conv_run, .conv2d_ws = conv_ws, .conv2d_plan = conv_plan,                            \
    .linear = linear_run, .linear_ws = linear_ws, .linear_plan = linear_plan,                       \
    .layer_release = layer_release, .layer_bytes = layer_bytes, CPU_NORMS_AND_ELEMENTWISE

const struct nn_backend nn_backend_cpu = {
    .name = "cpu",
    .conv2d_prepare = conv_prepare_f32,
    .linear_prepare = linear_prepare_f32,
    .attention = attention_forward,
    .attention_ws = attention_ws,
    CPU_OPS,
};

/* --precision bf16 where the CPU has no bf16 dot products: the memory of
 * bf16 weights, float32 products (widen.h). */
const struct nn_backend nn_backend_cpu_wide = {
    .name = "cpu-bf16-wide",
    .conv2d_prepare = conv_prepare_wide,
    .linear_prepare = linear_prepare_wide,
    .attention = attention_forward,
    .attention_ws = attention_ws,
    .conv2d = conv_run_wide, .conv2d_ws = conv_ws_wide, .conv2d_plan = conv_plan_wide,
    .linear = linear_run_wide, .linear_ws = linear_ws_wide, .linear_plan = linear_plan_wide,
    .layer_release = layer_release_wide, .layer_bytes = layer_bytes_wide,
    CPU_NORMS_AND_ELEMENTWISE,
};

const struct nn_backend nn_backend_cpu_bf16 = {
    .name = "cpu-bf16",
    .conv2d_prepare = conv_prepare_bf16,
    .linear_prepare = linear_prepare_bf16,
    .attention = attention_forward_bf16,
    .attention_ws = attention_ws_bf16,
    .layernorm_linear = cpu_layernorm_linear_bf16,
    .geglu_linear = cpu_geglu_linear_bf16,
    .ff_plan = cpu_ff_plan_bf16,
    .ff_ws = cpu_ff_ws_bf16,
    .layernorm_ff = cpu_layernorm_ff_bf16,
    .gn_conv_ws = cpu_gn_conv_ws_bf16,
    .groupnorm_conv = cpu_groupnorm_conv_bf16,
#ifdef __AVX512BF16__
    .attn_block_plan = cpu_attn_block_plan_bf16,
    .attn_block_ws = cpu_attn_block_ws_bf16,
    .attn_block = cpu_attn_block_bf16,
#endif
    CPU_OPS,
};
