#!/usr/bin/env python3
"""Time diffusers' StableDiffusionPipeline (PyTorch, CPU) the way sdbench times diffusiond.

One process per (model, size, precision), started by bench/compare.py so that
its peak RSS is this process's alone:

    python3 bench/diffusers_bench.py --model DIR --size 256 [--steps 20]
        [--repeat 3] [--images 3] [--precision fp32|bf16] [--threads 2]
        [--scheduler euler] [--seed 42]

Phases (after one warm-up round, `--repeat` timed rounds):
  text encoder  pipe.encode_prompt for the prompt and the empty negative
                prompt (two CLIP forwards + tokenizer), as a guided pipeline does;
  unet step     one UNet call with batch 2 (guidance on) at size/8 latents;
  vae decode    one decoder call, latents -> image tensor.
Whole image: `--images` full pipeline calls (steps, guidance 7.5, Euler,
output_type="pil"), each timed separately.

The last line of stdout is a JSON object with every measurement (seconds).
"""
import argparse
import json
import os
import statistics
import sys
import time

PROMPT = "a photo of an astronaut riding a horse on mars"


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def summary(xs):
    return {"all": xs, "min": min(xs), "median": statistics.median(xs)} if xs else None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--images", type=int, default=3)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--scheduler", default="euler", choices=["euler", "pndm"])
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--guidance", type=float, default=7.5)
    a = ap.parse_args()

    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

    torch.set_num_threads(a.threads)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[a.precision]
    xl = json.load(open(os.path.join(a.model, "model_index.json")))["_class_name"] == "StableDiffusionXLPipeline"
    if xl:
        t_load, pipe = timed(lambda: StableDiffusionXLPipeline.from_pretrained(
            a.model, torch_dtype=dtype, add_watermarker=False))
    else:
        t_load, pipe = timed(lambda: StableDiffusionPipeline.from_pretrained(
            a.model, torch_dtype=dtype, safety_checker=None, requires_safety_checker=False))
    if a.scheduler == "euler" and not xl:  # SDXL's own scheduler is Euler already (Turbo: EulerAncestral)
        pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    print(f"diffusers {a.model} {a.size}x{a.size} {a.precision}: loaded in {t_load:.1f} s "
          f"({torch.get_num_threads()} threads, torch {torch.__version__})", file=sys.stderr, flush=True)

    lat = a.size // pipe.vae_scale_factor
    g = torch.Generator("cpu").manual_seed(0)
    x = torch.randn(2, pipe.unet.config.in_channels, lat, lat, generator=g).to(dtype)
    t = torch.tensor(500.0)
    res = {"stack": "diffusers", "precision": a.precision, "size": a.size, "steps": a.steps,
           "threads": torch.get_num_threads(), "load_s": t_load,
           "versions": {"torch": torch.__version__, "diffusers": __import__("diffusers").__version__}}
    te, un, va = [], [], []
    with torch.inference_mode():
        for r in range(a.repeat + 1):  # round 0 warms up (allocator, oneDNN primitive caches)
            if xl:
                dt, (ctx, neg, pooled, npooled) = timed(lambda: pipe.encode_prompt(
                    PROMPT, device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=True,
                    negative_prompt=""))
                added = {"text_embeds": torch.cat([npooled, pooled]),
                         "time_ids": torch.tensor([[a.size, a.size, 0, 0, a.size, a.size]] * 2, dtype=dtype)}
            else:
                dt, (ctx, neg) = timed(lambda: pipe.encode_prompt(PROMPT, "cpu", 1, True, negative_prompt=""))
                added = None
            ctx2 = torch.cat([neg, ctx])
            du, _ = timed(lambda: pipe.unet(x, t, encoder_hidden_states=ctx2, added_cond_kwargs=added).sample)
            dv, _ = timed(lambda: pipe.vae.decode(x[:1] / pipe.vae.config.scaling_factor).sample)
            if r:
                te.append(dt), un.append(du), va.append(dv)
            print(f"  round {r}: text {dt:.3f} s  unet {du:.3f} s  vae {dv:.3f} s",
                  file=sys.stderr, flush=True)
    res.update(text_s=summary(te), unet_step_s=summary(un), vae_s=summary(va))

    imgs = []
    for i in range(a.images):
        dt, _ = timed(lambda: pipe(PROMPT, height=a.size, width=a.size, num_inference_steps=a.steps,
                                   guidance_scale=a.guidance, output_type="pil",
                                   generator=torch.Generator("cpu").manual_seed(a.seed + i)).images[0])
        imgs.append(dt)
        print(f"  image {i}: {dt:.2f} s", file=sys.stderr, flush=True)
    res["image_s"] = summary(imgs)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
