/* sched_math.c - the PyTorch and numpy arithmetic the schedulers build their
 * tables with (see sched_impl.h). Each function reproduces one library
 * routine's evaluation order, so the tables come out as diffusers makes them.
 * Compiled with -ffp-contract=off: every fused multiply-add is explicit.
 */
#include "model/sched_impl.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define PI_F64 3.14159265358979323846 /* math.pi */

/* ---- torch ------------------------------------------------------------- */

/* PyTorch's CPU linspace: step in float32, the first half counted up from
 * start and the second half down from end, each a single fused rounding. */
void sched_torch_linspace(float *out, float start, float end, int n)
{
    if (n == 1) {
        out[0] = start;
        return;
    }
    float step = (end - start) / (float)(n - 1);
    int half = n / 2;
    for (int i = 0; i < n; i++) {
        if (i < half)
            out[i] = fmaf(step, (float)i, start);
        else
            out[i] = fmaf(-step, (float)(n - 1 - i), end);
    }
}

/* diffusers' betas_for_alpha_bar("cosine"): Python floats, then float32. */
static void betas_squaredcos(float *betas, int n)
{
    for (int i = 0; i < n; i++) {
        double t1 = (double)i / n, t2 = (double)(i + 1) / n;
        double a1 = cos((t1 + 0.008) / 1.008 * PI_F64 / 2);
        double a2 = cos((t2 + 0.008) / 1.008 * PI_F64 / 2);
        double b = 1 - (a2 * a2) / (a1 * a1);
        betas[i] = (float)(b < 0.999 ? b : 0.999);
    }
}

/* rescale_zero_terminal_snr(betas), in place (float32 tensor ops). */
static void betas_zero_snr(float *betas, int n)
{
    double acc = 1.0;
    for (int i = 0; i < n; i++) { /* betas <- sqrt(alphas_cumprod) */
        acc *= (double)(1.0f - betas[i]);
        betas[i] = sqrtf((float)acc);
    }
    float s0 = betas[0], st = betas[n - 1];
    float q = s0 / (s0 - st);
    for (int i = 0; i < n; i++) { /* shift and scale, then square */
        float v = (betas[i] - st) * q;
        betas[i] = v * v;
    }
    /* alphas = [ab[0], ab[1:] / ab[:-1]]; betas = 1 - alphas (backwards so
     * that ab[i - 1] is still there) */
    for (int i = n - 1; i > 0; i--)
        betas[i] = 1.0f - betas[i] / betas[i - 1];
    betas[0] = 1.0f - betas[0];
}

int sched_alphas_cumprod(float *ac, const struct sched_config *c, int rescale,
                         int zero_snr_fixup, struct sd_err *err)
{
    int n = c->num_train_timesteps;
    const char *bs = c->beta_schedule;
    if (!strcmp(bs, "linear")) {
        sched_torch_linspace(ac, (float)c->beta_start, (float)c->beta_end, n);
    } else if (!strcmp(bs, "scaled_linear")) {
        if (c->beta_start < 0 || c->beta_end < 0)
            return sd_errf(err, SD_ERR_UNSUPPORTED, "scaled_linear betas need beta_start, "
                           "beta_end >= 0");
        sched_torch_linspace(ac, (float)sqrt(c->beta_start), (float)sqrt(c->beta_end), n);
        for (int i = 0; i < n; i++)
            ac[i] = ac[i] * ac[i];
    } else if (!strcmp(bs, "squaredcos_cap_v2")) {
        betas_squaredcos(ac, n);
    } else {
        return sd_errf(err, SD_ERR_UNSUPPORTED, "beta_schedule \"%s\" is not supported", bs);
    }
    if (rescale)
        betas_zero_snr(ac, n);
    /* alphas = 1 - betas; torch.cumprod keeps the running product in double */
    double acc = 1.0;
    for (int i = 0; i < n; i++) {
        acc *= (double)(1.0f - ac[i]);
        ac[i] = (float)acc;
    }
    if (rescale && zero_snr_fixup)
        ac[n - 1] = 0x1p-24f;
    return SD_OK;
}

int sched_check_t(const struct sched *s, int64_t t, struct sd_err *err)
{
    if (t < -s->n_train || t >= s->n_train)
        return sd_errf(err, SD_ERR_UNSUPPORTED, "timestep %lld is outside the %d training "
                       "steps (steps_offset or timestep_spacing)", (long long)t, s->n_train);
    return SD_OK;
}

float sched_ac(const struct sched *s, int64_t t)
{
    if (t < 0)
        t += s->n_train;
    SD_ASSERT(t >= 0 && t < s->n_train);
    return s->alphas_cumprod[t];
}

void sched_randn(struct sched *s, struct torch_gen *gen, float *noise)
{
    if (s->n_gens > 1) { /* diffusers' randn_tensor with a list of generators */
        size_t part = s->numel / (size_t)s->n_gens;
        for (int k = 0; k < s->n_gens; k++)
            tgen_randn(s->gens[k], noise + (size_t)k * part, part);
        return;
    }
    tgen_randn(s->n_gens ? s->gens[0] : gen, noise, s->numel);
}

int sched_begin_index(const struct sched *s)
{
    int matches = 0;
    for (int i = 0; i < s->len; i++) {
        int eq = s->tint ? s->tint[i] == s->tint[0] : s->ts[i] == s->ts[0];
        if (eq && ++matches == 2)
            return i;
    }
    return 0;
}

/* ---- numpy ------------------------------------------------------------- */

double sched_np_rint(double x)
{
    return nearbyint(x); /* default rounding mode: half to even */
}

void sched_np_linspace(double *out, double start, double stop, int n)
{
    if (n <= 0)
        return;
    double delta = stop - start;
    int div = n - 1;
    if (div == 0) {
        out[0] = 0.0 * delta + start;
        return;
    }
    double step = delta / div;
    for (int i = 0; i < n; i++)
        out[i] = (step == 0 ? (double)i / div * delta : (double)i * step) + start;
    out[n - 1] = stop;
}

long sched_np_arange(double *out, double start, double stop, double step)
{
    double len_f = ceil((stop - start) / step);
    if (!(len_f > 0))
        return 0;
    if (len_f > 1e7) /* callers pass small ranges; refuse silly lengths */
        return -1;
    long len = (long)len_f;
    if (!out)
        return len;
    /* numpy stores start and start + step, then fills start + i * delta
     * with delta recomputed from those two stored values */
    out[0] = start;
    if (len > 1)
        out[1] = start + step;
    double delta = len > 1 ? out[1] - out[0] : 0.0;
    for (long i = 2; i < len; i++)
        out[i] = start + (double)i * delta;
    return len;
}

double sched_np_interp(double x, const double *fp, int n)
{
    if (isnan(x))
        return x;
    if (x < 0)
        return fp[0];
    if (x >= n - 1)
        return fp[n - 1];
    int j = (int)x; /* 0 <= x < n - 1: xp[j] <= x < xp[j + 1] */
    if ((double)j == x)
        return fp[j];
    double slope = (fp[j + 1] - fp[j]) / ((double)(j + 1) - (double)j);
    return slope * (x - (double)j) + fp[j];
}

/* numpy's float32 log (AVX2/AVX512F kernel in loops_exponent_log): split off
 * the exponent, a rational minimax approximation of log(1 + x) on the
 * mantissa, both polynomials by Horner with FMA. */
float sched_np_logf(float x)
{
    static const float p[] = {
        2.589979117907922693523e-02f, 3.808837741388407920751e-01f,
        1.480000633576506585156e+00f, 2.112677543073053063722e+00f,
        9.999999999999998702752e-01f, 0.0f,
    };
    static const float q[] = {
        5.875095403124574342950e-03f, 1.546476374983906719538e-01f,
        9.864942958519418960339e-01f, 2.453006071784736363091e+00f,
        2.612677543073109236779e+00f, 1.0f,
    };
    if (isnan(x))
        return x;
    if (x < 0)
        return -NAN;
    if (x == 0)
        return -INFINITY;
    if (isinf(x))
        return INFINITY;
    float ebias = 0.0f;
    if (x < FLT_MIN) { /* denormal: scale by 2^100 first */
        x *= 0x1p100f;
        ebias = -100.0f;
    }
    uint32_t b;
    memcpy(&b, &x, sizeof b);
    float e = (float)((int)(b >> 23) - 126) + ebias;
    b = (b & 0x7fffffu) | (126u << 23); /* mantissa in [0.5, 1) */
    float m;
    memcpy(&m, &b, sizeof m);
    if (m <= 0.707106781186547524400844362104849039f) {
        m = m + m;
        e = e - 1.0f;
    }
    m = m - 1.0f;
    float num = fmaf(p[0], m, p[1]), den = fmaf(q[0], m, q[1]);
    for (int i = 2; i < 6; i++) {
        num = fmaf(num, m, p[i]);
        den = fmaf(den, m, q[i]);
    }
    return fmaf(e, 0.693147180559945309417232121458176568f, num / den);
}

/* ---- integer timesteps (PNDM, DDIM) ------------------------------------- */

int sched_int_timesteps(struct sched *s, int64_t **out, long *out_len, struct sd_err *err)
{
    int n = s->steps, N = s->n_train;
    double step = -((double)N / n); /* trailing: arange(N, 0, -N/n) */
    long len = s->spacing == SPACING_TRAILING ? sched_np_arange(NULL, N, 0, step) : n;
    if (len <= 0)
        return sd_errf(err, SD_ERR_UNSUPPORTED, "%s: no trailing timesteps",
                       s->cfg.class_name);
    int64_t *t = malloc((size_t)len * sizeof *t);
    double *v = malloc((size_t)len * sizeof *v);
    if (!t || !v) {
        free(t);
        free(v);
        return sd_errf(err, SD_ERR_NOMEM, "scheduler: out of memory");
    }
    if (s->spacing == SPACING_LINSPACE) {
        sched_np_linspace(v, 0, N - 1, n);
        for (long i = 0; i < len; i++)
            t[i] = (int64_t)sched_np_rint(v[i]);
    } else if (s->spacing == SPACING_LEADING) {
        for (long i = 0; i < len; i++)
            t[i] = (int64_t)i * (N / n) + s->cfg.steps_offset;
    } else { /* round(arange(N, 0, -N/n))[::-1] - 1 */
        sched_np_arange(v, N, 0, step);
        for (long i = 0; i < len; i++)
            t[len - 1 - i] = (int64_t)sched_np_rint(v[i]) - 1;
    }
    free(v);
    *out = t;
    *out_len = len;
    return SD_OK;
}

int sched_set_int_timesteps(struct sched *s, int64_t *tint, long len, struct sd_err *err)
{
    s->tint = tint;
    s->len = (int)len;
    s->ts = malloc((size_t)len * sizeof *s->ts);
    if (!s->ts)
        return sd_errf(err, SD_ERR_NOMEM, "scheduler: out of memory");
    for (long i = 0; i < len; i++)
        s->ts[i] = (float)tint[i];
    return SD_OK;
}

float sched_clampf(float v, float lo, float hi)
{
    v = v < lo ? lo : v; /* torch.clamp: min(max(v, lo), hi), NaN stays */
    return v > hi ? hi : v;
}

/* ---- sigma <-> timestep (diffusers' numpy code) ------------------------- */

double sched_sigma_to_t(double sigma, const float *log_sigmas, int n)
{
    double ls = log(sigma > 1e-10 ? sigma : 1e-10);
    /* low = last index whose log sigma is <= ls (argmax of the cumulative
     * count), 0 if none, at most n - 2 */
    int low = 0;
    for (int k = 0; k < n; k++)
        if (ls - (double)log_sigmas[k] >= 0)
            low = k;
    if (low > n - 2)
        low = n - 2;
    double lo = log_sigmas[low], hi = log_sigmas[low + 1];
    double w = (lo - ls) / (lo - hi);
    if (w < 0)
        w = 0;
    else if (w > 1)
        w = 1;
    return (1 - w) * low + w * (low + 1);
}

void sched_karras(double *out, double sigma_min, double sigma_max, int n)
{
    const double rho = 7.0;
    double min_inv = pow(sigma_min, 1 / rho), max_inv = pow(sigma_max, 1 / rho);
    sched_np_linspace(out, 0.0, 1.0, n); /* the ramp */
    for (int i = 0; i < n; i++)
        out[i] = pow(max_inv + out[i] * (min_inv - max_inv), rho);
}
