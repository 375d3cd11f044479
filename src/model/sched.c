/* sched.c - building a scheduler and running its loop (see sched.h); the
 * per-class set_timesteps/step live in sched_<family>.c, the shared
 * arithmetic in sched_math.c, config parsing in sched_config.c.
 */
#include "model/sched_impl.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const struct sched_family *const families[SCHED_KIND_COUNT] = {
    [SCHED_PNDM] = &sched_pndm_family,
    [SCHED_DDIM] = &sched_ddim_family,
    [SCHED_EULER] = &sched_euler_family,
    [SCHED_EULER_A] = &sched_euler_a_family,
    [SCHED_DPMPP_2M] = &sched_dpm_family,
    [SCHED_LCM] = &sched_lcm_family,
};

static int is_sigma_kind(enum sched_kind k)
{
    return k == SCHED_EULER || k == SCHED_EULER_A || k == SCHED_DPMPP_2M;
}

/* prediction_type and timestep_spacing, as each class accepts them. */
static int parse_modes(struct sched *s, struct sd_err *err)
{
    const struct sched_config *c = &s->cfg;
    const char *p = c->prediction_type, *sp = c->timestep_spacing;
    enum sched_kind k = c->kind;
    if (!strcmp(p, "epsilon"))
        s->pred = PRED_EPSILON;
    else if (!strcmp(p, "v_prediction"))
        s->pred = PRED_V;
    else if ((!strcmp(p, "sample") && k != SCHED_PNDM && k != SCHED_EULER_A) ||
             (!strcmp(p, "original_sample") && k == SCHED_EULER))
        s->pred = PRED_SAMPLE;
    else
        return sd_errf(err, SD_ERR_UNSUPPORTED, "%s: prediction_type \"%s\" is not supported",
                       c->class_name, p);
    if (!strcmp(sp, "linspace"))
        s->spacing = SPACING_LINSPACE;
    else if (!strcmp(sp, "leading"))
        s->spacing = SPACING_LEADING;
    else if (!strcmp(sp, "trailing"))
        s->spacing = SPACING_TRAILING;
    else if (k != SCHED_LCM) /* LCM never looks at it */
        return sd_errf(err, SD_ERR_UNSUPPORTED, "%s: timestep_spacing \"%s\" is not supported",
                       c->class_name, sp);
    return SD_OK;
}

/* Options of the class that this module does not implement. Only keys the
 * class's __init__ takes are looked at. */
static int check_options(const struct sched_config *c, struct sd_err *err)
{
    const char *cn = c->class_name;
    enum sched_kind k = c->kind;
    if (c->trained_betas)
        return sd_errf(err, SD_ERR_UNSUPPORTED, "%s: trained_betas is not supported", cn);
    if (k == SCHED_PNDM && !c->skip_prk_steps)
        return sd_errf(err, SD_ERR_UNSUPPORTED, "%s: skip_prk_steps false (PRK steps) is not "
                       "supported", cn);
    if ((k == SCHED_DDIM || k == SCHED_DPMPP_2M || k == SCHED_LCM) && c->thresholding)
        return sd_errf(err, SD_ERR_UNSUPPORTED, "%s: thresholding is not supported", cn);
    if ((k == SCHED_EULER || k == SCHED_DPMPP_2M) &&
        (c->use_exponential_sigmas || c->use_beta_sigmas))
        return sd_errf(err, SD_ERR_UNSUPPORTED, "%s: exponential/beta sigmas are not "
                       "supported", cn);
    if ((k == SCHED_EULER || k == SCHED_DPMPP_2M) && strcmp(c->final_sigmas_type, "zero") &&
        strcmp(c->final_sigmas_type, "sigma_min"))
        return sd_errf(err, SD_ERR_UNSUPPORTED, "%s: final_sigmas_type \"%s\" is not "
                       "supported", cn, c->final_sigmas_type);
    if (k == SCHED_EULER) {
        if (strcmp(c->interpolation_type, "linear"))
            return sd_errf(err, SD_ERR_UNSUPPORTED, "%s: interpolation_type \"%s\" is not "
                           "supported", cn, c->interpolation_type);
        if (!strcmp(c->timestep_type, "continuous") &&
            !strcmp(c->prediction_type, "v_prediction"))
            return sd_errf(err, SD_ERR_UNSUPPORTED, "%s: continuous timesteps are not "
                           "supported", cn);
    }
    if (k == SCHED_DPMPP_2M) {
        const char *a = c->algorithm_type, *t = c->solver_type;
        if (strcmp(a, "dpmsolver++") && strcmp(a, "deis")) /* deis runs as dpmsolver++ */
            return sd_errf(err, SD_ERR_UNSUPPORTED, "%s: algorithm_type \"%s\" is not "
                           "supported", cn, a);
        if (strcmp(t, "midpoint") && strcmp(t, "heun") && strcmp(t, "logrho") &&
            strcmp(t, "bh1") && strcmp(t, "bh2"))
            return sd_errf(err, SD_ERR_UNSUPPORTED, "%s: solver_type \"%s\" is not supported",
                           cn, t);
        if (strcmp(a, "dpmsolver++") && !strcmp(c->final_sigmas_type, "zero"))
            return sd_errf(err, SD_ERR_UNSUPPORTED, "%s: final_sigmas_type \"zero\" needs "
                           "algorithm_type dpmsolver++", cn);
        if (c->solver_order > 2)
            return sd_errf(err, SD_ERR_UNSUPPORTED, "%s: solver_order %d is not supported",
                           cn, c->solver_order);
        if (c->use_lu_lambdas || c->use_flow_sigmas || c->variance_type[0])
            return sd_errf(err, SD_ERR_UNSUPPORTED, "%s: lu lambdas, flow sigmas and learned "
                           "variance are not supported", cn);
    }
    return SD_OK;
}

static int alloc_floats(float **p, size_t n)
{
    *p = malloc(n * sizeof(float));
    return *p ? SD_OK : SD_ERR_NOMEM;
}

/* Tables that depend only on the config: alphas_cumprod, sigmas. */
static int build_tables(struct sched *s, struct sd_err *err)
{
    const struct sched_config *c = &s->cfg;
    int n = s->n_train;
    if (alloc_floats(&s->alphas_cumprod, (size_t)n))
        return sd_errf(err, SD_ERR_NOMEM, "scheduler: out of memory");
    int rescale = c->kind != SCHED_PNDM && c->rescale_betas_zero_snr;
    int rc = sched_alphas_cumprod(s->alphas_cumprod, c, rescale, is_sigma_kind(c->kind), err);
    if (rc)
        return sd_err_prefix(err, rc, "%s", c->class_name);
    s->final_alpha_cumprod = c->set_alpha_to_one ? 1.0f : s->alphas_cumprod[0];
    s->init_noise_sigma = 1.0f;
    if (!is_sigma_kind(c->kind))
        return SD_OK;
    if (alloc_floats(&s->train_sigmas, (size_t)n))
        return sd_errf(err, SD_ERR_NOMEM, "scheduler: out of memory");
    for (int i = 0; i < n; i++) {
        float a = s->alphas_cumprod[i];
        s->train_sigmas[i] = sqrtf((1.0f - a) / a);
    }
    return SD_OK;
}

/* The loop state: history buffers, noise and scratch, numel floats each. */
static int alloc_state(struct sched *s, const struct sched_family *f)
{
    int rc = alloc_floats(&s->noise, s->numel) | alloc_floats(&s->work, s->numel);
    for (int i = 0; i < f->history; i++)
        rc |= alloc_floats(&s->hist[i], s->numel);
    if (f->cur_sample)
        rc |= alloc_floats(&s->cur_sample, s->numel);
    return rc ? SD_ERR_NOMEM : SD_OK;
}

int sched_new(struct sched **out, const struct sched_config *c, int steps, size_t numel,
              struct sd_err *err)
{
    *out = NULL;
    if (c->kind < 0 || c->kind >= SCHED_KIND_COUNT)
        return sd_errf(err, SD_ERR_UNSUPPORTED, "scheduler class \"%s\" is not supported",
                       c->class_name);
    int max_steps = c->num_train_timesteps;
    if (c->kind == SCHED_LCM && c->original_inference_steps < max_steps)
        max_steps = c->original_inference_steps;
    if (steps < 1 || steps > max_steps)
        return sd_errf(err, SD_ERR_ARG, "%s: num_inference_steps %d is not in [1, %d]",
                       c->class_name, steps, max_steps);
    if (numel == 0 || numel > SIZE_MAX / sizeof(float) / 8)
        return sd_errf(err, SD_ERR_ARG, "scheduler: bad latent size %zu", numel);
    int rc = check_options(c, err);
    if (rc)
        return rc;

    struct sched *s = calloc(1, sizeof *s);
    if (!s)
        return sd_errf(err, SD_ERR_NOMEM, "scheduler: out of memory");
    s->cfg = *c;
    s->n_train = c->num_train_timesteps;
    s->steps = steps;
    s->numel = numel;
    const struct sched_family *f = families[c->kind];
    rc = parse_modes(s, err);
    if (!rc)
        rc = build_tables(s, err);
    if (!rc)
        rc = f->set_timesteps(s, err);
    if (!rc) {
        /* diffusers would step past the end of its tables */
        s->begin = sched_begin_index(s);
        if (s->begin)
            rc = sd_errf(err, SD_ERR_UNSUPPORTED, "%s: the first timestep repeats",
                         c->class_name);
    }
    if (!rc && alloc_state(s, f))
        rc = sd_errf(err, SD_ERR_NOMEM, "scheduler: out of memory");
    if (rc) {
        sched_free(s);
        return rc;
    }
    *out = s;
    return SD_OK;
}

void sched_free(struct sched *s)
{
    if (!s)
        return;
    free(s->alphas_cumprod);
    free(s->train_sigmas);
    free(s->tint);
    free(s->ts);
    free(s->sigmas);
    for (int i = 0; i < SCHED_MAX_ORDER; i++)
        free(s->hist[i]);
    free(s->cur_sample);
    free(s->noise);
    free(s->work);
    free(s);
}

int sched_start(struct sched *s, int t_start, struct sd_err *err)
{
    SD_ASSERT(s->calls == 0);
    if (t_start < 0 || t_start >= s->len)
        return sd_errf(err, SD_ERR_ARG, "no denoising step left (strength too low for %d steps)", s->steps);
    s->start = t_start;
    return SD_OK;
}

void sched_set_generators(struct sched *s, struct torch_gen **gens, int n)
{
    SD_ASSERT(n >= 1 && s->numel % (size_t)n == 0);
    s->gens = gens;
    s->n_gens = n;
}

void sched_add_noise(const struct sched *s, int i, const float *orig, const float *noise, float *out, size_t n)
{
    int idx = s->start + i;
    SD_ASSERT(i >= 0 && idx < s->len);
    enum sched_kind k = s->cfg.kind;
    if (k == SCHED_EULER || k == SCHED_EULER_A) {
        float sigma = s->sigmas[s->begin + idx];
        for (size_t j = 0; j < n; j++)
            out[j] = orig[j] + noise[j] * sigma;
    } else if (k == SCHED_DPMPP_2M) {
        float sigma = s->sigmas[s->begin + idx];
        float alpha_t = 1.0f / sqrtf(sigma * sigma + 1.0f), sigma_t = sigma * alpha_t;
        for (size_t j = 0; j < n; j++)
            out[j] = alpha_t * orig[j] + sigma_t * noise[j];
    } else {
        float a = sched_ac(s, s->tint[idx]);
        float sa = sqrtf(a), sb = sqrtf(1.0f - a);
        for (size_t j = 0; j < n; j++)
            out[j] = sa * orig[j] + sb * noise[j];
    }
}

int sched_num_timesteps(const struct sched *s)
{
    return s->len - s->start;
}

float sched_timestep(const struct sched *s, int i)
{
    SD_ASSERT(i >= 0 && s->start + i < s->len);
    return s->ts[s->start + i];
}

int sched_num_sigmas(const struct sched *s)
{
    return s->nsigmas;
}

float sched_sigma(const struct sched *s, int i)
{
    SD_ASSERT(i >= 0 && i < s->nsigmas);
    return s->sigmas[i];
}

float sched_init_noise_sigma(const struct sched *s)
{
    return s->init_noise_sigma;
}

void sched_scale_model_input(const struct sched *s, int i, const float *x, float *out,
                             size_t n)
{
    SD_ASSERT(i >= 0 && s->start + i < s->len);
    if (s->cfg.kind != SCHED_EULER && s->cfg.kind != SCHED_EULER_A) {
        if (out != x)
            memmove(out, x, n * sizeof *x);
        return;
    }
    float sigma = s->sigmas[s->begin + s->start + i];
    float d = sqrtf(sigma * sigma + 1.0f);
    for (size_t k = 0; k < n; k++)
        out[k] = x[k] / d;
}

void sched_step(struct sched *s, int i, const float *model_out, float *x,
                struct torch_gen *gen, float eta)
{
    SD_ASSERT(i == s->calls && s->start + i < s->len);
    /* the families index their tables with the full schedule's index; their
     * own counters (PLMS, DPM's lower orders) start afresh, as diffusers'
     * do on a cut schedule */
    families[s->cfg.kind]->step(s, s->start + i, model_out, x, gen, eta);
    s->calls++;
}
