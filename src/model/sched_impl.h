/* sched_impl.h - private to src/model/sched*.c: the scheduler state and the
 * PyTorch/numpy arithmetic helpers the scheduler families share.
 *
 * Numeric conventions (see sd-reference.md section 6 and sched.h):
 *   - float   = a float32 torch tensor value (one rounding per operation;
 *               these files are compiled with -ffp-contract=off);
 *   - double  = a numpy float64 or Python float value;
 *   - "t ** 0.5" is sqrtf, "t ** 2" is t * t, "s / t" with a Python scalar s
 *     is PyTorch's reciprocal(t) * s (two roundings).
 */
#ifndef SD_SCHED_IMPL_H
#define SD_SCHED_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "model/sched.h"

enum sched_pred { PRED_EPSILON, PRED_V, PRED_SAMPLE };
enum sched_spacing { SPACING_LINSPACE, SPACING_LEADING, SPACING_TRAILING };

#define SCHED_MAX_ORDER 4 /* PLMS keeps 4 model outputs, DPM++ 2M two */

struct sched {
    struct sched_config cfg;
    enum sched_pred pred;
    enum sched_spacing spacing;
    int n_train;               /* num_train_timesteps */
    float *alphas_cumprod;     /* [n_train] */
    float final_alpha_cumprod;
    float *train_sigmas;       /* [n_train] ((1 - ac) / ac) ** 0.5 */

    int steps;                 /* num_inference_steps as asked */
    int len;                   /* len(timesteps): the loop length */
    int64_t *tint;             /* [len] integer timesteps (not Euler) */
    float *ts;                 /* [len] the timesteps as the UNet gets them */
    float *sigmas;             /* [len + 1] Euler, Euler a, DPM; else NULL */
    int nsigmas;
    float init_noise_sigma;
    int begin;                 /* step index at loop index 0 */
    int start;                 /* sched_start: loop index 0 is timesteps[start] (image-to-image) */
    struct torch_gen **gens;   /* sched_set_generators: one per batch entry, or NULL */
    int n_gens;

    size_t numel;
    int calls;                 /* sched_step calls so far */
    float *hist[SCHED_MAX_ORDER]; /* PLMS ets / DPM model_outputs, oldest first */
    int nhist;
    float *cur_sample;         /* PLMS */
    int lower_order_nums;      /* DPM */
    float *noise;              /* [numel] per-step randn */
    float *work;               /* [numel] scratch */
};

/* One family's set_timesteps and step (rows of the table in sched.c). */
struct sched_family {
    int (*set_timesteps)(struct sched *s, struct sd_err *err);
    void (*step)(struct sched *s, int i, const float *mo, float *x, struct torch_gen *gen,
                 float eta);
    int history;    /* buffers of numel floats for hist[] */
    int cur_sample; /* needs cur_sample */
};

extern const struct sched_family sched_pndm_family, sched_ddim_family, sched_euler_family,
    sched_euler_a_family, sched_dpm_family, sched_lcm_family;

/* ---- helpers (sched_math.c) -------------------------------------------- */

/* torch.linspace(start, end, n, dtype=float32) (PyTorch >= 2.0 CPU kernel). */
void sched_torch_linspace(float *out, float start, float end, int n);
/* np.linspace(start, stop, n) (endpoint=True) in float64. */
void sched_np_linspace(double *out, double start, double stop, int n);
/* np.arange(start, stop, step) for float step: number of values, and the
 * values (out may be NULL to get the length). */
long sched_np_arange(double *out, double start, double stop, double step);
/* np.interp(x, [0, 1, ..., n-1], fp) for one x. */
double sched_np_interp(double x, const double *fp, int n);
/* np.log on a float32 array (numpy's own SIMD kernel, not libm). */
float sched_np_logf(float x);
/* round half to even, as np.round / np.rint. */
double sched_np_rint(double x);

/* betas -> alphas_cumprod (float32, product accumulated in double as
 * torch.cumprod does), with rescale_zero_terminal_snr when `rescale`, and
 * then alphas_cumprod[-1] = 2^-24 when also `zero_snr_fixup` (Euler, Euler a,
 * DPM). SD_ERR_UNSUPPORTED for an unknown beta schedule. */
int sched_alphas_cumprod(float *ac, const struct sched_config *c, int rescale,
                         int zero_snr_fixup, struct sd_err *err);

/* PNDM's and DDIM's set_timesteps before reversing: ascending integer
 * timesteps for s->steps and s->spacing, *out malloc'd, *len of them (the
 * steps, except for "trailing" when numpy's arange length rounds up). */
int sched_int_timesteps(struct sched *s, int64_t **out, long *len, struct sd_err *err);
/* Take ownership of tint[len] as s->tint and fill s->ts, s->len. */
int sched_set_int_timesteps(struct sched *s, int64_t *tint, long len, struct sd_err *err);
/* torch.clamp(v, lo, hi). */
float sched_clampf(float v, float lo, float hi);

/* SD_ERR_UNSUPPORTED unless -n_train <= t < n_train (PyTorch indexing). */
int sched_check_t(const struct sched *s, int64_t t, struct sd_err *err);

/* Euler/DPM's _sigma_to_t: a float64 timestep for sigma, interpolating in
 * log space over log_sigmas[n] (float32 np.log of the train sigmas). */
double sched_sigma_to_t(double sigma, const float *log_sigmas, int n);
/* _convert_to_karras: n sigmas from sigma_max down to sigma_min (rho 7). */
void sched_karras(double *out, double sigma_min, double sigma_max, int n);

/* alphas_cumprod[t] with PyTorch's negative-index wrap (t >= -n_train). */
float sched_ac(const struct sched *s, int64_t t);

/* The step index of loop index 0: diffusers' index_for_timestep(t0) picks
 * the second match when t0 occurs more than once. */
int sched_begin_index(const struct sched *s);
/* noise[numel] = randn from gen, or from the batch entries' own generators
 * (a contiguous part each) after sched_set_generators. */
void sched_randn(struct sched *s, struct torch_gen *gen, float *noise);

#endif
