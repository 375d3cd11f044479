/* sched_ddim.c - DDIMScheduler (eta > 0 adds generator noise); integer
 * timesteps, alphas_cumprod. See sd-reference.md 6.3.
 */
#include "model/sched_impl.h"

#include <math.h>

/* ---- DDIM --------------------------------------------------------------- */

static int ddim_set_timesteps(struct sched *s, struct sd_err *err)
{
    int64_t *t;
    long len = 0;
    int rc = sched_int_timesteps(s, &t, &len, err);
    if (rc)
        return rc;
    for (long i = 0; i < len / 2; i++) { /* descending */
        int64_t tmp = t[i];
        t[i] = t[len - 1 - i];
        t[len - 1 - i] = tmp;
    }
    rc = sched_set_int_timesteps(s, t, len, err);
    int64_t ratio = s->n_train / s->steps;
    for (long i = 0; !rc && i < len; i++) {
        rc = sched_check_t(s, t[i], err);
        if (!rc && t[i] - ratio >= 0)
            rc = sched_check_t(s, t[i] - ratio, err);
    }
    return rc;
}

static void ddim_step(struct sched *s, int i, const float *mo, float *x, struct torch_gen *gen,
                      float eta)
{
    size_t n = s->numel;
    int64_t t = s->tint[i], prev = t - s->n_train / s->steps;
    float a = sched_ac(s, t);
    float ap = prev >= 0 ? sched_ac(s, prev) : s->final_alpha_cumprod;
    float b = 1.0f - a, bp = 1.0f - ap;
    float sa = sqrtf(a), sb = sqrtf(b);
    float var = (bp / b) * (1.0f - a / ap);
    float std = eta * sqrtf(var);
    float dir = sqrtf(1.0f - ap - std * std);
    float sap = sqrtf(ap);
    float r = (float)s->cfg.clip_sample_range;
    for (size_t k = 0; k < n; k++) {
        float x0, pe;
        if (s->pred == PRED_EPSILON) {
            x0 = (x[k] - sb * mo[k]) / sa;
            pe = mo[k];
        } else if (s->pred == PRED_SAMPLE) {
            x0 = mo[k];
            pe = (x[k] - sa * x0) / sb;
        } else {
            x0 = sa * x[k] - sb * mo[k];
            pe = sa * mo[k] + sb * x[k];
        }
        if (s->cfg.clip_sample)
            x0 = sched_clampf(x0, -r, r);
        x[k] = sap * x0 + dir * pe;
    }
    if (eta > 0) {
        SD_ASSERT(gen || s->n_gens);
        sched_randn(s, gen, s->noise);
        for (size_t k = 0; k < n; k++)
            x[k] = x[k] + std * s->noise[k];
    }
}

const struct sched_family sched_ddim_family = {
    .set_timesteps = ddim_set_timesteps,
    .step = ddim_step,
};
