/* sched_lcm.c - LCMScheduler (latent consistency models): a skipping
 * subset of the original 50-step schedule, a consistency-function step and
 * fresh generator noise between steps. See sd-reference.md 6.7.
 */
#include "model/sched_impl.h"

#include <math.h>
#include <stdlib.h>

static int lcm_set_timesteps(struct sched *s, struct sd_err *err)
{
    int n = s->steps, N = s->n_train, orig = s->cfg.original_inference_steps;
    if (orig > N)
        return sd_errf(err, SD_ERR_UNSUPPORTED, "%s: original_inference_steps %d exceeds "
                       "num_train_timesteps %d", s->cfg.class_name, orig, N);
    /* sched_new capped n at orig, so orig // n >= 1 (the skipping step) */
    int64_t *t = malloc((size_t)n * sizeof *t);
    s->ts = malloc((size_t)n * sizeof *s->ts);
    if (!t || !s->ts) {
        free(t);
        return sd_errf(err, SD_ERR_NOMEM, "scheduler: out of memory");
    }
    /* origin = [1..orig] * (N // orig) - 1, reversed; pick the indices
     * floor(linspace(0, orig, n, endpoint=False)) */
    int k = N / orig;
    double step = (double)orig / n;
    for (int i = 0; i < n; i++) {
        int idx = (int)floor((double)i * step + 0.0);
        t[i] = (int64_t)(orig - idx) * k - 1;
        s->ts[i] = (float)t[i];
    }
    s->tint = t;
    s->len = n;
    return SD_OK;
}

static void lcm_step(struct sched *s, int i, const float *mo, float *x, struct torch_gen *gen,
                     float eta)
{
    size_t n = s->numel;
    int si = s->begin + i;
    int64_t t = s->tint[i];
    int64_t prev = si + 1 < s->len ? s->tint[si + 1] : t;
    float a = sched_ac(s, t);
    float ap = prev >= 0 ? sched_ac(s, prev) : s->final_alpha_cumprod;
    float b = 1.0f - a, bp = 1.0f - ap;
    float sa = sqrtf(a), sb = sqrtf(b);

    /* boundary condition scalings, sigma_data = 0.5; the Python scalar
     * divided by a tensor is reciprocal() * scalar in PyTorch */
    float st = (float)t * (float)s->cfg.timestep_scaling;
    float c_skip = (1.0f / (st * st + 0.25f)) * 0.25f;
    float c_out = st / sqrtf(st * st + 0.25f);
    float r = (float)s->cfg.clip_sample_range;
    for (size_t k = 0; k < n; k++) {
        float x0;
        if (s->pred == PRED_EPSILON)
            x0 = (x[k] - sb * mo[k]) / sa;
        else if (s->pred == PRED_SAMPLE)
            x0 = mo[k];
        else
            x0 = sa * x[k] - sb * mo[k];
        if (s->cfg.clip_sample)
            x0 = sched_clampf(x0, -r, r);
        x[k] = c_out * x0 + c_skip * x[k]; /* denoised */
    }
    if (si == s->steps - 1)
        return;
    SD_ASSERT(gen || s->n_gens);
    sched_randn(s, gen, s->noise);
    float sap = sqrtf(ap), sbp = sqrtf(bp);
    for (size_t k = 0; k < n; k++)
        x[k] = sap * x[k] + sbp * s->noise[k];
}

const struct sched_family sched_lcm_family = {
    .set_timesteps = lcm_set_timesteps,
    .step = lcm_step,
};
