/* sched_pndm.c - PNDMScheduler with skip_prk_steps: PLMS, a linear
 * multistep (Adams-Bashforth) method on the noise predictions, stepping on
 * alphas_cumprod at integer timesteps. See sd-reference.md 6.2.
 */
#include "model/sched_impl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- PNDM (PLMS) --------------------------------------------------------- */

static int pndm_set_timesteps(struct sched *s, struct sd_err *err)
{
    int64_t *base;
    long n = 0;
    int rc = sched_int_timesteps(s, &base, &n, err);
    if (rc)
        return rc;
    /* PLMS: base[:-1] ++ base[-2:-1] ++ base[-1:], reversed: the second
     * timestep is repeated (its step is a correction of the first) */
    long len = n + (n >= 2);
    int64_t *t = malloc((size_t)len * sizeof *t);
    if (!t) {
        free(base);
        return sd_errf(err, SD_ERR_NOMEM, "scheduler: out of memory");
    }
    long j = 0;
    for (long i = 0; i < n - 1; i++)
        t[j++] = base[i];
    if (n >= 2)
        t[j++] = base[n - 2];
    t[j++] = base[n - 1];
    for (long i = 0; i < len / 2; i++) {
        int64_t tmp = t[i];
        t[i] = t[len - 1 - i];
        t[len - 1 - i] = tmp;
    }
    free(base);
    rc = sched_set_int_timesteps(s, t, len, err);
    /* check every alphas_cumprod index the steps will use */
    int64_t ratio = s->n_train / s->steps;
    for (long i = 0; !rc && i < len; i++) {
        int64_t cur = i == 1 ? t[i] + ratio : t[i], prev = i == 1 ? t[i] : t[i] - ratio;
        rc = sched_check_t(s, cur, err);
        if (!rc && prev >= 0)
            rc = sched_check_t(s, prev, err);
    }
    return rc;
}

/* _get_prev_sample: x <- sample one step from t to prev with noise eps. */
static void pndm_prev_sample(const struct sched *s, const float *sample, int64_t t,
                             int64_t prev, float *eps, float *x)
{
    float a = sched_ac(s, t);
    float ap = prev >= 0 ? sched_ac(s, prev) : s->final_alpha_cumprod;
    float b = 1.0f - a, bp = 1.0f - ap;
    size_t n = s->numel;
    if (s->pred == PRED_V) {
        float sa = sqrtf(a), sb = sqrtf(b);
        for (size_t k = 0; k < n; k++)
            eps[k] = sa * eps[k] + sb * sample[k];
    }
    float coef = sqrtf(ap / a);
    float den = a * sqrtf(bp) + sqrtf(a * b * ap);
    float diff = ap - a;
    for (size_t k = 0; k < n; k++)
        x[k] = coef * sample[k] - (diff * eps[k]) / den;
}

static void pndm_step(struct sched *s, int i, const float *mo, float *x, struct torch_gen *gen,
                      float eta)
{
    size_t n = s->numel;
    int counter = s->calls;
    int64_t ratio = s->n_train / s->steps;
    int64_t t = s->tint[i], prev = t - ratio;
    if (counter != 1) { /* ets = ets[-3:] + [mo] */
        if (s->nhist == 4) {
            float *oldest = s->hist[0];
            memmove(s->hist, s->hist + 1, 3 * sizeof s->hist[0]);
            s->hist[3] = oldest;
            s->nhist = 3;
        }
        memcpy(s->hist[s->nhist++], mo, n * sizeof *mo);
    } else {
        prev = t;
        t = t + ratio;
    }
    float *e = s->work;
    const float *sample = x;
    float *const *h = s->hist + s->nhist - 1; /* h[0] newest, h[-1] older, ... */
    if (s->nhist == 1 && counter == 0) {
        memcpy(e, mo, n * sizeof *mo);
        memcpy(s->cur_sample, x, n * sizeof *x);
    } else if (s->nhist == 1 && counter == 1) {
        for (size_t k = 0; k < n; k++)
            e[k] = (mo[k] + h[0][k]) / 2.0f;
        sample = s->cur_sample;
    } else if (s->nhist == 2) {
        for (size_t k = 0; k < n; k++)
            e[k] = (3.0f * h[0][k] - h[-1][k]) / 2.0f;
    } else if (s->nhist == 3) {
        for (size_t k = 0; k < n; k++)
            e[k] = (23.0f * h[0][k] - 16.0f * h[-1][k] + 5.0f * h[-2][k]) / 12.0f;
    } else {
        const float c24 = (float)(1.0 / 24);
        for (size_t k = 0; k < n; k++)
            e[k] = c24 * (55.0f * h[0][k] - 59.0f * h[-1][k] + 37.0f * h[-2][k] -
                          9.0f * h[-3][k]);
    }
    pndm_prev_sample(s, sample, t, prev, e, x);
}

const struct sched_family sched_pndm_family = {
    .set_timesteps = pndm_set_timesteps,
    .step = pndm_step,
    .history = 4,
    .cur_sample = 1,
};
