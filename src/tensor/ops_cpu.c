/* ops_cpu.c - the fast CPU backend: oneDNN for convolutions and matrix
 * products, OpenMP loops for the rest, sharing oneDNN's OpenMP thread pool.
 *
 * Same contract as the reference backend (nn.h, ops_ref.c); the unit tests
 * compare the two op by op.
 */
#include <math.h>
#include <omp.h>
#include <string.h>

#include "tensor/nn.h"
#include "tensor/onednn.h"
#include "tensor/vmath.h"

/* Below this many floats of work an op runs on one thread: waking the pool
 * costs more than the op (and tiny models are all tiny ops). */
#define PAR_MIN 32768

/* ---------------------------------------------------------------- norms */

/* GroupNorm on channels-last data: statistics of each group are gathered
 * over pixel chunks in parallel (double sums), then one parallel pass
 * applies a per-channel scale and shift. */
static void cpu_groupnorm(float *out, const float *in, const struct nn_norm *n, int B, int HW, int G,
                          float eps, int do_silu)
{
    int C = n->c, cg = C / G;
    double cnt = (double)HW * cg;
    for (int b = 0; b < B; b++) {
        const float *x = in + (size_t)b * HW * C;
        float *y = out + (size_t)b * HW * C;
        double sum[G], sq[G];
        float scale[C], shift[C];
        memset(sum, 0, sizeof sum);
        memset(sq, 0, sizeof sq);
#pragma omp parallel if ((size_t)HW * C >= PAR_MIN)
        {
            double ls[G];
            memset(ls, 0, sizeof ls);
#pragma omp for schedule(static)
            for (int p = 0; p < HW; p++)
                for (int g = 0; g < G; g++) {
                    const float *xp = x + (size_t)p * C + g * cg;
                    float s = 0;
                    for (int c = 0; c < cg; c++)
                        s += xp[c];
                    ls[g] += s;
                }
#pragma omp critical
            for (int g = 0; g < G; g++)
                sum[g] += ls[g];
#pragma omp barrier
            /* Second pass for the variance: exact enough and no cancellation. */
            memset(ls, 0, sizeof ls);
#pragma omp for schedule(static)
            for (int p = 0; p < HW; p++)
                for (int g = 0; g < G; g++) {
                    const float *xp = x + (size_t)p * C + g * cg;
                    float m = (float)(sum[g] / cnt), s = 0;
                    for (int c = 0; c < cg; c++)
                        s += (xp[c] - m) * (xp[c] - m);
                    ls[g] += s;
                }
#pragma omp critical
            for (int g = 0; g < G; g++)
                sq[g] += ls[g];
#pragma omp barrier
#pragma omp single
            for (int c = 0; c < C; c++) {
                int g = c / cg;
                double mean = sum[g] / cnt, rstd = 1.0 / sqrt(sq[g] / cnt + eps);
                scale[c] = (float)(rstd * n->w[c]);
                shift[c] = (float)(n->b[c] - mean * rstd * n->w[c]);
            }
#pragma omp for schedule(static)
            for (int p = 0; p < HW; p++) {
                const float *xp = x + (size_t)p * C;
                float *yp = y + (size_t)p * C;
                for (int c = 0; c < C; c++)
                    yp[c] = xp[c] * scale[c] + shift[c];
                if (do_silu)
                    vsilu(yp, C);
            }
        }
    }
}

static void cpu_layernorm(float *out, const float *in, const struct nn_norm *n, int N, float eps)
{
    int C = n->c;
#pragma omp parallel for schedule(static) if ((size_t)N * C >= PAR_MIN)
    for (int r = 0; r < N; r++) {
        const float *x = in + (size_t)r * C;
        float *y = out + (size_t)r * C;
        double sum = 0, sq = 0;
        for (int c = 0; c < C; c++)
            sum += x[c];
        float mean = (float)(sum / C);
        for (int c = 0; c < C; c++)
            sq += (x[c] - mean) * (x[c] - mean);
        float rstd = (float)(1.0 / sqrt(sq / C + eps));
        for (int c = 0; c < C; c++)
            y[c] = (x[c] - mean) * rstd * n->w[c] + n->b[c];
    }
}

/* ------------------------------------------------------------ attention */

/* Queries are processed in blocks of ATT_QB rows: for each (batch, head,
 * block) one thread computes S = q k^T, a row softmax and S v. Only one
 * ATT_QB x Nk score tile per thread exists at a time, never the full
 * Nq x Nk matrix of every head. */
#define ATT_QB 64

static size_t cpu_attention_ws(int Nq, int Nk)
{
    (void)Nq;
    return (size_t)omp_get_max_threads() * ATT_QB * Nk + 16;
}

static void cpu_attention(float *out, const float *q, const float *k, const float *v, int B, int Nq,
                          int Nk, int heads, int dh, int ldq, int ldk, int ldv, float scale,
                          int causal, float *ws)
{
    int C = heads * dh, nqb = (Nq + ATT_QB - 1) / ATT_QB;
    long ntask = (long)B * heads * nqb;
#pragma omp parallel if ((size_t)B * Nq * Nk * heads >= PAR_MIN)
    {
        float *S = ws + (size_t)omp_get_thread_num() * ATT_QB * Nk;
#pragma omp for schedule(dynamic, 1)
        for (long t = 0; t < ntask; t++) {
            int qb = t % nqb, h = (t / nqb) % heads, b = t / ((long)nqb * heads);
            int i0 = qb * ATT_QB, rows = Nq - i0 < ATT_QB ? Nq - i0 : ATT_QB;
            const float *qp = q + ((size_t)b * Nq + i0) * ldq + h * dh;
            const float *kp = k + (size_t)b * Nk * ldk + h * dh;
            const float *vp = v + (size_t)b * Nk * ldv + h * dh;
            float *op = out + ((size_t)b * Nq + i0) * C + h * dh;
            onednn_gemm('T', rows, Nk, dh, scale, qp, ldq, kp, ldk, 0.0f, S, Nk);
            float rsum[ATT_QB];
            for (int r = 0; r < rows; r++) {
                float *s = S + (size_t)r * Nk;
                int nk = causal ? (i0 + r + 1 < Nk ? i0 + r + 1 : Nk) : Nk;
                float den = vexp_sub_sum(s, nk, vmax(s, nk));
                for (int j = nk; j < Nk; j++)
                    s[j] = 0;
                rsum[r] = 1.0f / den;
            }
            onednn_gemm('N', rows, dh, Nk, 1.0f, S, Nk, vp, ldv, 0.0f, op, C);
            for (int r = 0; r < rows; r++)
                for (int d = 0; d < dh; d++)
                    op[(size_t)r * C + d] *= rsum[r];
        }
    }
}

/* ---------------------------------------------------------- elementwise */

static void cpu_geglu(float *out, const float *in, size_t N, int F)
{
#pragma omp parallel for schedule(static) if (N * F >= PAR_MIN)
    for (size_t r = 0; r < N; r++)
        vgeglu(out + r * F, in + r * 2 * F, in + r * 2 * F + F, F);
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

static int conv_prepare_f32(struct nn_conv2d *l, struct sd_err *err)
{
    return onednn_conv2d_prepare(l, 0, err);
}

static int linear_prepare_f32(struct nn_linear *l, struct sd_err *err)
{
    return onednn_linear_prepare(l, 0, err);
}

static int conv_prepare_bf16(struct nn_conv2d *l, struct sd_err *err)
{
    return onednn_conv2d_prepare(l, 1, err);
}

static int linear_prepare_bf16(struct nn_linear *l, struct sd_err *err)
{
    return onednn_linear_prepare(l, 1, err);
}

#define CPU_OPS                                                                                    \
    .conv2d = onednn_conv2d_run, .conv2d_ws = onednn_conv2d_ws, .conv2d_plan = onednn_conv2d_plan,   \
    .linear = onednn_linear_run, .linear_ws = onednn_linear_ws, .linear_plan = onednn_linear_plan,   \
    .layer_release = onednn_layer_release, .groupnorm = cpu_groupnorm, .layernorm = cpu_layernorm,  \
    .attention = cpu_attention, .attention_ws = cpu_attention_ws, .geglu = cpu_geglu,              \
    .activation = cpu_activation, .add = cpu_add, .add_channel_bias = cpu_add_channel_bias,        \
    .upsample_nearest = cpu_upsample_nearest, .concat_channels = cpu_concat_channels

const struct nn_backend nn_backend_cpu = {
    .name = "cpu",
    .conv2d_prepare = conv_prepare_f32,
    .linear_prepare = linear_prepare_f32,
    CPU_OPS,
};

const struct nn_backend nn_backend_cpu_bf16 = {
    .name = "cpu-bf16",
    .conv2d_prepare = conv_prepare_bf16,
    .linear_prepare = linear_prepare_bf16,
    CPU_OPS,
};
