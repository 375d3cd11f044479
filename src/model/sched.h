/* sched.h - the diffusers noise schedulers, computed as diffusers does.
 *
 * Supported: PNDMScheduler (PLMS, skip_prk_steps), DDIMScheduler (eta),
 * EulerDiscreteScheduler (optionally Karras sigmas),
 * EulerAncestralDiscreteScheduler, DPMSolverMultistepScheduler (dpmsolver++,
 * order 1 or 2, midpoint or heun; optionally Karras: "DPM++ 2M [Karras]")
 * and LCMScheduler. Every constant and every step is evaluated in float32 in
 * the order diffusers/PyTorch evaluate it, and the numpy float64 parts
 * (np.interp, np.linspace, the Karras ramp, sigma-to-timestep) in double.
 * Integer timesteps are exact. Float results agree with PyTorch up to its
 * transcendental functions: PyTorch's CPU sqrt/log/exp (MKL VML) are not
 * correctly rounded, ours (libm) are, so values may differ by an ulp or so.
 *
 * Typical use (StableDiffusionPipeline's loop):
 *
 *     struct sched_config model, c;
 *     sched_config_load(&model, "sd15/scheduler/scheduler_config.json", &err);
 *     sched_config_derive(&c, &model, SCHED_EULER_A, 0);  // or use `model`
 *     struct sched *s;
 *     sched_new(&s, &c, steps, numel, &err);
 *     tgen_randn(&gen, x, numel);                  // initial latents
 *     for (i = 0; i < numel; i++) x[i] *= sched_init_noise_sigma(s);
 *     for (i = 0; i < sched_num_timesteps(s); i++) {
 *         sched_scale_model_input(s, i, x, in, numel);
 *         eps = unet(in, sched_timestep(s, i));    // after CFG
 *         sched_step(s, i, eps, x, &gen, eta);
 *     }
 *     sched_free(s);
 *
 * Ownership: a struct sched owns all its buffers (allocated in sched_new;
 * the loop allocates nothing). Configs are plain values. Not thread-safe.
 */
#ifndef SD_SCHED_H
#define SD_SCHED_H

#include <stddef.h>
#include <stdint.h>

#include "model/rng.h"
#include "util/err.h"

enum sched_kind {
    SCHED_OTHER = -1, /* a class this module does not implement */
    SCHED_PNDM = 0,
    SCHED_DDIM,
    SCHED_EULER,
    SCHED_EULER_A,
    SCHED_DPMPP_2M,
    SCHED_LCM,
    SCHED_KIND_COUNT
};

/* Keys of scheduler_config.json this module understands. `present` in
 * struct sched_config has bit (1 << key) set for each key the file gave
 * (minus those it lists in "_use_default_values", which diffusers treats as
 * absent). */
enum sched_key {
    SCHED_KEY_NUM_TRAIN_TIMESTEPS,
    SCHED_KEY_BETA_START,
    SCHED_KEY_BETA_END,
    SCHED_KEY_BETA_SCHEDULE,
    SCHED_KEY_TRAINED_BETAS,
    SCHED_KEY_PREDICTION_TYPE,
    SCHED_KEY_TIMESTEP_SPACING,
    SCHED_KEY_STEPS_OFFSET,
    SCHED_KEY_SET_ALPHA_TO_ONE,
    SCHED_KEY_SKIP_PRK_STEPS,
    SCHED_KEY_CLIP_SAMPLE,
    SCHED_KEY_CLIP_SAMPLE_RANGE,
    SCHED_KEY_THRESHOLDING,
    SCHED_KEY_DYNAMIC_THRESHOLDING_RATIO,
    SCHED_KEY_SAMPLE_MAX_VALUE,
    SCHED_KEY_RESCALE_BETAS_ZERO_SNR,
    SCHED_KEY_INTERPOLATION_TYPE,
    SCHED_KEY_USE_KARRAS_SIGMAS,
    SCHED_KEY_USE_EXPONENTIAL_SIGMAS,
    SCHED_KEY_USE_BETA_SIGMAS,
    SCHED_KEY_SIGMA_MIN,
    SCHED_KEY_SIGMA_MAX,
    SCHED_KEY_TIMESTEP_TYPE,
    SCHED_KEY_FINAL_SIGMAS_TYPE,
    SCHED_KEY_SOLVER_ORDER,
    SCHED_KEY_ALGORITHM_TYPE,
    SCHED_KEY_SOLVER_TYPE,
    SCHED_KEY_LOWER_ORDER_FINAL,
    SCHED_KEY_EULER_AT_FINAL,
    SCHED_KEY_USE_LU_LAMBDAS,
    SCHED_KEY_USE_FLOW_SIGMAS,
    SCHED_KEY_FLOW_SHIFT,
    SCHED_KEY_LAMBDA_MIN_CLIPPED,
    SCHED_KEY_VARIANCE_TYPE,
    SCHED_KEY_USE_DYNAMIC_SHIFTING,
    SCHED_KEY_ORIGINAL_INFERENCE_STEPS,
    SCHED_KEY_TIMESTEP_SCALING,
    SCHED_KEY_COUNT
};

#define SCHED_STR_MAX 32 /* string values longer than this are rejected */

/* One scheduler class's __init__ arguments. String-valued options keep the
 * text of the file; sched_new checks them (as diffusers checks them when the
 * scheduler is built or stepped), so a config with an option this module
 * cannot run still loads and can be derived into another class. */
struct sched_config {
    enum sched_kind kind;
    char class_name[64];           /* "_class_name", e.g. "PNDMScheduler" */
    int num_train_timesteps;
    double beta_start, beta_end;   /* Python floats */
    char beta_schedule[SCHED_STR_MAX];    /* linear, scaled_linear, squaredcos_cap_v2 */
    int trained_betas;             /* non-null trained_betas given: unsupported */
    char prediction_type[SCHED_STR_MAX];  /* epsilon, v_prediction, sample */
    char timestep_spacing[SCHED_STR_MAX]; /* linspace, leading, trailing */
    int steps_offset;
    int set_alpha_to_one;
    int skip_prk_steps;
    int clip_sample;
    double clip_sample_range;
    int thresholding;              /* unsupported when set */
    double dynamic_thresholding_ratio, sample_max_value;
    int rescale_betas_zero_snr;
    char interpolation_type[SCHED_STR_MAX]; /* Euler: linear */
    int use_karras_sigmas;
    int use_exponential_sigmas, use_beta_sigmas; /* unsupported when set */
    int has_sigma_min, has_sigma_max; /* non-null sigma_min / sigma_max */
    double sigma_min, sigma_max;
    char timestep_type[SCHED_STR_MAX];    /* Euler: discrete, continuous */
    char final_sigmas_type[SCHED_STR_MAX];/* zero, sigma_min */
    int solver_order;              /* DPM: 1 or 2 */
    char algorithm_type[SCHED_STR_MAX];   /* DPM: dpmsolver++ (deis: the same) */
    char solver_type[SCHED_STR_MAX];      /* DPM: midpoint, heun */
    int lower_order_final, euler_at_final;
    int use_lu_lambdas, use_flow_sigmas;  /* unsupported when set */
    double flow_shift;
    double lambda_min_clipped;     /* -inf by default */
    char variance_type[SCHED_STR_MAX];    /* "" for null; others unsupported */
    int use_dynamic_shifting;
    int original_inference_steps;  /* LCM */
    double timestep_scaling;       /* LCM */
    uint64_t present;              /* bit (1 << enum sched_key): key given */
};

/* ---- names ------------------------------------------------------------ */

/* Public API names: "pndm", "ddim", "euler", "euler_a", "dpmpp_2m",
 * "dpmpp_2m_karras", "lcm". Returns the kind (and sets *karras to 1 for
 * "dpmpp_2m_karras", else 0; karras may be NULL) or SCHED_OTHER. */
enum sched_kind sched_kind_from_name(const char *name, int *karras);
/* "pndm", "ddim", "euler", "euler_a", "dpmpp_2m", "lcm"; "" for others. */
const char *sched_kind_name(enum sched_kind kind);
/* "PNDMScheduler", ... "LCMScheduler" <-> kind; SCHED_OTHER if unknown. */
enum sched_kind sched_kind_from_class(const char *class_name);
const char *sched_class_name(enum sched_kind kind);

/* ---- configuration ---------------------------------------------------- */

/* The __init__ defaults of `kind`'s class (present = 0). */
void sched_config_defaults(struct sched_config *c, enum sched_kind kind);

/* Parse a diffusers scheduler_config.json. Any "_class_name" is accepted:
 * an unknown class loads as kind SCHED_OTHER (sched_new then refuses it with
 * SD_ERR_UNSUPPORTED naming the class, but it can still be derived into a
 * supported class, as diffusers' from_config allows). Missing keys take the
 * class defaults; unknown keys are ignored. SD_ERR_IO if unreadable,
 * SD_ERR_FORMAT for bad JSON, a key of the wrong type or a value out of
 * range (message names the file and the key). */
int sched_config_load(struct sched_config *c, const char *path, struct sd_err *err);
/* The same from memory; `name` is used in messages (e.g. the path). */
int sched_config_parse(struct sched_config *c, const char *json, size_t len,
                       const char *name, struct sd_err *err);

/* out = the config `kind`'s class gets from OtherClass.from_config(model):
 * that class's defaults, overridden by every key the model's config gave and
 * the class accepts. karras != 0 forces use_karras_sigmas (DPM++ 2M and
 * Euler, like from_config(..., use_karras_sigmas=True)). */
void sched_config_derive(struct sched_config *out, const struct sched_config *model,
                         enum sched_kind kind, int karras);

/* ---- one generation --------------------------------------------------- */

struct sched;

/* Build the scheduler and call set_timesteps(num_inference_steps), for
 * latents of `numel` floats. SD_ERR_UNSUPPORTED (message names the option)
 * for a class or option this module does not implement or that diffusers
 * rejects; SD_ERR_ARG for steps outside 1..num_train_timesteps (LCM:
 * 1..original_inference_steps) or numel 0; SD_ERR_NOMEM. */
int sched_new(struct sched **out, const struct sched_config *c, int num_inference_steps,
              size_t numel, struct sd_err *err);
void sched_free(struct sched *s);

/* Image-to-image: run only timesteps[t_start:] (diffusers' get_timesteps
 * with set_begin_index(t_start * order); every class here has order 1).
 * Loop index 0 is then timesteps[t_start]; call before the first step.
 * SD_ERR_ARG when no timestep would be left. */
int sched_start(struct sched *s, int t_start, struct sd_err *err);

/* The batch entries' own generators (n of them, dividing numel): the
 * steps that draw noise draw each entry's part from its generator, as
 * diffusers does when the pipeline gets a list of generators. The array
 * must outlive the scheduler. */
void sched_set_generators(struct sched *s, struct torch_gen **gens, int n);

/* out = scheduler.add_noise(orig, noise, timesteps[i]) for loop index i
 * (after sched_start's cut): alphas (sqrt(ac) x + sqrt(1 - ac) noise) or
 * sigmas (x + sigma noise; DPM: alpha_t x + sigma_t noise) as the class
 * does it. out may alias orig. */
void sched_add_noise(const struct sched *s, int i, const float *orig, const float *noise, float *out,
                     size_t n);

/* Loop length: len(scheduler.timesteps); n + 1 for PNDM (n >= 2). */
int sched_num_timesteps(const struct sched *s);
/* scheduler.timesteps[i], the value the UNet gets at loop index i. */
float sched_timestep(const struct sched *s, int i);
/* scheduler.sigmas (Euler, Euler a, DPM: len + 1 values; 0 for others). */
int sched_num_sigmas(const struct sched *s);
float sched_sigma(const struct sched *s, int i);
/* Multiply the initial latents (randn) by this. */
float sched_init_noise_sigma(const struct sched *s);

/* out = scheduler.scale_model_input(x, t_i); out may alias x. */
void sched_scale_model_input(const struct sched *s, int i, const float *x, float *out,
                             size_t n);

/* x <- scheduler.step(model_out, t_i, x).prev_sample, in place, for loop
 * index i (calls must come in order i = 0, 1, ...). gen is the pipeline's
 * generator: Euler a, DDIM with eta > 0 and LCM draw randn(numel) from it
 * exactly when diffusers does (it may be NULL for the others). eta is
 * DDIM's (ignored by the others). */
void sched_step(struct sched *s, int i, const float *model_out, float *x,
                struct torch_gen *gen, float eta);

#endif
