/* test_sched.c - scheduler parity with diffusers.
 *
 * sched_parity replays tests/data/sched/ref.json (tools/gen_sched_ref.py:
 * every scheduler class derived from several model configs, step counts,
 * spacings, prediction types, with generator noise) and reports, per class,
 * the worst difference from diffusers in float32 ulps. Integer timesteps and
 * the derived configs must match exactly. The other tests check config
 * parsing and errors, and the vectors of sd-reference.md 11.3.
 */
#include "test.h"

#include <float.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/sched.h"

#define REF "tests/data/sched/ref.json"

/* Tolerances, in float32 ulps (see sched.h: PyTorch's sqrt/log/exp are
 * MKL's, not correctly rounded, so exact agreement is not expected). */
#define TOL_SCALAR 8.0   /* sigmas, init_noise_sigma, input scaling */
#define TOL_TRAJ 64.0    /* latents, in ulps of the largest |value| so far */
#define TOL_TIMESTEP 4.0 /* Euler Karras timesteps (floats); all others exact */

static double ulp_of(float v)
{
    v = fabsf(v);
    if (!isfinite(v))
        return INFINITY;
    return (double)nextafterf(v, INFINITY) - (double)v;
}

/* |c - r| in ulps of r (0 if equal, infinity if one is NaN). */
static double ulps(float c, float r)
{
    if (c == r || (isnan(c) && isnan(r)))
        return 0;
    if (isnan(c) || isnan(r))
        return INFINITY;
    return fabs((double)c - (double)r) / ulp_of(r);
}

/* A float of the reference: a number, or "nan", "inf", "-inf". */
static float jf(const json_t *a, size_t i)
{
    const json_t *v = json_array_get(a, i);
    if (json_is_string(v))
        return strtof(json_string_value(v), NULL);
    return (float)json_number_value(v);
}

/* ---- derived config vs diffusers' scheduler.config ----------------------- */

static int str_eq(const char *c, const json_t *v)
{
    return json_is_string(v) && !strcmp(c, json_string_value(v));
}

/* diffusers rewrites a few aliases when it builds the scheduler */
static const char *canon(const char *key, const char *v)
{
    if (!strcmp(key, "algorithm_type") && !strcmp(v, "deis"))
        return "dpmsolver++";
    if (!strcmp(key, "solver_type") &&
        (!strcmp(v, "logrho") || !strcmp(v, "bh1") || !strcmp(v, "bh2")))
        return "midpoint";
    return v;
}

static int derived_matches(const struct sched_config *c, const char *key, const json_t *v)
{
#define INT(k, f) if (!strcmp(key, k)) return json_is_integer(v) && json_integer_value(v) == c->f
#define BOOL(k, f) if (!strcmp(key, k)) return json_is_boolean(v) && json_is_true(v) == !!c->f
#define NUM(k, f) if (!strcmp(key, k)) return json_is_number(v) && json_number_value(v) == c->f
#define STR(k, f) if (!strcmp(key, k)) return str_eq(canon(key, c->f), v)
    INT("num_train_timesteps", num_train_timesteps);
    NUM("beta_start", beta_start);
    NUM("beta_end", beta_end);
    STR("beta_schedule", beta_schedule);
    STR("prediction_type", prediction_type);
    STR("timestep_spacing", timestep_spacing);
    INT("steps_offset", steps_offset);
    BOOL("set_alpha_to_one", set_alpha_to_one);
    BOOL("skip_prk_steps", skip_prk_steps);
    BOOL("clip_sample", clip_sample);
    NUM("clip_sample_range", clip_sample_range);
    BOOL("rescale_betas_zero_snr", rescale_betas_zero_snr);
    BOOL("use_karras_sigmas", use_karras_sigmas);
    STR("final_sigmas_type", final_sigmas_type);
    INT("solver_order", solver_order);
    STR("algorithm_type", algorithm_type);
    STR("solver_type", solver_type);
    BOOL("lower_order_final", lower_order_final);
    INT("original_inference_steps", original_inference_steps);
    NUM("timestep_scaling", timestep_scaling);
    if (!strcmp(key, "sigma_min"))
        return json_is_null(v) ? !c->has_sigma_min
                               : c->has_sigma_min && json_number_value(v) == c->sigma_min;
    if (!strcmp(key, "sigma_max"))
        return json_is_null(v) ? !c->has_sigma_max
                               : c->has_sigma_max && json_number_value(v) == c->sigma_max;
#undef INT
#undef BOOL
#undef NUM
#undef STR
    return 1; /* a key this test does not know */
}

/* ---- the parity replay -------------------------------------------------- */

struct kind_stats {
    int cases, refused, exact, ieee_exact, steps;
    double timestep, sigma, init, scale, traj, traj_step;
};

static uint64_t fnv1a(uint64_t h, const float *v, size_t n)
{
    const unsigned char *b = (const unsigned char *)v;
    for (size_t i = 0; i < n * sizeof *v; i++)
        h = (h ^ b[i]) * 0x100000001b3u;
    return h;
}

/* The synthetic UNet of gen_sched_ref.py: 0.25 * input + sin(k*0.7 + i*0.1). */
static void synthetic_unet(float *out, const float *in, size_t n, int i)
{
    for (size_t k = 0; k < n; k++)
        out[k] = 0.25f * in[k] + (float)sin((double)k * 0.7 + (double)i * 0.1);
}

/* Replay one case; returns 0 when it is within tolerance. */
static int replay(const json_t *cs, const json_t *configs, struct kind_stats *st)
{
    const char *name = json_string_value(json_object_get(cs, "name"));
    const char *text = json_string_value(json_object_get(configs,
                         json_string_value(json_object_get(cs, "config"))));
    int karras = (int)json_integer_value(json_object_get(cs, "karras"));
    enum sched_kind kind = sched_kind_from_name(json_string_value(json_object_get(cs, "kind")),
                                                NULL);
    int steps = (int)json_integer_value(json_object_get(cs, "steps"));
    struct sd_err err = {0};
    struct sched_config model, c;
    if (sched_config_parse(&model, text, strlen(text), name, &err)) {
        fprintf(stderr, "  %s: %s\n", name, err.msg);
        return 1;
    }
    sched_config_derive(&c, &model, kind, karras);
    int bad = 0;
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)json_object_get(cs, "derived"), key, v)
    {
        if (!derived_matches(&c, key, v)) {
            fprintf(stderr, "  %s: derived %s differs\n", name, key);
            bad = 1;
        }
    }

    const json_t *shape = json_object_get(cs, "shape");
    size_t numel = 1;
    for (size_t d = 0; d < json_array_size(shape); d++)
        numel *= (size_t)json_integer_value(json_array_get(shape, d));
    struct sched *s;
    int rc = sched_new(&s, &c, steps, numel, &err);
    if (json_object_get(cs, "error")) { /* diffusers refuses it: so must we */
        st->refused++;
        if (!rc) {
            fprintf(stderr, "  %s: accepted, diffusers says %s\n", name,
                    json_string_value(json_object_get(cs, "error")));
            sched_free(s);
            return 1;
        }
        return bad;
    }
    if (rc) {
        fprintf(stderr, "  %s: %s\n", name, err.msg);
        return 1;
    }

    const json_t *ts = json_object_get(cs, "timesteps");
    int len = sched_num_timesteps(s);
    if (len != (int)json_array_size(ts)) {
        fprintf(stderr, "  %s: %d timesteps, diffusers %zu\n", name, len, json_array_size(ts));
        sched_free(s);
        return 1;
    }
    /* integer timesteps exactly; Euler's Karras timesteps come from the
     * training sigmas, which PyTorch computes with its inexact sqrt */
    double tol_t = kind == SCHED_EULER && karras ? TOL_TIMESTEP : 0;
    for (int i = 0; i < len; i++) {
        double e = ulps(sched_timestep(s, i), jf(ts, (size_t)i));
        st->timestep = fmax(st->timestep, e);
        if (e > tol_t) {
            fprintf(stderr, "  %s: timestep %d is %.9g, diffusers %.9g\n", name, i,
                    sched_timestep(s, i), jf(ts, (size_t)i));
            bad = 1;
        }
    }
    const json_t *sig = json_object_get(cs, "sigmas");
    if (sig) {
        if (sched_num_sigmas(s) != (int)json_array_size(sig)) {
            fprintf(stderr, "  %s: sigma count differs\n", name);
            bad = 1;
        }
        for (int i = 0; !bad && i < sched_num_sigmas(s); i++)
            st->sigma = fmax(st->sigma, ulps(sched_sigma(s, i), jf(sig, (size_t)i)));
    }
    /* the hash of the IEEE-math diffusers run (see gen_sched_ref.py) */
    uint64_t h = 0xcbf29ce484222325u;
    for (int i = 0; i < len; i++) {
        float t = sched_timestep(s, i);
        h = fnv1a(h, &t, 1);
    }
    for (int i = 0; i < sched_num_sigmas(s); i++) {
        float sg = sched_sigma(s, i);
        h = fnv1a(h, &sg, 1);
    }
    float init = sched_init_noise_sigma(s);
    h = fnv1a(h, &init, 1);
    st->init = fmax(st->init, ulps(init, (float)json_number_value(
                                             json_object_get(cs, "init_noise_sigma"))));

    /* the pipeline loop */
    float *x = malloc(numel * sizeof *x), *in = malloc(numel * sizeof *in);
    float *mo = malloc(numel * sizeof *mo);
    struct torch_gen gen;
    tgen_seed(&gen, (uint64_t)json_integer_value(json_object_get(cs, "seed")));
    tgen_randn(&gen, x, numel);
    for (size_t k = 0; k < numel; k++)
        x[k] = x[k] * init;
    float eta = (float)json_number_value(json_object_get(cs, "eta"));
    const json_t *scale = json_object_get(cs, "scale"), *traj = json_object_get(cs, "traj");
    const json_t *keep = json_object_get(cs, "traj_steps");
    size_t next = 0;
    double worst = 0, worst_step = 0;
    int exact = 1;
    float seen = 0; /* the largest |latent| so far, initial noise included */
    for (size_t k = 0; k < numel; k++)
        seen = fmaxf(seen, fabsf(x[k]));
    for (int i = 0; i < len; i++) {
        float one = 1.0f;
        sched_scale_model_input(s, i, &one, &one, 1);
        st->scale = fmax(st->scale, ulps(one, jf(scale, (size_t)i)));
        sched_scale_model_input(s, i, x, in, numel);
        synthetic_unet(mo, in, numel, i);
        sched_step(s, i, mo, x, &gen, eta);
        h = fnv1a(fnv1a(h, &one, 1), x, numel);
        st->steps++;
        if (next < json_array_size(keep) && json_integer_value(json_array_get(keep, next)) == i) {
            const json_t *ref = json_array_get(traj, next++);
            float mx = 0;
            for (size_t k = 0; k < numel; k++)
                mx = fmaxf(mx, fabsf(jf(ref, k)));
            seen = fmaxf(seen, mx);
            const char *dbg = getenv("SCHED_DEBUG");
            if (dbg && !strcmp(dbg, name))
                fprintf(stderr, "    step %d t %.9g: x[0] %.9g ref %.9g max|ref| %g\n", i,
                        sched_timestep(s, i), x[0], jf(ref, 0), mx);
            for (size_t k = 0; k < numel; k++) {
                float r = jf(ref, k);
                int same = x[k] == r || (isnan(x[k]) && isnan(r));
                exact &= same;
                double d = same ? 0 : fabs((double)x[k] - r);
                worst = fmax(worst, isnan(d) ? INFINITY : d / ulp_of(seen));
                worst_step = fmax(worst_step, isnan(d) ? INFINITY : d / ulp_of(mx));
            }
        }
    }
    st->traj = fmax(st->traj, worst);
    st->traj_step = fmax(st->traj_step, worst_step);
    st->exact += exact;
    if (worst > TOL_TRAJ) {
        fprintf(stderr, "  %s: latents differ by %.1f ulps\n", name, worst);
        bad = 1;
    }
    const char *ih = json_string_value(json_object_get(cs, "ieee_hash"));
    if (ih && strtoull(ih, NULL, 16) == h)
        st->ieee_exact++;
    else {
        fprintf(stderr, "  %s: differs from diffusers with IEEE sqrt/log/exp\n", name);
        bad = 1;
    }
    free(x);
    free(in);
    free(mo);
    sched_free(s);
    return bad;
}

TEST(sched_parity)
{
    json_error_t jerr;
    json_t *root = json_load_file(REF, 0, &jerr);
    CHECK_MSG(root != NULL, REF ": %s", jerr.text);
    if (!root)
        return;
    const json_t *configs = json_object_get(root, "configs");
    struct kind_stats st[SCHED_KIND_COUNT];
    memset(st, 0, sizeof st);
    size_t i;
    json_t *cs;
    int failed = 0, total = 0;
    json_array_foreach(json_object_get(root, "cases"), i, cs)
    {
        enum sched_kind k =
            sched_kind_from_name(json_string_value(json_object_get(cs, "kind")), NULL);
        CHECK(k != SCHED_OTHER);
        if (k == SCHED_OTHER)
            continue;
        st[k].cases++;
        total++;
        failed += replay(cs, configs, &st[k]);
    }
    CHECK_MSG(failed == 0, "%d of %d cases differ", failed, total);
    CHECK(total >= 90);
    printf("  %-9s %5s %7s %6s %10s %10s %5s %6s %6s %8s %8s\n", "scheduler", "cases",
           "refused", "steps", "ieee-exact", "exact", "t", "sigma", "scale", "latents",
           "(step)");
    for (int k = 0; k < SCHED_KIND_COUNT; k++) {
        int ran = st[k].cases - st[k].refused;
        printf("  %-9s %5d %7d %6d %5d/%-4d %5d/%-4d %5.1f %6.1f %6.1f %8.1f %8.1f\n",
               sched_kind_name(k), st[k].cases, st[k].refused, st[k].steps, st[k].ieee_exact,
               ran, st[k].exact, ran, st[k].timestep, fmax(st[k].sigma, st[k].init),
               st[k].scale, st[k].traj, st[k].traj_step);
        CHECK(st[k].sigma <= TOL_SCALAR && st[k].init <= TOL_SCALAR);
        CHECK(st[k].scale <= TOL_SCALAR);
    }
    printf("  ieee-exact: bit-identical to diffusers run with correctly rounded sqrt/log/exp;\n"
           "  exact: bit-identical to plain diffusers (PyTorch's MKL sqrt/log/exp); worst\n"
           "  differences from plain diffusers in float32 ulps (t: timesteps, sigma: sigmas\n"
           "  and init_noise_sigma, scale: scale_model_input, latents: of the largest\n"
           "  |value| so far, (step): of the step's largest |value|)\n");
    json_decref(root);
}

/* ---- sd-reference.md 11.3 and configs ----------------------------------- */

/* runwayml/stable-diffusion-v1-5 scheduler/scheduler_config.json */
static const char sd15_json[] =
    "{\"_class_name\": \"PNDMScheduler\", \"_diffusers_version\": \"0.6.0\","
    " \"beta_end\": 0.012, \"beta_schedule\": \"scaled_linear\", \"beta_start\": 0.00085,"
    " \"num_train_timesteps\": 1000, \"set_alpha_to_one\": false, \"skip_prk_steps\": true,"
    " \"steps_offset\": 1, \"trained_betas\": null, \"clip_sample\": false}";

/* stabilityai/sd-turbo */
static const char turbo_json[] =
    "{\"_class_name\": \"EulerDiscreteScheduler\", \"beta_end\": 0.012,"
    " \"beta_schedule\": \"scaled_linear\", \"beta_start\": 0.00085, \"clip_sample\": false,"
    " \"interpolation_type\": \"linear\", \"num_train_timesteps\": 1000,"
    " \"prediction_type\": \"epsilon\", \"sample_max_value\": 1.0, \"set_alpha_to_one\": false,"
    " \"sigma_max\": null, \"sigma_min\": null, \"skip_prk_steps\": true, \"steps_offset\": 1,"
    " \"timestep_spacing\": \"trailing\", \"timestep_type\": \"discrete\","
    " \"trained_betas\": null, \"use_karras_sigmas\": false}";

static struct sched *make(const char *json, enum sched_kind kind, int karras, int steps,
                          size_t numel)
{
    struct sched_config model, c;
    struct sd_err err = {0};
    struct sched *s = NULL;
    if (sched_config_parse(&model, json, strlen(json), "test", &err)) {
        fprintf(stderr, "  %s\n", err.msg);
        return NULL;
    }
    sched_config_derive(&c, &model, kind, karras);
    if (sched_new(&s, &c, steps, numel, &err))
        fprintf(stderr, "  %s\n", err.msg);
    return s;
}

/* |a - b| within the rounding of a 7-significant-digit reference value */
#define CHECK_7SF(a, ref) CHECK_NEAR((a), (ref), fabs(ref) * 6e-7 + 1e-12)

static void check_ts(struct sched *s, const int *t, int n)
{
    CHECK_EQ_INT(sched_num_timesteps(s), n);
    for (int i = 0; i < n && i < sched_num_timesteps(s); i++)
        CHECK_EQ_INT((int)sched_timestep(s, i), t[i]);
}

TEST(sched_ref_timesteps)
{
    struct sched *s = make(sd15_json, SCHED_PNDM, 0, 50, 2);
    CHECK_EQ_INT(sched_num_timesteps(s), 51);
    CHECK(sched_timestep(s, 0) == 981 && sched_timestep(s, 1) == 961 &&
          sched_timestep(s, 2) == 961 && sched_timestep(s, 3) == 941 &&
          sched_timestep(s, 49) == 21 && sched_timestep(s, 50) == 1);
    CHECK(sched_init_noise_sigma(s) == 1.0f);
    sched_free(s);
    s = make(sd15_json, SCHED_PNDM, 0, 4, 2);
    check_ts(s, (const int[]){751, 501, 501, 251, 1}, 5);
    sched_free(s);

    s = make(sd15_json, SCHED_DDIM, 0, 50, 2);
    CHECK_EQ_INT(sched_num_timesteps(s), 50);
    for (int i = 0; i < 50; i++)
        CHECK_EQ_INT((int)sched_timestep(s, i), 981 - 20 * i);
    sched_free(s);

    static const int dpm25[] = {999, 959, 919, 879, 839, 799, 759, 719, 679, 639, 599, 559, 519,
                                480, 440, 400, 360, 320, 280, 240, 200, 160, 120, 80, 40};
    s = make(sd15_json, SCHED_DPMPP_2M, 0, 25, 2);
    check_ts(s, dpm25, 25);
    CHECK_7SF(sched_sigma(s, 0), 14.61465);
    CHECK_7SF(sched_sigma(s, 1), 11.54277);
    CHECK_7SF(sched_sigma(s, 2), 9.237426);
    CHECK_7SF(sched_sigma(s, 24), 0.1990589);
    CHECK(sched_sigma(s, 25) == 0.0f);
    CHECK(sched_init_noise_sigma(s) == 1.0f);
    sched_free(s);

    static const int karras25[] = {999, 970, 938, 905, 868, 829, 786, 739, 687, 630, 568, 500, 427,
                                   352, 278, 207, 146, 96, 59, 34, 18, 9, 4, 1, 0};
    int karras;
    CHECK(sched_kind_from_name("dpmpp_2m_karras", &karras) == SCHED_DPMPP_2M && karras == 1);
    s = make(sd15_json, SCHED_DPMPP_2M, karras, 25, 2);
    check_ts(s, karras25, 25);
    CHECK_7SF(sched_sigma(s, 0), 14.61465);
    CHECK_7SF(sched_sigma(s, 1), 12.28304);
    CHECK_7SF(sched_sigma(s, 2), 10.27783);
    CHECK_7SF(sched_sigma(s, 23), 0.04374285);
    CHECK_7SF(sched_sigma(s, 24), 0.02916753);
    CHECK(sched_sigma(s, 25) == 0.0f);
    sched_free(s);

    s = make(sd15_json, SCHED_LCM, 0, 4, 2);
    check_ts(s, (const int[]){999, 759, 499, 259}, 4);
    sched_free(s);
    s = make(sd15_json, SCHED_LCM, 0, 8, 2);
    check_ts(s, (const int[]){999, 879, 759, 639, 499, 379, 259, 139}, 8);
    sched_free(s);
}

TEST(sched_ref_euler)
{
    /* from SD1.5's config Euler gets its own default spacing, "linspace" */
    for (int kind = SCHED_EULER; kind <= SCHED_EULER_A; kind++) {
        struct sched *s = make(sd15_json, (enum sched_kind)kind, 0, 30, 2);
        CHECK_EQ_INT(sched_num_timesteps(s), 30);
        CHECK(sched_timestep(s, 0) == 999.0f && sched_timestep(s, 29) == 0.0f);
        CHECK_7SF(sched_timestep(s, 1), 964.5517);
        CHECK_7SF(sched_timestep(s, 2), 930.1035);
        CHECK_7SF(sched_timestep(s, 3), 895.6552);
        CHECK_7SF(sched_timestep(s, 28), 34.44828);
        CHECK_7SF(sched_sigma(s, 0), 14.61465);
        CHECK_7SF(sched_sigma(s, 1), 11.91756);
        CHECK_7SF(sched_sigma(s, 2), 9.814177);
        CHECK_7SF(sched_sigma(s, 3), 8.158467);
        CHECK_7SF(sched_sigma(s, 28), 0.183457);
        CHECK_7SF(sched_sigma(s, 29), 0.02916753);
        CHECK(sched_sigma(s, 30) == 0.0f);
        CHECK_7SF(sched_init_noise_sigma(s), 14.614645);
        sched_free(s);
    }
    /* SD-Turbo: trailing */
    static const float sig4[] = {14.61465f, 4.081731f, 1.612887f, 0.6932054f, 0.0f};
    static const int t4[] = {999, 749, 499, 249};
    for (int n = 1; n <= 4; n *= 2) {
        struct sched *s = make(turbo_json, SCHED_EULER, 0, n, 2);
        CHECK_EQ_INT(sched_num_timesteps(s), n);
        for (int i = 0; i < n; i++) {
            CHECK(sched_timestep(s, i) == (float)t4[i * 4 / n]);
            CHECK_7SF(sched_sigma(s, i), sig4[i * 4 / n]);
        }
        CHECK(sched_sigma(s, n) == 0.0f);
        CHECK_7SF(sched_init_noise_sigma(s), 14.614645);
        sched_free(s);
    }
}

/* sample = ones, model output at call k = 0.1 (k + 1) everywhere (11.3). */
static void synthetic_run(struct sched *s, float x0, int calls, const double *want,
                          const double *want_in)
{
    float x[2] = {x0, x0}, in[2], mo[2];
    for (int i = 0; i < calls; i++) {
        sched_scale_model_input(s, i, x, in, 2);
        if (want_in)
            CHECK_7SF(in[0], want_in[i]);
        mo[0] = mo[1] = 0.1f * (float)(i + 1);
        sched_step(s, i, mo, x, NULL, 0.0f);
        CHECK_7SF(x[0], want[i]);
        CHECK(x[1] == x[0]);
    }
}

TEST(sched_ref_steps)
{
    struct sched *s = make(sd15_json, SCHED_PNDM, 0, 50, 2);
    synthetic_run(s, 1.0f, 4, (const double[]){1.110527, 1.104364, 1.187963, 1.277496}, NULL);
    sched_free(s);
    s = make(sd15_json, SCHED_DDIM, 0, 50, 2);
    synthetic_run(s, 1.0f, 3, (const double[]){1.110526, 1.218749, 1.324365}, NULL);
    sched_free(s);
    s = make(sd15_json, SCHED_EULER, 0, 30, 2);
    synthetic_run(s, sched_init_noise_sigma(s), 3, (const double[]){14.34494, 13.92426, 13.42755},
                  (const double[]){0.9976673, 1.199465, 1.411482});
    sched_free(s);
    s = make(sd15_json, SCHED_DPMPP_2M, 0, 25, 2);
    synthetic_run(s, 1.0f, 3, (const double[]){1.23784, 1.482202, 1.741767}, NULL);
    sched_free(s);
}

TEST(sched_names)
{
    static const char *const names[] = {"pndm", "ddim", "euler", "euler_a", "dpmpp_2m", "lcm"};
    for (int k = 0; k < SCHED_KIND_COUNT; k++) {
        int karras = -1;
        CHECK(sched_kind_from_name(names[k], &karras) == k && karras == 0);
        CHECK(!strcmp(sched_kind_name((enum sched_kind)k), names[k]));
        CHECK(sched_kind_from_class(sched_class_name((enum sched_kind)k)) == k);
    }
    CHECK(!strcmp(sched_class_name(SCHED_EULER_A), "EulerAncestralDiscreteScheduler"));
    CHECK(!strcmp(sched_class_name(SCHED_DPMPP_2M), "DPMSolverMultistepScheduler"));
    CHECK(sched_kind_from_name("dpmpp_2m_karras", NULL) == SCHED_DPMPP_2M);
    CHECK(sched_kind_from_name("heun", NULL) == SCHED_OTHER);
    CHECK(sched_kind_from_name(NULL, NULL) == SCHED_OTHER);
    CHECK(sched_kind_from_class("UniPCMultistepScheduler") == SCHED_OTHER);
    CHECK(!strcmp(sched_kind_name(SCHED_OTHER), ""));
}

static int parse(struct sched_config *c, const char *json, struct sd_err *err)
{
    memset(err, 0, sizeof *err);
    return sched_config_parse(c, json, strlen(json), "x.json", err);
}

TEST(sched_config_from_config)
{
    struct sched_config m, c;
    struct sd_err err;
    CHECK(parse(&m, sd15_json, &err) == SD_OK);
    CHECK(m.kind == SCHED_PNDM && !strcmp(m.class_name, "PNDMScheduler"));
    CHECK(m.steps_offset == 1 && m.skip_prk_steps && !m.set_alpha_to_one);
    CHECK(!strcmp(m.timestep_spacing, "leading")); /* PNDM's default */
    CHECK(!(m.present & (UINT64_C(1) << SCHED_KEY_TIMESTEP_SPACING)));
    CHECK(m.present & (UINT64_C(1) << SCHED_KEY_STEPS_OFFSET));

    /* from_config: the model's keys the class takes, else its defaults */
    sched_config_derive(&c, &m, SCHED_EULER, 0);
    CHECK(!strcmp(c.timestep_spacing, "linspace") && c.steps_offset == 1);
    CHECK(!strcmp(c.beta_schedule, "scaled_linear") && c.beta_start == 0.00085);
    CHECK(!strcmp(c.class_name, "EulerDiscreteScheduler") && !c.use_karras_sigmas);
    sched_config_derive(&c, &m, SCHED_DDIM, 0);
    CHECK(!strcmp(c.timestep_spacing, "leading"));
    CHECK(!c.clip_sample && !c.set_alpha_to_one); /* the file's values */
    sched_config_derive(&c, &m, SCHED_LCM, 0);
    CHECK(!c.set_alpha_to_one && c.original_inference_steps == 50 &&
          c.timestep_scaling == 10.0);
    sched_config_derive(&c, &m, SCHED_DPMPP_2M, 1);
    CHECK(c.use_karras_sigmas && c.solver_order == 2 && c.lower_order_final &&
          !strcmp(c.algorithm_type, "dpmsolver++") && isinf(c.lambda_min_clipped));
    sched_config_derive(&c, &m, SCHED_PNDM, 1); /* karras only for DPM, Euler */
    CHECK(!c.use_karras_sigmas);

    /* a PNDM config's clip_sample does not reach PNDM, but does reach DDIM */
    CHECK(parse(&m, "{\"_class_name\": \"PNDMScheduler\", \"clip_sample\": true,"
                    " \"skip_prk_steps\": true}", &err) == SD_OK);
    sched_config_derive(&c, &m, SCHED_DDIM, 0);
    CHECK(c.clip_sample && c.set_alpha_to_one); /* DDIM's default set_alpha_to_one */

    /* keys listed in _use_default_values count as absent */
    CHECK(parse(&m, "{\"_class_name\": \"DDIMScheduler\", \"timestep_spacing\": \"leading\","
                    " \"steps_offset\": 1, \"_use_default_values\": [\"timestep_spacing\"]}",
                &err) == SD_OK);
    sched_config_derive(&c, &m, SCHED_EULER_A, 0);
    CHECK(!strcmp(c.timestep_spacing, "linspace") && c.steps_offset == 1);

    /* Python's json writes -inf as -Infinity */
    CHECK(parse(&m, "{\"_class_name\": \"DPMSolverMultistepScheduler\", \"lambda_min_clipped\":"
                    " -Infinity, \"variance_type\": null, \"x\": \"-Infinity\"}", &err) == SD_OK);
    CHECK(isinf(m.lambda_min_clipped) && m.lambda_min_clipped < 0 && !m.variance_type[0]);
}

TEST(sched_config_errors)
{
    struct sched_config m, c;
    struct sd_err err;
    struct sched *s = NULL;
    CHECK(parse(&m, "{\"_class_name\": \"PNDMScheduler\",", &err) == SD_ERR_FORMAT);
    CHECK(strstr(err.msg, "x.json") != NULL);
    CHECK(parse(&m, "[1, 2]", &err) == SD_ERR_FORMAT);
    CHECK(parse(&m, "{\"beta_start\": 0.1}", &err) == SD_ERR_FORMAT); /* no _class_name */
    CHECK(parse(&m, "{\"_class_name\": \"DDIMScheduler\", \"steps_offset\": \"1\"}", &err) ==
          SD_ERR_FORMAT);
    CHECK(strstr(err.msg, "steps_offset") != NULL);
    CHECK(parse(&m, "{\"_class_name\": \"DDIMScheduler\", \"num_train_timesteps\": 0}", &err) ==
          SD_ERR_FORMAT);
    CHECK(parse(&m, "{\"_class_name\": \"DDIMScheduler\", \"clip_sample\": 1}", &err) ==
          SD_ERR_FORMAT);
    CHECK(parse(&m, "{\"_class_name\": \"DDIMScheduler\", \"beta_schedule\":"
                    " \"a_very_long_name_that_is_not_a_schedule\"}", &err) == SD_ERR_FORMAT);
    CHECK(sched_config_load(&m, "tests/data/sched/no-such-file.json", &err) == SD_ERR_IO);

    /* an unknown class loads, cannot run, but can be derived */
    CHECK(parse(&m, "{\"_class_name\": \"UniPCMultistepScheduler\", \"beta_start\": 0.00085,"
                    " \"beta_end\": 0.012, \"beta_schedule\": \"scaled_linear\"}", &err) == SD_OK);
    CHECK(m.kind == SCHED_OTHER);
    CHECK(sched_new(&s, &m, 20, 16, &err) == SD_ERR_UNSUPPORTED && s == NULL);
    CHECK(strstr(err.msg, "UniPCMultistepScheduler") != NULL);
    sched_config_derive(&c, &m, SCHED_EULER, 0);
    CHECK(sched_new(&s, &c, 20, 16, &err) == SD_OK);
    sched_free(s);

    /* options that exist in diffusers but not here */
    static const char *const unsupported[] = {
        "{\"_class_name\": \"DDIMScheduler\", \"trained_betas\": [0.1, 0.2]}",
        "{\"_class_name\": \"DDIMScheduler\", \"thresholding\": true}",
        "{\"_class_name\": \"DDIMScheduler\", \"beta_schedule\": \"sigmoid\"}",
        "{\"_class_name\": \"DDIMScheduler\", \"prediction_type\": \"flow\"}",
        "{\"_class_name\": \"PNDMScheduler\", \"skip_prk_steps\": false}",
        "{\"_class_name\": \"EulerAncestralDiscreteScheduler\", \"prediction_type\": \"sample\"}",
        "{\"_class_name\": \"EulerDiscreteScheduler\", \"interpolation_type\": \"log_linear\"}",
        ("{\"_class_name\": \"DPMSolverMultistepScheduler\","
         " \"algorithm_type\": \"sde-dpmsolver++\"}"),
        "{\"_class_name\": \"DPMSolverMultistepScheduler\", \"solver_order\": 3}",
        "{\"_class_name\": \"DPMSolverMultistepScheduler\", \"algorithm_type\": \"deis\"}",
        "{\"_class_name\": \"DDIMScheduler\", \"timestep_spacing\": \"quadratic\"}",
        "{\"_class_name\": \"DDIMScheduler\", \"steps_offset\": 5000}",
    };
    for (size_t i = 0; i < sizeof unsupported / sizeof unsupported[0]; i++) {
        CHECK(parse(&m, unsupported[i], &err) == SD_OK);
        int rc = sched_new(&s, &m, 10, 16, &err);
        CHECK_MSG(rc == SD_ERR_UNSUPPORTED && s == NULL, "%s -> %d", unsupported[i], rc);
        CHECK(err.msg[0] != 0);
    }

    /* steps and sizes */
    CHECK(parse(&m, sd15_json, &err) == SD_OK);
    CHECK(sched_new(&s, &m, 0, 16, &err) == SD_ERR_ARG);
    CHECK(sched_new(&s, &m, 1001, 16, &err) == SD_ERR_ARG);
    CHECK(sched_new(&s, &m, 10, 0, &err) == SD_ERR_ARG);
    sched_config_derive(&c, &m, SCHED_LCM, 0);
    CHECK(sched_new(&s, &c, 51, 16, &err) == SD_ERR_ARG); /* > original_inference_steps */
    CHECK(sched_new(&s, &c, 50, 16, &err) == SD_OK);
    sched_free(s);
    sched_free(NULL);
}

/* A scheduler_config.json read from disk (the SD-Turbo one). */
TEST(sched_config_load_file)
{
    const char *path = "tests/data/sched/sd-turbo_scheduler_config.json";
    struct sched_config m;
    struct sd_err err = {0};
    CHECK_MSG(sched_config_load(&m, path, &err) == SD_OK, "%s", err.msg);
    CHECK(m.kind == SCHED_EULER && !strcmp(m.timestep_spacing, "trailing"));
    CHECK(!m.has_sigma_min && !m.use_karras_sigmas && m.steps_offset == 1);
    struct sched *s;
    CHECK(sched_new(&s, &m, 1, 16384, &err) == SD_OK);
    CHECK(sched_num_timesteps(s) == 1 && sched_timestep(s, 0) == 999.0f);
    sched_free(s);
}
