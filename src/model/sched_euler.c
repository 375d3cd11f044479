/* sched_euler.c - EulerDiscreteScheduler (optionally Karras sigmas) and
 * EulerAncestralDiscreteScheduler: float timesteps, sigmas interpolated from
 * the training sigmas, input scaled by 1 / sqrt(sigma^2 + 1). See
 * sd-reference.md 6.4, 6.5.
 */
#include "model/sched_impl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Float32 timesteps (descending) for the spacing, as np arrays. */
static int float_timesteps(struct sched *s, float **out, long *out_len, struct sd_err *err)
{
    int n = s->steps, N = s->n_train;
    double step = -((double)N / n);
    long len = s->spacing == SPACING_TRAILING ? sched_np_arange(NULL, N, 0, step) : n;
    if (len <= 0)
        return sd_errf(err, SD_ERR_UNSUPPORTED, "%s: no trailing timesteps",
                       s->cfg.class_name);
    float *t = malloc((size_t)len * sizeof *t);
    double *v = malloc((size_t)len * sizeof *v);
    if (!t || !v) {
        free(t);
        free(v);
        return sd_errf(err, SD_ERR_NOMEM, "scheduler: out of memory");
    }
    if (s->spacing == SPACING_LINSPACE) { /* np.linspace(0, N-1, n, dtype=float32)[::-1] */
        sched_np_linspace(v, 0, N - 1, n);
        for (long i = 0; i < len; i++)
            t[i] = (float)v[len - 1 - i];
    } else if (s->spacing == SPACING_LEADING) {
        for (long i = 0; i < len; i++) /* float32 array += steps_offset */
            t[i] = (float)((int64_t)(len - 1 - i) * (N / n)) + (float)s->cfg.steps_offset;
    } else { /* round(arange(N, 0, -N/n)).astype(float32) - 1 */
        sched_np_arange(v, N, 0, step);
        for (long i = 0; i < len; i++)
            t[i] = (float)sched_np_rint(v[i]) - 1.0f;
    }
    free(v);
    *out = t;
    *out_len = len;
    return SD_OK;
}

/* Karras sigmas and their timesteps replace the interpolated ones (n of
 * them, n = num_inference_steps). sig (float64) must hold n values. */
static int euler_karras(struct sched *s, double *sig, long len, struct sd_err *err)
{
    int n = s->steps, N = s->n_train;
    const struct sched_config *c = &s->cfg;
    double smin = c->has_sigma_min ? c->sigma_min : sig[len - 1];
    double smax = c->has_sigma_max ? c->sigma_max : sig[0];
    float *logs = malloc((size_t)N * sizeof *logs);
    float *t = realloc(s->ts, (size_t)n * sizeof *t);
    if (!logs || !t) {
        free(logs);
        if (t)
            s->ts = t;
        return sd_errf(err, SD_ERR_NOMEM, "scheduler: out of memory");
    }
    s->ts = t;
    for (int k = 0; k < N; k++)
        logs[k] = sched_np_logf(s->train_sigmas[k]);
    sched_karras(sig, smin, smax, n);
    for (int i = 0; i < n; i++)
        t[i] = (float)sched_sigma_to_t(sig[i], logs, N);
    free(logs);
    s->len = n;
    return SD_OK;
}

static int euler_tables(struct sched *s, int ancestral, struct sd_err *err)
{
    const struct sched_config *c = &s->cfg;
    int N = s->n_train;
    long len = 0;
    int rc = float_timesteps(s, &s->ts, &len, err);
    if (rc)
        return rc;
    s->len = (int)len;
    long nmax = len > s->steps ? len : s->steps;
    double *train = malloc((size_t)N * sizeof *train);
    double *sig = malloc((size_t)nmax * sizeof *sig);
    if (!train || !sig) {
        rc = sd_errf(err, SD_ERR_NOMEM, "scheduler: out of memory");
        goto out;
    }
    for (int k = 0; k < N; k++)
        train[k] = s->train_sigmas[k];
    for (long i = 0; i < len; i++) /* np.interp(timesteps, arange(N), sigmas) */
        sig[i] = sched_np_interp(s->ts[i], train, N);
    if (!ancestral && c->use_karras_sigmas) {
        rc = euler_karras(s, sig, len, err);
        if (rc)
            goto out;
    }
    int use_min = !ancestral && !strcmp(c->final_sigmas_type, "sigma_min");
    s->nsigmas = s->len + 1;
    s->sigmas = malloc((size_t)s->nsigmas * sizeof *s->sigmas);
    if (!s->sigmas) {
        rc = sd_errf(err, SD_ERR_NOMEM, "scheduler: out of memory");
        goto out;
    }
    float mx = use_min ? s->train_sigmas[0] : 0.0f;
    for (int i = 0; i < s->len; i++) {
        s->sigmas[i] = (float)sig[i];
        mx = s->sigmas[i] > mx ? s->sigmas[i] : mx;
    }
    s->sigmas[s->len] = use_min ? s->train_sigmas[0] : 0.0f;
    s->init_noise_sigma = s->spacing == SPACING_LEADING ? sqrtf(mx * mx + 1.0f) : mx;
out:
    free(train);
    free(sig);
    return rc;
}

static int euler_set_timesteps(struct sched *s, struct sd_err *err)
{
    return euler_tables(s, 0, err);
}

static int euler_a_set_timesteps(struct sched *s, struct sd_err *err)
{
    return euler_tables(s, 1, err);
}

/* pred_original_sample of both Euler classes, for element k. */
static float euler_x0(const struct sched *s, float sigma, float mo, float x)
{
    if (s->pred == PRED_EPSILON)
        return x - sigma * mo;
    if (s->pred == PRED_SAMPLE)
        return mo;
    float d = sigma * sigma + 1.0f;
    return mo * (-sigma / sqrtf(d)) + x / d;
}

static void euler_step(struct sched *s, int i, const float *mo, float *x, struct torch_gen *gen,
                       float eta)
{
    int si = s->begin + i;
    /* s_churn = 0: gamma = 0 and sigma_hat = sigma * (0 + 1) */
    float sigma = s->sigmas[si] * 1.0f;
    float dt = s->sigmas[si + 1] - sigma;
    for (size_t k = 0; k < s->numel; k++) {
        float x0 = euler_x0(s, sigma, mo[k], x[k]);
        float d = (x[k] - x0) / sigma;
        x[k] = x[k] + d * dt;
    }
}

static void euler_a_step(struct sched *s, int i, const float *mo, float *x,
                         struct torch_gen *gen, float eta)
{
    int si = s->begin + i;
    float sf = s->sigmas[si], st = s->sigmas[si + 1];
    float up = sqrtf(st * st * (sf * sf - st * st) / (sf * sf));
    float down = sqrtf(st * st - up * up);
    float dt = down - sf;
    for (size_t k = 0; k < s->numel; k++) {
        float x0 = euler_x0(s, sf, mo[k], x[k]);
        float d = (x[k] - x0) / sf;
        x[k] = x[k] + d * dt;
    }
    /* a new normal sample every step, even the last one (sigma_up = 0) */
    SD_ASSERT(gen || s->n_gens);
    sched_randn(s, gen, s->noise);
    for (size_t k = 0; k < s->numel; k++)
        x[k] = x[k] + s->noise[k] * up;
}

const struct sched_family sched_euler_family = {
    .set_timesteps = euler_set_timesteps,
    .step = euler_step,
};

const struct sched_family sched_euler_a_family = {
    .set_timesteps = euler_a_set_timesteps,
    .step = euler_a_step,
};
