#!/usr/bin/env python3
"""gen_sched_ref.py - reference data for tests/unit/test_sched.c and test_rng.c.

Runs the installed diffusers schedulers (and torch's CPU generator) the way
StableDiffusionPipeline runs them and writes what the C port must reproduce:

  tests/data/sched/ref.json          scheduler cases (see below)
  tests/data/torch-randn/seq.json    torch.randn call sequences on one generator

A scheduler case: a model's scheduler_config.json (text), the scheduler class
the pipeline would build from it (OtherScheduler.from_config(model.config)
where model is the config's own class loaded from it; use_karras_sigmas=True
for the Karras variants), num_inference_steps, a
latent shape and a seed. Recorded: the derived config, timesteps, sigmas,
init_noise_sigma, the scale_model_input factor per step (the scaled value
of 1.0) and the latents after every step of this loop:

    gen = torch.Generator("cpu").manual_seed(seed)
    x = randn_tensor(shape, generator=gen) * scheduler.init_noise_sigma
    for i, t in enumerate(scheduler.timesteps):
        inp = scheduler.scale_model_input(x, t)
        eps = 0.25 * inp + S[i]                  # synthetic "UNet"
        x = scheduler.step(eps, t, x, **extra).prev_sample

with S[i][k] = float32(math.sin(k * 0.7 + i * 0.1)) (libm sin, the same in C)
and extra = eta/generator where the step accepts them (as the pipeline's
prepare_extra_step_kwargs does). Floats are written with 9 significant
digits (they round-trip float32).

Usage (from the repository root): python3 tools/gen_sched_ref.py
Needs torch, diffusers and numpy; the tests themselves do not.
"""
import inspect
import json
import math
import os
import sys

import numpy as np
import torch
import diffusers
from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                       EulerDiscreteScheduler, LCMScheduler, PNDMScheduler)
from diffusers.utils.torch_utils import randn_tensor

diffusers.utils.logging.set_verbosity_error()  # from_config warns about unused keys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

KINDS = {
    "pndm": PNDMScheduler,
    "ddim": DDIMScheduler,
    "euler": EulerDiscreteScheduler,
    "euler_a": EulerAncestralDiscreteScheduler,
    "dpmpp_2m": DPMSolverMultistepScheduler,
    "lcm": LCMScheduler,
}

SD = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
      "num_train_timesteps": 1000}

# Model scheduler configs (as the files on the Hub look; key order kept).
CONFIGS = {
    # runwayml/stable-diffusion-v1-5 (sd-reference.md 1.2)
    "sd15": {"_class_name": "PNDMScheduler", "_diffusers_version": "0.6.0", **SD,
             "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
             "trained_betas": None, "clip_sample": False},
    # stabilityai/sd-turbo (1.4)
    "turbo": {"_class_name": "EulerDiscreteScheduler", "_diffusers_version": "0.24.0.dev0", **SD,
              "clip_sample": False, "interpolation_type": "linear", "prediction_type": "epsilon",
              "sample_max_value": 1.0, "set_alpha_to_one": False, "sigma_max": None,
              "sigma_min": None, "skip_prk_steps": True, "steps_offset": 1,
              "timestep_spacing": "trailing", "timestep_type": "discrete", "trained_betas": None,
              "use_karras_sigmas": False},
    # a v-prediction model (SD 2.1 768 style)
    "sd21v": {"_class_name": "DDIMScheduler", **SD, "clip_sample": False,
              "prediction_type": "v_prediction", "set_alpha_to_one": False,
              "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None},
    # the SD1.5 config with each spacing / offset 0
    "sd15_linspace": {"_class_name": "PNDMScheduler", **SD, "set_alpha_to_one": False,
                      "skip_prk_steps": True, "steps_offset": 1, "timestep_spacing": "linspace"},
    "sd15_trailing": {"_class_name": "PNDMScheduler", **SD, "set_alpha_to_one": False,
                      "skip_prk_steps": True, "steps_offset": 1, "timestep_spacing": "trailing"},
    "sd15_leading0": {"_class_name": "PNDMScheduler", **SD, "set_alpha_to_one": False,
                      "skip_prk_steps": True, "steps_offset": 0, "timestep_spacing": "leading"},
    # linear betas, DDIM-style clipping (range 0.5), set_alpha_to_one
    "linear_clip": {"_class_name": "DDIMScheduler", "beta_start": 0.0001, "beta_end": 0.02,
                    "beta_schedule": "linear", "num_train_timesteps": 1000, "clip_sample": True,
                    "clip_sample_range": 0.5, "set_alpha_to_one": True, "skip_prk_steps": True,
                    "steps_offset": 0},
    # cosine betas; -Infinity as Python's json writes DPM's default
    "cosine": {"_class_name": "DPMSolverMultistepScheduler", "beta_schedule": "squaredcos_cap_v2",
               "num_train_timesteps": 1000, "algorithm_type": "dpmsolver++",
               "lambda_min_clipped": float("-inf"), "solver_order": 2, "skip_prk_steps": True},
    # zero terminal SNR, v-prediction, trailing
    "zsnr": {"_class_name": "DDIMScheduler", **SD, "rescale_betas_zero_snr": True,
             "prediction_type": "v_prediction", "timestep_spacing": "trailing",
             "steps_offset": 1, "clip_sample": False, "set_alpha_to_one": False,
             "skip_prk_steps": True},
    # x0-prediction
    "sample": {"_class_name": "DDIMScheduler", **SD, "prediction_type": "sample",
               "clip_sample": True, "clip_sample_range": 1.0, "set_alpha_to_one": False,
               "steps_offset": 1},
    # DPM options: heun, no lower_order_final, final sigma = sigma_min
    "dpm_heun": {"_class_name": "DPMSolverMultistepScheduler", **SD, "solver_type": "heun",
                 "lower_order_final": False, "final_sigmas_type": "sigma_min",
                 "lambda_min_clipped": float("-inf"), "solver_order": 2, "steps_offset": 1},
    "dpm_order1": {"_class_name": "DPMSolverMultistepScheduler", **SD, "solver_order": 1,
                   "algorithm_type": "deis", "solver_type": "logrho",
                   "final_sigmas_type": "sigma_min"},
    # diffusers refuses deis with a zero final sigma
    "dpm_deis_zero": {"_class_name": "DPMSolverMultistepScheduler", **SD,
                      "algorithm_type": "deis"},
    # Euler with explicit sigma range, final sigma_min, Karras, leading
    "euler_range": {"_class_name": "EulerDiscreteScheduler", **SD, "sigma_min": 0.1,
                    "sigma_max": 10.0, "final_sigmas_type": "sigma_min",
                    "use_karras_sigmas": True, "timestep_spacing": "leading", "steps_offset": 1},
    # a saved config listing defaults: timestep_spacing counts as absent
    "use_defaults": {"_class_name": "PNDMScheduler", **SD, "set_alpha_to_one": False,
                     "skip_prk_steps": True, "steps_offset": 1, "timestep_spacing": "leading",
                     "_use_default_values": ["timestep_spacing"]},
}

SMALL = [1, 4, 3, 3]   # 36 values: the noise draws exercise the re-drawn tail block
SQUARE = [1, 4, 4, 4]
BATCH2 = [2, 4, 3, 3]

# (config, kind, karras, steps, shape, seed, eta)
CASES = []


def add(cfg, kind, steps_list, karras=False, shape=SMALL, seed=0, eta=0.0):
    for n in steps_list:
        CASES.append((cfg, kind, karras, n, shape, seed + n, eta))


add("sd15", "pndm", [1, 2, 4, 7, 20, 50])
add("sd15", "ddim", [1, 4, 7, 50])
add("sd15", "ddim", [7], eta=0.5, seed=100)
add("sd15", "ddim", [4], eta=1.0, seed=200, shape=BATCH2)
add("sd15", "euler", [1, 4, 7, 30])
add("sd15", "euler", [7, 20], karras=True)
add("sd15", "euler_a", [4, 7, 20], seed=300)
add("sd15", "dpmpp_2m", [1, 2, 4, 7, 20, 25])
add("sd15", "dpmpp_2m", [4, 7, 25], karras=True)
add("sd15", "lcm", [1, 2, 4, 8], seed=400)
add("turbo", "euler", [1, 2, 4], shape=SQUARE)
add("turbo", "euler", [4], karras=True)
add("turbo", "euler_a", [1, 4], seed=500, shape=SQUARE)
add("turbo", "ddim", [4])
add("turbo", "pndm", [4])
add("turbo", "dpmpp_2m", [4])
add("turbo", "dpmpp_2m", [4], karras=True)
add("turbo", "lcm", [4], seed=600)
for kind in ["pndm", "ddim", "euler", "euler_a", "dpmpp_2m"]:
    add("turbo", kind, [61], seed=700)   # numpy's arange gives 62 trailing steps
    add("sd21v", kind, [7], seed=800)
    add("sd15_linspace", kind, [7], seed=900)
    add("sd15_trailing", kind, [7], seed=1000)
    add("sd15_leading0", kind, [7], seed=1100)
add("sd21v", "ddim", [25])
add("sd21v", "dpmpp_2m", [7], karras=True)
add("sd21v", "lcm", [4], seed=1200)
add("linear_clip", "ddim", [10])
add("linear_clip", "pndm", [10])
add("linear_clip", "lcm", [4], seed=1300)
add("cosine", "dpmpp_2m", [10])
add("cosine", "dpmpp_2m", [10], karras=True)   # error: repeated first timestep
add("cosine", "euler", [10], karras=True)
add("cosine", "euler", [10])
add("cosine", "ddim", [10])
add("zsnr", "ddim", [10])
add("zsnr", "euler", [10])
add("zsnr", "euler_a", [10], seed=1400)
add("zsnr", "dpmpp_2m", [10])
add("zsnr", "lcm", [4], seed=1500)
add("sample", "ddim", [7])
add("sample", "euler", [7])
add("sample", "dpmpp_2m", [7])
add("sample", "lcm", [4], seed=1600)
add("dpm_heun", "dpmpp_2m", [20])
add("dpm_heun", "dpmpp_2m", [20], karras=True)
add("dpm_heun", "euler", [7])
add("dpm_order1", "dpmpp_2m", [7])
add("dpm_deis_zero", "dpmpp_2m", [7])     # error in diffusers
add("euler_range", "euler", [8])
add("euler_range", "dpmpp_2m", [8], karras=True)
add("euler_range", "euler_a", [8], seed=1700)
add("use_defaults", "euler", [7])
add("use_defaults", "ddim", [7])

# config keys recorded from the built scheduler (the C test checks its derive)
CONFIG_KEYS = ["num_train_timesteps", "beta_start", "beta_end", "beta_schedule",
               "prediction_type", "timestep_spacing", "steps_offset", "set_alpha_to_one",
               "skip_prk_steps", "clip_sample", "clip_sample_range", "rescale_betas_zero_snr",
               "use_karras_sigmas", "final_sigmas_type", "solver_order", "algorithm_type",
               "solver_type", "lower_order_final", "original_inference_steps",
               "timestep_scaling", "sigma_min", "sigma_max"]


def init_keys(cls, kind):
    """Keys the class's __init__ takes (from_config also stores the others
    as hidden keys; of those only DPM's Karras code reads sigma_min/max)."""
    keys = set(inspect.signature(cls.__init__).parameters)
    if kind == "dpmpp_2m":
        keys |= {"sigma_min", "sigma_max"}
    return keys


def f9(v):
    """A float32 value with 9 significant digits (round-trips); NaN and the
    infinities as the strings "nan", "inf", "-inf" (strict JSON has none)."""
    v = float(np.float32(v))
    if math.isinf(v) or math.isnan(v):
        return str(v)
    return float("%.9g" % v)


def flist(t):
    return [f9(v) for v in np.asarray(t, dtype=np.float32).reshape(-1)]


def synthetic(i, numel):
    return torch.tensor([np.float32(math.sin(k * 0.7 + i * 0.1)) for k in range(numel)],
                        dtype=torch.float32)


class IeeeMath:
    """Within this context float32 sqrt (x ** 0.5, sqrt), log and exp are
    computed in float64 and rounded: correctly rounded, like the C port's
    sqrtf and (float)log((double)x). PyTorch's own (MKL VML) are not, which
    is the only reason the C port's latents differ from diffusers'. A run in
    this context must match the C port bit for bit."""

    def __enter__(self):
        self.saved = (torch.Tensor.__pow__, torch.Tensor.sqrt, torch.sqrt, torch.log, torch.exp)
        pow_, tsqrt, sqrt, log, exp = self.saved

        def is32(t):
            return isinstance(t, torch.Tensor) and t.dtype == torch.float32

        def via64(fn):
            return lambda t, *a, **k: fn(t.double(), *a, **k).float() if is32(t) else fn(t, *a, **k)

        torch.Tensor.__pow__ = lambda t, e: (sqrt(t.double()).float() if is32(t) and e == 0.5
                                             else pow_(t, e))
        torch.Tensor.sqrt = via64(tsqrt)
        torch.sqrt, torch.log, torch.exp = via64(sqrt), via64(log), via64(exp)

    def __exit__(self, *exc):
        (torch.Tensor.__pow__, torch.Tensor.sqrt, torch.sqrt, torch.log,
         torch.exp) = self.saved


def fnv1a(data, h=0xcbf29ce484222325):
    for b in data:
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def run_case(cfg_name, kind, karras, n, shape, seed, eta):
    name = "%s_%s%s_%d" % (cfg_name, kind, "_karras" if karras else "", n)
    try:
        case = run_case_ok(name, cfg_name, kind, karras, n, shape, seed, eta)
        with IeeeMath():
            ieee = run_case_ok(name, cfg_name, kind, karras, n, shape, seed, eta)
        case["ieee_hash"] = "%016x" % ieee["hash"]
        del case["hash"]
        return case
    except (ValueError, IndexError, NotImplementedError) as e:
        # diffusers refuses this combination; the C port must refuse it too
        return {"name": name, "config": cfg_name, "kind": kind, "karras": int(karras),
                "steps": n, "error": "%s: %s" % (type(e).__name__, str(e)[:80])}


def run_case_ok(name, cfg_name, kind, karras, n, shape, seed, eta):
    cls = KINDS[kind]
    kwargs = {"use_karras_sigmas": True} if karras else {}
    # as a pipeline does: load the model's scheduler, then from_config(its config)
    model = getattr(diffusers, CONFIGS[cfg_name]["_class_name"]).from_config(CONFIGS[cfg_name])
    sched = cls.from_config(model.config, **kwargs)
    sched.set_timesteps(n)
    params = set(inspect.signature(sched.step).parameters)
    gen = torch.Generator("cpu").manual_seed(seed)
    extra = {}
    if "eta" in params:
        extra["eta"] = eta
    if "generator" in params:
        extra["generator"] = gen
    x = randn_tensor(tuple(shape), generator=gen, dtype=torch.float32)
    x = x * sched.init_noise_sigma
    numel = x.numel()
    scale, traj = [], []
    # FNV-1a of the float32 bytes of timesteps, sigmas, init_noise_sigma and,
    # per step, the input scale of 1.0 and the latents
    f32 = lambda v: np.asarray(v, dtype=np.float32).tobytes()
    h = fnv1a(f32(sched.timesteps.to(torch.float32)))
    if kind in ("euler", "euler_a", "dpmpp_2m"):
        h = fnv1a(f32(sched.sigmas), h)
    h = fnv1a(f32(float(sched.init_noise_sigma)), h)
    for i, t in enumerate(sched.timesteps):
        one = sched.scale_model_input(torch.ones(1), t)
        inp = sched.scale_model_input(x, t)
        eps = 0.25 * inp + synthetic(i, numel).reshape(x.shape)
        x = sched.step(eps, t, x, **extra).prev_sample
        scale.append(f9(one.item()))
        traj.append(flist(x))
        h = fnv1a(f32(x), fnv1a(f32(one), h))
    case = {
        "name": name, "config": cfg_name, "kind": kind, "karras": int(karras), "steps": n,
        "shape": shape, "seed": seed, "eta": eta,
        "derived": {k: sched.config.get(k) for k in CONFIG_KEYS if k in init_keys(cls, kind)},
        "timesteps": flist(sched.timesteps.to(torch.float32)),
        "init_noise_sigma": f9(float(sched.init_noise_sigma)),
        "scale": scale,
    }
    if hasattr(sched, "sigmas") and kind in ("euler", "euler_a", "dpmpp_2m"):
        case["sigmas"] = flist(sched.sigmas)
    # to keep the file small: steps 0, 1, every 4th and the last (the IEEE
    # hash covers every step)
    keep = sorted(set(range(3, len(traj), 4)) | {0, 1, len(traj) - 1} & set(range(len(traj))))
    case["traj_steps"] = list(keep)
    case["traj"] = [traj[i] for i in keep]
    case["hash"] = h
    return case


def rng_sequences():
    """torch.randn call sequences on one generator (cache of the n < 16 path)."""
    seqs = [
        (7, [3, 1]), (7, [4]), (0, [3, 16, 1]), (0, [4]), (0, [5, 5]), (0, [17]),
        (123, [1, 20, 1, 15, 33]), (42, [36, 36, 64]), (2**32 + 5, [16]), (5, [16]),
        (0xFFFFFFFF, [20]), (2024, [1, 1, 1, 1, 31]), (9, [15, 2, 48]),
    ]
    out = []
    for seed, ns in seqs:
        g = torch.Generator("cpu").manual_seed(seed)
        out.append({"seed": seed, "calls": [{"n": n, "values": flist(torch.randn(n, generator=g))}
                                            for n in ns]})
    g = torch.Generator("cpu").manual_seed(0)
    rand3 = flist(torch.rand(3, generator=g))
    # randn_tensor of an NCHW shape is randn(numel) reshaped
    same = True
    for shape in ([1, 4, 3, 3], [1, 4, 64, 64], [2, 4, 8, 8], [1, 4, 96, 64]):
        a = randn_tensor(tuple(shape), generator=torch.Generator("cpu").manual_seed(3),
                         dtype=torch.float32)
        b = torch.randn(int(np.prod(shape)), generator=torch.Generator("cpu").manual_seed(3))
        same = same and torch.equal(a.reshape(-1), b)
    return {"torch": torch.__version__, "sequences": out, "rand3_seed0": rand3,
            "randn_tensor_is_flat_randn": same}


def main():
    versions = {"torch": torch.__version__, "diffusers": diffusers.__version__,
                "numpy": np.__version__}
    cases = [run_case(*c) for c in CASES]
    ref = {"versions": versions,
           "configs": {k: json.dumps(v) for k, v in CONFIGS.items()},
           "cases": cases}
    os.makedirs(os.path.join(ROOT, "tests/data/sched"), exist_ok=True)
    with open(os.path.join(ROOT, "tests/data/sched/ref.json"), "w") as f:
        json.dump(ref, f, separators=(",", ":"))
    seq = rng_sequences()
    if not seq["randn_tensor_is_flat_randn"]:
        sys.exit("randn_tensor(shape) differs from randn(numel)")
    os.makedirs(os.path.join(ROOT, "tests/data/torch-randn"), exist_ok=True)
    with open(os.path.join(ROOT, "tests/data/torch-randn/seq.json"), "w") as f:
        json.dump(seq, f, separators=(",", ":"))
    print("%d scheduler cases (%d refused by diffusers), %d rng sequences" %
          (len(cases), sum("error" in c for c in cases), len(seq["sequences"])))


if __name__ == "__main__":
    main()
