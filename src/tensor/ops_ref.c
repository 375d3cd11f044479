/* ops_ref.c - the reference backend: every op as plain loops.
 *
 * Single-threaded and written for reading, not speed. Sums are accumulated
 * in double so this is also the accuracy yardstick the fast backend
 * (ops_cpu.c) is tested against, op by op.
 */
#include <math.h>
#include <string.h>

#include "tensor/nn.h"

static void ref_conv2d(const struct nn_conv2d *l, const float *in, float *out, int B, int H, int W,
                       int accumulate, float *ws)
{
    int OH = nn_conv2d_out_size(l, H), OW = nn_conv2d_out_size(l, W);
    int k = l->k, cin = l->cin, cout = l->cout;
    for (int b = 0; b < B; b++)
        for (int oy = 0; oy < OH; oy++)
            for (int ox = 0; ox < OW; ox++) {
                float *o = out + (((size_t)b * OH + oy) * OW + ox) * cout;
                for (int co = 0; co < cout; co++) {
                    double acc = l->b ? l->b[co] : 0.0;
                    for (int ky = 0; ky < k; ky++) {
                        int iy = oy * l->stride - l->pad_lo + ky;
                        if (iy < 0 || iy >= H)
                            continue;
                        for (int kx = 0; kx < k; kx++) {
                            int ix = ox * l->stride - l->pad_lo + kx;
                            if (ix < 0 || ix >= W)
                                continue;
                            const float *x = in + (((size_t)b * H + iy) * W + ix) * cin;
                            const float *w = l->w + (size_t)co * cin * k * k + ky * k + kx;
                            for (int ci = 0; ci < cin; ci++)
                                acc += (double)x[ci] * w[(size_t)ci * k * k];
                        }
                    }
                    o[co] = accumulate ? o[co] + (float)acc : (float)acc;
                }
            }
}

static void ref_linear(const struct nn_linear *l, const float *in, float *out, int M, int accumulate,
                       float *ws)
{
    for (int m = 0; m < M; m++)
        for (int n = 0; n < l->out; n++) {
            const float *x = in + (size_t)m * l->in, *w = l->w + (size_t)n * l->in;
            double acc = l->b ? l->b[n] : 0.0;
            for (int i = 0; i < l->in; i++)
                acc += (double)x[i] * w[i];
            float *o = &out[(size_t)m * l->out + n];
            *o = accumulate ? *o + (float)acc : (float)acc;
        }
}

static float silu(float x) { return x / (1.0f + expf(-x)); }

static void ref_groupnorm(float *out, const float *in, const struct nn_norm *n, int B, int HW, int G,
                          float eps, int do_silu)
{
    int C = n->c, cg = C / G;
    for (int b = 0; b < B; b++)
        for (int g = 0; g < G; g++) {
            const float *x = in + (size_t)b * HW * C + g * cg;
            double sum = 0, sq = 0;
            for (int p = 0; p < HW; p++)
                for (int c = 0; c < cg; c++)
                    sum += x[(size_t)p * C + c];
            double cnt = (double)HW * cg, mean = sum / cnt;
            for (int p = 0; p < HW; p++)
                for (int c = 0; c < cg; c++) {
                    double d = x[(size_t)p * C + c] - mean;
                    sq += d * d;
                }
            double rstd = 1.0 / sqrt(sq / cnt + eps);
            float *y = out + (size_t)b * HW * C + g * cg;
            for (int p = 0; p < HW; p++)
                for (int c = 0; c < cg; c++) {
                    int ch = g * cg + c;
                    float v = (float)((x[(size_t)p * C + c] - mean) * rstd) * n->w[ch] + n->b[ch];
                    y[(size_t)p * C + c] = do_silu ? silu(v) : v;
                }
        }
}

static void ref_layernorm(float *out, const float *in, const struct nn_norm *n, int N, float eps)
{
    int C = n->c;
    for (int r = 0; r < N; r++) {
        const float *x = in + (size_t)r * C;
        double sum = 0, sq = 0;
        for (int c = 0; c < C; c++)
            sum += x[c];
        double mean = sum / C;
        for (int c = 0; c < C; c++)
            sq += (x[c] - mean) * (x[c] - mean);
        double rstd = 1.0 / sqrt(sq / C + eps);
        for (int c = 0; c < C; c++)
            out[(size_t)r * C + c] = (float)((x[c] - mean) * rstd) * n->w[c] + n->b[c];
    }
}

static void ref_attention(float *out, const float *q, const float *k, const float *v, int B, int Nq,
                          int Nk, int heads, int dh, int ldq, int ldk, int ldv, float scale,
                          int causal, float *ws)
{
    int C = heads * dh;
    double s[Nk > 0 ? Nk : 1];
    for (int b = 0; b < B; b++)
        for (int h = 0; h < heads; h++)
            for (int i = 0; i < Nq; i++) {
                const float *qi = q + ((size_t)b * Nq + i) * ldq + h * dh;
                int nk = causal ? (i + 1 < Nk ? i + 1 : Nk) : Nk;
                double mx = -INFINITY;
                for (int j = 0; j < nk; j++) {
                    const float *kj = k + ((size_t)b * Nk + j) * ldk + h * dh;
                    double acc = 0;
                    for (int d = 0; d < dh; d++)
                        acc += (double)qi[d] * kj[d];
                    s[j] = acc * scale;
                    if (s[j] > mx)
                        mx = s[j];
                }
                double den = 0;
                for (int j = 0; j < nk; j++)
                    den += (s[j] = exp(s[j] - mx));
                float *o = out + ((size_t)b * Nq + i) * C + h * dh;
                for (int d = 0; d < dh; d++) {
                    double acc = 0;
                    for (int j = 0; j < nk; j++)
                        acc += s[j] * v[((size_t)b * Nk + j) * ldv + h * dh + d];
                    o[d] = (float)(acc / den);
                }
            }
}

static float gelu(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }

static void ref_geglu(float *out, const float *in, size_t N, int F)
{
    for (size_t r = 0; r < N; r++)
        for (int f = 0; f < F; f++)
            out[r * F + f] = in[r * 2 * F + f] * gelu(in[r * 2 * F + F + f]);
}

static void ref_activation(float *x, size_t n, enum nn_act act)
{
    for (size_t i = 0; i < n; i++) {
        switch (act) {
        case NN_SILU: x[i] = silu(x[i]); break;
        case NN_GELU: x[i] = gelu(x[i]); break;
        case NN_QUICK_GELU: x[i] = x[i] / (1.0f + expf(-1.702f * x[i])); break;
        }
    }
}

static void ref_add(float *out, const float *a, const float *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = a[i] + b[i];
}

static void ref_add_channel_bias(float *x, const float *bias, int B, int HW, int C)
{
    for (int b = 0; b < B; b++)
        for (int p = 0; p < HW; p++)
            for (int c = 0; c < C; c++)
                x[((size_t)b * HW + p) * C + c] += bias[(size_t)b * C + c];
}

/* PyTorch "nearest": src = min(floor(dst * (float)(in/out)), in - 1). */
int nn_nearest_src(int dst, int in, int out)
{
    float scale = (float)in / (float)out;
    int s = (int)floorf((float)dst * scale);
    return s < in - 1 ? s : in - 1;
}

static void ref_upsample_nearest(float *out, const float *in, int B, int H, int W, int C, int OH, int OW)
{
    for (int b = 0; b < B; b++)
        for (int y = 0; y < OH; y++)
            for (int x = 0; x < OW; x++) {
                int sy = nn_nearest_src(y, H, OH), sx = nn_nearest_src(x, W, OW);
                memcpy(out + (((size_t)b * OH + y) * OW + x) * C,
                       in + (((size_t)b * H + sy) * W + sx) * C, C * sizeof(float));
            }
}

static void ref_concat_channels(float *out, const float *a, int Ca, const float *b, int Cb, size_t npix)
{
    for (size_t p = 0; p < npix; p++) {
        memcpy(out + p * (Ca + Cb), a + p * Ca, Ca * sizeof(float));
        memcpy(out + p * (Ca + Cb) + Ca, b + p * Cb, Cb * sizeof(float));
    }
}

static void ref_interleave_phases(float *out, const float *in, int B, int H, int W, int C)
{
    for (int b = 0; b < B; b++)
        for (int y = 0; y < 2 * H; y++)
            for (int x = 0; x < 2 * W; x++) {
                int a = y & 1, c = x & 1;
                memcpy(out + (((size_t)b * 2 * H + y) * 2 * W + x) * C,
                       in + (((size_t)b * (H + 1) + y / 2 + a) * (W + 1) + x / 2 + c) * 4 * C +
                           (size_t)(2 * a + c) * C,
                       C * sizeof(float));
            }
}

const struct nn_backend nn_backend_ref = {
    .name = "ref",
    .conv2d = ref_conv2d,
    .linear = ref_linear,
    .groupnorm = ref_groupnorm,
    .layernorm = ref_layernorm,
    .attention = ref_attention,
    .geglu = ref_geglu,
    .activation = ref_activation,
    .add = ref_add,
    .add_channel_bias = ref_add_channel_bias,
    .upsample_nearest = ref_upsample_nearest,
    .concat_channels = ref_concat_channels,
    .interleave_phases = ref_interleave_phases,
};
