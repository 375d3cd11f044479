/* sched_config.c - scheduler names, class defaults, scheduler_config.json
 * parsing and diffusers' from_config derivation (see sched.h).
 */
#include "model/sched.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- names ------------------------------------------------------------- */

static const struct {
    const char *name, *class_name;
} kinds[SCHED_KIND_COUNT] = {
    [SCHED_PNDM] = {"pndm", "PNDMScheduler"},
    [SCHED_DDIM] = {"ddim", "DDIMScheduler"},
    [SCHED_EULER] = {"euler", "EulerDiscreteScheduler"},
    [SCHED_EULER_A] = {"euler_a", "EulerAncestralDiscreteScheduler"},
    [SCHED_DPMPP_2M] = {"dpmpp_2m", "DPMSolverMultistepScheduler"},
    [SCHED_LCM] = {"lcm", "LCMScheduler"},
};

enum sched_kind sched_kind_from_name(const char *name, int *karras)
{
    if (karras)
        *karras = 0;
    if (!name)
        return SCHED_OTHER;
    if (!strcmp(name, "dpmpp_2m_karras")) {
        if (karras)
            *karras = 1;
        return SCHED_DPMPP_2M;
    }
    for (int k = 0; k < SCHED_KIND_COUNT; k++)
        if (!strcmp(name, kinds[k].name))
            return (enum sched_kind)k;
    return SCHED_OTHER;
}

const char *sched_kind_name(enum sched_kind kind)
{
    return kind >= 0 && kind < SCHED_KIND_COUNT ? kinds[kind].name : "";
}

enum sched_kind sched_kind_from_class(const char *class_name)
{
    for (int k = 0; class_name && k < SCHED_KIND_COUNT; k++)
        if (!strcmp(class_name, kinds[k].class_name))
            return (enum sched_kind)k;
    return SCHED_OTHER;
}

const char *sched_class_name(enum sched_kind kind)
{
    return kind >= 0 && kind < SCHED_KIND_COUNT ? kinds[kind].class_name : "";
}

/* ---- which keys each class's __init__ takes ----------------------------- */

#define K(x) (UINT64_C(1) << SCHED_KEY_##x)

static uint64_t accepted_keys(enum sched_kind kind)
{
    const uint64_t common = K(NUM_TRAIN_TIMESTEPS) | K(BETA_START) | K(BETA_END) |
                            K(BETA_SCHEDULE) | K(TRAINED_BETAS) | K(PREDICTION_TYPE) |
                            K(TIMESTEP_SPACING) | K(STEPS_OFFSET);
    const uint64_t thresh = K(THRESHOLDING) | K(DYNAMIC_THRESHOLDING_RATIO) |
                            K(SAMPLE_MAX_VALUE);
    switch (kind) {
    case SCHED_PNDM:
        return common | K(SKIP_PRK_STEPS) | K(SET_ALPHA_TO_ONE);
    case SCHED_DDIM:
        return common | thresh | K(CLIP_SAMPLE) | K(CLIP_SAMPLE_RANGE) | K(SET_ALPHA_TO_ONE) |
               K(RESCALE_BETAS_ZERO_SNR);
    case SCHED_EULER:
        return common | K(INTERPOLATION_TYPE) | K(USE_KARRAS_SIGMAS) |
               K(USE_EXPONENTIAL_SIGMAS) | K(USE_BETA_SIGMAS) | K(SIGMA_MIN) | K(SIGMA_MAX) |
               K(TIMESTEP_TYPE) | K(RESCALE_BETAS_ZERO_SNR) | K(FINAL_SIGMAS_TYPE);
    case SCHED_EULER_A:
        return common | K(RESCALE_BETAS_ZERO_SNR);
    case SCHED_DPMPP_2M:
        return common | thresh | K(SOLVER_ORDER) | K(ALGORITHM_TYPE) | K(SOLVER_TYPE) |
               K(LOWER_ORDER_FINAL) | K(EULER_AT_FINAL) | K(USE_KARRAS_SIGMAS) |
               K(USE_EXPONENTIAL_SIGMAS) | K(USE_BETA_SIGMAS) | K(USE_LU_LAMBDAS) |
               K(USE_FLOW_SIGMAS) | K(FLOW_SHIFT) | K(FINAL_SIGMAS_TYPE) |
               K(LAMBDA_MIN_CLIPPED) | K(VARIANCE_TYPE) | K(RESCALE_BETAS_ZERO_SNR) |
               K(USE_DYNAMIC_SHIFTING);
    case SCHED_LCM:
        return common | thresh | K(ORIGINAL_INFERENCE_STEPS) | K(CLIP_SAMPLE) |
               K(CLIP_SAMPLE_RANGE) | K(SET_ALPHA_TO_ONE) | K(TIMESTEP_SCALING) |
               K(RESCALE_BETAS_ZERO_SNR);
    default:
        return 0;
    }
}

/* ---- defaults ---------------------------------------------------------- */

static void set_str(char *dst, const char *src)
{
    snprintf(dst, SCHED_STR_MAX, "%s", src);
}

void sched_config_defaults(struct sched_config *c, enum sched_kind kind)
{
    memset(c, 0, sizeof *c);
    c->kind = kind;
    snprintf(c->class_name, sizeof c->class_name, "%s", sched_class_name(kind));
    /* the values shared by most classes' __init__ */
    c->num_train_timesteps = 1000;
    c->beta_start = 0.0001;
    c->beta_end = 0.02;
    set_str(c->beta_schedule, "linear");
    set_str(c->prediction_type, "epsilon");
    set_str(c->timestep_spacing, "leading");
    c->clip_sample_range = 1.0;
    c->dynamic_thresholding_ratio = 0.995;
    c->sample_max_value = 1.0;
    set_str(c->interpolation_type, "linear");
    set_str(c->timestep_type, "discrete");
    set_str(c->final_sigmas_type, "zero");
    c->solver_order = 2;
    set_str(c->algorithm_type, "dpmsolver++");
    set_str(c->solver_type, "midpoint");
    c->lower_order_final = 1;
    c->flow_shift = 1.0;
    c->lambda_min_clipped = -INFINITY;
    c->original_inference_steps = 50;
    c->timestep_scaling = 10.0;
    /* and where the classes differ */
    switch (kind) {
    case SCHED_DDIM:
        c->clip_sample = 1;
        c->set_alpha_to_one = 1;
        break;
    case SCHED_EULER:
    case SCHED_EULER_A:
    case SCHED_DPMPP_2M:
        set_str(c->timestep_spacing, "linspace");
        break;
    case SCHED_LCM:
        c->beta_start = 0.00085;
        c->beta_end = 0.012;
        set_str(c->beta_schedule, "scaled_linear");
        c->set_alpha_to_one = 1;
        break;
    default:
        break;
    }
}

/* ---- parsing ----------------------------------------------------------- */

enum vtype { V_INT, V_NUM, V_NUM_NULL, V_BOOL, V_STR, V_STR_NULL, V_ARRAY_NULL };

/* Key table: JSON name, key id, value type, field offset. */
#define F(field) offsetof(struct sched_config, field)
static const struct {
    const char *json;
    enum sched_key key;
    enum vtype type;
    size_t off;
    size_t has_off; /* for nullable numbers: the has_* flag */
} keys[] = {
    {"num_train_timesteps", SCHED_KEY_NUM_TRAIN_TIMESTEPS, V_INT, F(num_train_timesteps), 0},
    {"beta_start", SCHED_KEY_BETA_START, V_NUM, F(beta_start), 0},
    {"beta_end", SCHED_KEY_BETA_END, V_NUM, F(beta_end), 0},
    {"beta_schedule", SCHED_KEY_BETA_SCHEDULE, V_STR, F(beta_schedule), 0},
    {"trained_betas", SCHED_KEY_TRAINED_BETAS, V_ARRAY_NULL, F(trained_betas), 0},
    {"prediction_type", SCHED_KEY_PREDICTION_TYPE, V_STR, F(prediction_type), 0},
    {"timestep_spacing", SCHED_KEY_TIMESTEP_SPACING, V_STR, F(timestep_spacing), 0},
    {"steps_offset", SCHED_KEY_STEPS_OFFSET, V_INT, F(steps_offset), 0},
    {"set_alpha_to_one", SCHED_KEY_SET_ALPHA_TO_ONE, V_BOOL, F(set_alpha_to_one), 0},
    {"skip_prk_steps", SCHED_KEY_SKIP_PRK_STEPS, V_BOOL, F(skip_prk_steps), 0},
    {"clip_sample", SCHED_KEY_CLIP_SAMPLE, V_BOOL, F(clip_sample), 0},
    {"clip_sample_range", SCHED_KEY_CLIP_SAMPLE_RANGE, V_NUM, F(clip_sample_range), 0},
    {"thresholding", SCHED_KEY_THRESHOLDING, V_BOOL, F(thresholding), 0},
    {"dynamic_thresholding_ratio", SCHED_KEY_DYNAMIC_THRESHOLDING_RATIO, V_NUM,
     F(dynamic_thresholding_ratio), 0},
    {"sample_max_value", SCHED_KEY_SAMPLE_MAX_VALUE, V_NUM, F(sample_max_value), 0},
    {"rescale_betas_zero_snr", SCHED_KEY_RESCALE_BETAS_ZERO_SNR, V_BOOL,
     F(rescale_betas_zero_snr), 0},
    {"interpolation_type", SCHED_KEY_INTERPOLATION_TYPE, V_STR, F(interpolation_type), 0},
    {"use_karras_sigmas", SCHED_KEY_USE_KARRAS_SIGMAS, V_BOOL, F(use_karras_sigmas), 0},
    {"use_exponential_sigmas", SCHED_KEY_USE_EXPONENTIAL_SIGMAS, V_BOOL,
     F(use_exponential_sigmas), 0},
    {"use_beta_sigmas", SCHED_KEY_USE_BETA_SIGMAS, V_BOOL, F(use_beta_sigmas), 0},
    {"sigma_min", SCHED_KEY_SIGMA_MIN, V_NUM_NULL, F(sigma_min), F(has_sigma_min)},
    {"sigma_max", SCHED_KEY_SIGMA_MAX, V_NUM_NULL, F(sigma_max), F(has_sigma_max)},
    {"timestep_type", SCHED_KEY_TIMESTEP_TYPE, V_STR, F(timestep_type), 0},
    {"final_sigmas_type", SCHED_KEY_FINAL_SIGMAS_TYPE, V_STR, F(final_sigmas_type), 0},
    {"solver_order", SCHED_KEY_SOLVER_ORDER, V_INT, F(solver_order), 0},
    {"algorithm_type", SCHED_KEY_ALGORITHM_TYPE, V_STR, F(algorithm_type), 0},
    {"solver_type", SCHED_KEY_SOLVER_TYPE, V_STR, F(solver_type), 0},
    {"lower_order_final", SCHED_KEY_LOWER_ORDER_FINAL, V_BOOL, F(lower_order_final), 0},
    {"euler_at_final", SCHED_KEY_EULER_AT_FINAL, V_BOOL, F(euler_at_final), 0},
    {"use_lu_lambdas", SCHED_KEY_USE_LU_LAMBDAS, V_BOOL, F(use_lu_lambdas), 0},
    {"use_flow_sigmas", SCHED_KEY_USE_FLOW_SIGMAS, V_BOOL, F(use_flow_sigmas), 0},
    {"flow_shift", SCHED_KEY_FLOW_SHIFT, V_NUM, F(flow_shift), 0},
    {"lambda_min_clipped", SCHED_KEY_LAMBDA_MIN_CLIPPED, V_NUM, F(lambda_min_clipped), 0},
    {"variance_type", SCHED_KEY_VARIANCE_TYPE, V_STR_NULL, F(variance_type), 0},
    {"use_dynamic_shifting", SCHED_KEY_USE_DYNAMIC_SHIFTING, V_BOOL, F(use_dynamic_shifting),
     0},
    {"original_inference_steps", SCHED_KEY_ORIGINAL_INFERENCE_STEPS, V_INT,
     F(original_inference_steps), 0},
    {"timestep_scaling", SCHED_KEY_TIMESTEP_SCALING, V_NUM, F(timestep_scaling), 0},
};

/* Python's json writes -inf (DPM's lambda_min_clipped default) as the bare
 * token -Infinity, which strict JSON parsers reject. Quote Infinity,
 * -Infinity and NaN outside strings so that jansson reads them as strings;
 * number_value() then accepts those three strings. Returns a new buffer. */
static char *quote_nonfinite(const char *s, size_t len, size_t *out_len)
{
    static const char *const toks[] = {"-Infinity", "Infinity", "NaN"};
    char *o = malloc(len + len / 3 * 2 + 1); /* each token grows by 2 */
    if (!o)
        return NULL;
    size_t j = 0;
    int in_str = 0;
    for (size_t i = 0; i < len;) {
        char ch = s[i];
        if (in_str) {
            o[j++] = s[i++];
            if (ch == '\\' && i < len)
                o[j++] = s[i++];
            else if (ch == '"')
                in_str = 0;
            continue;
        }
        if (ch == '"')
            in_str = 1;
        size_t t;
        for (t = 0; t < 3; t++) {
            size_t tl = strlen(toks[t]);
            if (len - i >= tl && !memcmp(s + i, toks[t], tl)) {
                o[j++] = '"';
                memcpy(o + j, toks[t], tl);
                j += tl;
                o[j++] = '"';
                i += tl;
                break;
            }
        }
        if (t == 3)
            o[j++] = s[i++];
    }
    o[j] = 0;
    *out_len = j;
    return o;
}

static int number_value(const json_t *v, double *out)
{
    if (json_is_number(v)) {
        *out = json_number_value(v);
        return 1;
    }
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        if (!strcmp(s, "Infinity") || !strcmp(s, "-Infinity") || !strcmp(s, "NaN")) {
            *out = !strcmp(s, "NaN") ? NAN : s[0] == '-' ? -INFINITY : INFINITY;
            return 1;
        }
    }
    return 0;
}

/* Store one key's value; on a type error fill err and return its code. */
static int parse_key(struct sched_config *c, int k, const json_t *v, const char *name,
                     struct sd_err *err)
{
    char *base = (char *)c;
    const char *key = keys[k].json;
    switch (keys[k].type) {
    case V_INT: {
        json_int_t i = json_is_integer(v) ? json_integer_value(v) : 0;
        if (!json_is_integer(v) || i < -1000000 || i > 1000000)
            return sd_errf(err, SD_ERR_FORMAT, "%s: %s must be an integer in "
                           "[-1000000, 1000000]", name, key);
        *(int *)(base + keys[k].off) = (int)i;
        return SD_OK;
    }
    case V_NUM_NULL:
        if (json_is_null(v)) {
            *(int *)(base + keys[k].has_off) = 0;
            return SD_OK;
        }
        *(int *)(base + keys[k].has_off) = 1;
        /* fall through */
    case V_NUM:
        if (!number_value(v, (double *)(base + keys[k].off)))
            return sd_errf(err, SD_ERR_FORMAT, "%s: %s must be a number", name, key);
        return SD_OK;
    case V_BOOL:
        if (!json_is_boolean(v) && !json_is_null(v))
            return sd_errf(err, SD_ERR_FORMAT, "%s: %s must be true or false", name, key);
        *(int *)(base + keys[k].off) = json_is_true(v);
        return SD_OK;
    case V_STR_NULL:
        if (json_is_null(v)) {
            *(base + keys[k].off) = 0;
            return SD_OK;
        }
        /* fall through */
    case V_STR:
        if (!json_is_string(v) || json_string_length(v) >= SCHED_STR_MAX)
            return sd_errf(err, SD_ERR_FORMAT, "%s: %s must be a string of at most %d bytes",
                           name, key, SCHED_STR_MAX - 1);
        set_str(base + keys[k].off, json_string_value(v));
        return SD_OK;
    case V_ARRAY_NULL:
        if (!json_is_null(v) && !json_is_array(v))
            return sd_errf(err, SD_ERR_FORMAT, "%s: %s must be a list or null", name, key);
        *(int *)(base + keys[k].off) = json_is_array(v);
        return SD_OK;
    }
    return SD_OK;
}

static int listed(const json_t *arr, const char *key)
{
    size_t i;
    const json_t *v;
    json_array_foreach(arr, i, v)
    {
        if (json_is_string(v) && !strcmp(json_string_value(v), key))
            return 1;
    }
    return 0;
}

/* Range checks that keep later arithmetic sane (lengths, divisions). */
static int check_ranges(const struct sched_config *c, const char *name, struct sd_err *err)
{
    if (c->num_train_timesteps < 2 || c->num_train_timesteps > 100000)
        return sd_errf(err, SD_ERR_FORMAT, "%s: num_train_timesteps must be in [2, 100000]",
                       name);
    if (!isfinite(c->beta_start) || !isfinite(c->beta_end))
        return sd_errf(err, SD_ERR_FORMAT, "%s: beta_start and beta_end must be finite", name);
    if (c->original_inference_steps < 1)
        return sd_errf(err, SD_ERR_FORMAT, "%s: original_inference_steps must be >= 1", name);
    if (c->solver_order < 1)
        return sd_errf(err, SD_ERR_FORMAT, "%s: solver_order must be >= 1", name);
    if (!isfinite(c->clip_sample_range) || !isfinite(c->timestep_scaling))
        return sd_errf(err, SD_ERR_FORMAT, "%s: clip_sample_range and timestep_scaling must "
                       "be finite", name);
    if ((c->has_sigma_min && !(c->sigma_min > 0 && isfinite(c->sigma_min))) ||
        (c->has_sigma_max && !(c->sigma_max > 0 && isfinite(c->sigma_max))))
        return sd_errf(err, SD_ERR_FORMAT, "%s: sigma_min and sigma_max must be positive",
                       name);
    if (isnan(c->lambda_min_clipped))
        return sd_errf(err, SD_ERR_FORMAT, "%s: lambda_min_clipped is NaN", name);
    return SD_OK;
}

static int parse_root(struct sched_config *c, const json_t *root, const char *name,
                      struct sd_err *err)
{
    if (!json_is_object(root))
        return sd_errf(err, SD_ERR_FORMAT, "%s: not a JSON object", name);
    const json_t *cls = json_object_get(root, "_class_name");
    if (!json_is_string(cls))
        return sd_errf(err, SD_ERR_FORMAT, "%s: _class_name must be a string", name);
    const char *cn = json_string_value(cls);
    sched_config_defaults(c, sched_kind_from_class(cn));
    if (strlen(cn) >= sizeof c->class_name)
        return sd_errf(err, SD_ERR_FORMAT, "%s: _class_name is too long", name);
    snprintf(c->class_name, sizeof c->class_name, "%s", cn);

    const json_t *defaults = json_object_get(root, "_use_default_values");
    if (defaults && !json_is_array(defaults))
        return sd_errf(err, SD_ERR_FORMAT, "%s: _use_default_values must be a list", name);
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
        const json_t *v = json_object_get(root, keys[k].json);
        if (!v || (defaults && listed(defaults, keys[k].json)))
            continue; /* absent: the class default */
        int rc = parse_key(c, (int)k, v, name, err);
        if (rc)
            return rc;
        c->present |= UINT64_C(1) << keys[k].key;
    }
    return check_ranges(c, name, err);
}

int sched_config_parse(struct sched_config *c, const char *json, size_t len, const char *name,
                       struct sd_err *err)
{
    if (!name)
        name = "scheduler config";
    size_t qlen;
    char *q = quote_nonfinite(json, len, &qlen);
    if (!q)
        return sd_errf(err, SD_ERR_NOMEM, "%s: out of memory", name);
    json_error_t jerr;
    json_t *root = json_loadb(q, qlen, 0, &jerr);
    free(q);
    if (!root)
        return sd_errf(err, SD_ERR_FORMAT, "%s: line %d: %s", name, jerr.line, jerr.text);
    int rc = parse_root(c, root, name, err);
    json_decref(root);
    return rc;
}

int sched_config_load(struct sched_config *c, const char *path, struct sd_err *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return sd_errf(err, SD_ERR_IO, "%s: %s", path, strerror(errno));
    /* a scheduler config is a few hundred bytes; 1 MiB is plenty */
    enum { MAX = 1 << 20 };
    char *buf = malloc(MAX);
    if (!buf) {
        fclose(f);
        return sd_errf(err, SD_ERR_NOMEM, "%s: out of memory", path);
    }
    size_t n = fread(buf, 1, MAX, f);
    int bad = ferror(f), big = n == MAX;
    fclose(f);
    int rc;
    if (bad)
        rc = sd_errf(err, SD_ERR_IO, "%s: read error", path);
    else if (big)
        rc = sd_errf(err, SD_ERR_FORMAT, "%s: larger than 1 MiB", path);
    else
        rc = sched_config_parse(c, buf, n, path, err);
    free(buf);
    return rc;
}

/* ---- from_config -------------------------------------------------------- */

/* Copy one key's value (every field the key owns) from src to dst. */
static void copy_key(struct sched_config *dst, const struct sched_config *src, int k)
{
    char *d = (char *)dst;
    const char *s = (const char *)src;
    size_t size = keys[k].type == V_NUM || keys[k].type == V_NUM_NULL ? sizeof(double)
                  : keys[k].type == V_STR || keys[k].type == V_STR_NULL ? SCHED_STR_MAX
                                                                        : sizeof(int);
    memcpy(d + keys[k].off, s + keys[k].off, size);
    if (keys[k].type == V_NUM_NULL)
        memcpy(d + keys[k].has_off, s + keys[k].has_off, sizeof(int));
}

void sched_config_derive(struct sched_config *out, const struct sched_config *model,
                         enum sched_kind kind, int karras)
{
    sched_config_defaults(out, kind);
    uint64_t take = accepted_keys(kind);
    /* from_config also stores the keys a class does not take in its config
     * ("hidden" keys), and DPMSolverMultistep's Karras code reads sigma_min
     * and sigma_max from there when they are set */
    if (kind == SCHED_DPMPP_2M)
        take |= K(SIGMA_MIN) | K(SIGMA_MAX);
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
        uint64_t bit = UINT64_C(1) << keys[k].key;
        if ((model->present & bit) && (take & bit)) {
            copy_key(out, model, (int)k);
            out->present |= bit;
        }
    }
    if (karras && (kind == SCHED_DPMPP_2M || kind == SCHED_EULER)) {
        out->use_karras_sigmas = 1;
        out->present |= K(USE_KARRAS_SIGMAS);
    }
}
