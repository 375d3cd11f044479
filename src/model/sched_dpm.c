/* sched_dpm.c - DPMSolverMultistepScheduler, algorithm "dpmsolver++"
 * (data prediction), solver order 1 or 2 (midpoint or heun), optionally
 * with Karras sigmas: DPM++ 2M [Karras]. See sd-reference.md 6.6.
 */
#include "model/sched_impl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* float32 log and exp, correctly rounded (but for double rounding). The
 * reference, PyTorch's CPU log/exp, is MKL's and not exactly reproducible;
 * these are at least independent of the libm's float functions. */
static float log_f32(float x)
{
    return (float)log((double)x);
}

static float exp_f32(float x)
{
    return (float)exp((double)x);
}

/* searchsorted(flip(lambda_t), lambda_min_clipped): how many of the
 * (ascending) flipped lambdas are below the clip value. */
static int clipped_index(const struct sched *s)
{
    double lim = s->cfg.lambda_min_clipped;
    int n = s->n_train, lo = 0, hi = n;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        float a = s->alphas_cumprod[n - 1 - mid];
        float lambda = log_f32(sqrtf(a)) - log_f32(sqrtf(1.0f - a));
        if (lambda < (float)lim)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Integer timesteps (descending) for the spacing; *len values. */
static int dpm_int_timesteps(struct sched *s, int64_t *t, long *len, struct sd_err *err)
{
    int n = s->steps, N = s->n_train;
    int last = N - clipped_index(s);
    double *v = malloc((size_t)(n + 2) * sizeof *v);
    if (!v)
        return sd_errf(err, SD_ERR_NOMEM, "scheduler: out of memory");
    *len = n;
    if (s->spacing == SPACING_LINSPACE) { /* round(linspace(0, last-1, n+1))[::-1][:-1] */
        sched_np_linspace(v, 0, last - 1, n + 1);
        for (int i = 0; i < n; i++)
            t[i] = (int64_t)sched_np_rint(v[n - i]);
    } else if (s->spacing == SPACING_LEADING) {
        int ratio = last / (n + 1);
        for (int i = 0; i < n; i++)
            t[i] = (int64_t)(n - i) * ratio + s->cfg.steps_offset;
    } else { /* round(arange(last, 0, -N/n)) - 1 */
        double step = -((double)N / n);
        *len = sched_np_arange(NULL, last, 0, step);
        if (*len <= 0 || *len > n + 1) {
            free(v);
            return sd_errf(err, SD_ERR_UNSUPPORTED, "%s: bad trailing timesteps",
                           s->cfg.class_name);
        }
        sched_np_arange(v, last, 0, step);
        for (long i = 0; i < *len; i++)
            t[i] = (int64_t)sched_np_rint(v[i]) - 1;
    }
    free(v);
    return SD_OK;
}

/* Karras: n sigmas between the training extremes (or the config's
 * sigma_min/sigma_max), timesteps from sigma_to_t, rounded. */
static int dpm_karras(struct sched *s, double *sig, int64_t *t, struct sd_err *err)
{
    int n = s->steps, N = s->n_train;
    const struct sched_config *c = &s->cfg;
    float *logs = malloc((size_t)N * sizeof *logs);
    if (!logs)
        return sd_errf(err, SD_ERR_NOMEM, "scheduler: out of memory");
    for (int k = 0; k < N; k++)
        logs[k] = sched_np_logf(s->train_sigmas[k]);
    double smin = c->has_sigma_min ? c->sigma_min : s->train_sigmas[0];
    double smax = c->has_sigma_max ? c->sigma_max : s->train_sigmas[N - 1];
    sched_karras(sig, smin, smax, n);
    int cosine = !strcmp(c->beta_schedule, "squaredcos_cap_v2");
    for (int i = 0; i < n; i++) {
        double ti = sched_sigma_to_t(sig[i], logs, N);
        t[i] = (int64_t)(cosine ? ti : sched_np_rint(ti)); /* .to(int64) truncates */
    }
    free(logs);
    return SD_OK;
}

static int dpm_set_timesteps(struct sched *s, struct sd_err *err)
{
    int n = s->steps, N = s->n_train;
    long len = 0;
    int64_t *t = malloc((size_t)(n + 1) * sizeof *t);
    double *sig = malloc((size_t)(n + 1) * sizeof *sig);
    double *train = malloc((size_t)N * sizeof *train);
    int rc = !t || !sig || !train ? sd_errf(err, SD_ERR_NOMEM, "scheduler: out of memory")
                                  : dpm_int_timesteps(s, t, &len, err);
    if (!rc && s->cfg.use_karras_sigmas) {
        len = n;
        rc = dpm_karras(s, sig, t, err);
    } else if (!rc) {
        for (int k = 0; k < N; k++)
            train[k] = s->train_sigmas[k];
        for (long i = 0; i < len; i++)
            sig[i] = sched_np_interp((double)t[i], train, N);
    }
    free(train);
    if (!rc) {
        s->len = (int)len;
        s->nsigmas = s->len + 1;
        s->sigmas = malloc((size_t)s->nsigmas * sizeof *s->sigmas);
        s->ts = malloc((size_t)len * sizeof *s->ts);
        if (!s->sigmas || !s->ts)
            rc = sd_errf(err, SD_ERR_NOMEM, "scheduler: out of memory");
    }
    if (!rc) {
        for (long i = 0; i < len; i++) {
            s->sigmas[i] = (float)sig[i];
            s->ts[i] = (float)t[i];
        }
        int use_min = !strcmp(s->cfg.final_sigmas_type, "sigma_min");
        s->sigmas[len] = use_min ? s->train_sigmas[0] : 0.0f;
        s->tint = t;
        t = NULL;
    }
    free(t);
    free(sig);
    return rc;
}

/* _sigma_to_alpha_sigma_t and the log-SNR lambda of one sigma. */
struct dpm_point {
    float alpha, sigma, lambda;
};

static struct dpm_point dpm_point(float sigma)
{
    struct dpm_point p;
    p.alpha = 1.0f / sqrtf(sigma * sigma + 1.0f);
    p.sigma = sigma * p.alpha;
    p.lambda = log_f32(p.alpha) - log_f32(p.sigma);
    return p;
}

static void dpm_step(struct sched *s, int i, const float *mo, float *x, struct torch_gen *gen,
                     float eta)
{
    const struct sched_config *c = &s->cfg;
    size_t n = s->numel;
    int si = s->begin + i, order = c->solver_order;
    int last = si == s->len - 1;
    int lower_final = last && (c->euler_at_final || (c->lower_order_final && s->len < 15) ||
                               !strcmp(c->final_sigmas_type, "zero"));

    /* convert_model_output: the data prediction x0, appended to the history */
    struct dpm_point p = dpm_point(s->sigmas[si]);
    if (order == 2) {
        float *oldest = s->hist[0];
        s->hist[0] = s->hist[1];
        s->hist[1] = oldest;
    }
    float *x0 = s->hist[order - 1];
    for (size_t k = 0; k < n; k++) {
        if (s->pred == PRED_EPSILON)
            x0[k] = (x[k] - p.sigma * mo[k]) / p.alpha;
        else if (s->pred == PRED_V)
            x0[k] = p.alpha * x[k] - p.sigma * mo[k];
        else
            x0[k] = mo[k];
    }

    struct dpm_point pt = dpm_point(s->sigmas[si + 1]), ps = dpm_point(s->sigmas[si]);
    float h = pt.lambda - ps.lambda;
    float ratio = pt.sigma / ps.sigma;
    float em1 = exp_f32(-h) - 1.0f;
    float a = pt.alpha * em1;
    if (order == 1 || s->lower_order_nums < 1 || lower_final) {
        for (size_t k = 0; k < n; k++) /* first order: DDIM in lambda */
            x[k] = ratio * x[k] - a * x0[k];
    } else {
        struct dpm_point p1 = dpm_point(s->sigmas[si - 1]);
        float h0 = ps.lambda - p1.lambda;
        float r0 = h0 / h;
        float inv_r0 = 1.0f / r0;
        const float *m0 = s->hist[1], *m1 = s->hist[0];
        int heun = !strcmp(c->solver_type, "heun");
        float c2 = heun ? pt.alpha * (em1 / h + 1.0f) : 0.5f * a;
        for (size_t k = 0; k < n; k++) {
            float d1 = inv_r0 * (m0[k] - m1[k]);
            float v = ratio * x[k] - a * m0[k];
            x[k] = heun ? v + c2 * d1 : v - c2 * d1;
        }
    }
    if (s->lower_order_nums < order)
        s->lower_order_nums++;
}

const struct sched_family sched_dpm_family = {
    .set_timesteps = dpm_set_timesteps,
    .step = dpm_step,
    .history = 2,
};
