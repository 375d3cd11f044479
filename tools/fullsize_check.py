#!/usr/bin/env python3
"""Full-size parity check against diffusers (outside CI).

For each full-size random-weight model made by tools/make_fullsize.py:
  1. one UNet forward (batch 2, 256x256 -> 32x32 latents, t=981) through
     `build/sdbench unet` and through diffusers, compared;
  2. one 256x256, 4-step PNDM generation with guidance 7.5 through
     `build/diffusiond generate` and through StableDiffusionPipeline (float32,
     CPU generator with the same seed), images compared.

    python3 tools/fullsize_check.py [--cache ~/.cache/diffusiond] [sd15] [sd21base]
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPT = "a photo of an astronaut riding a horse on mars"


def unet_check(model, tmp, cache):
    from diffusers import UNet2DConditionModel
    from safetensors.torch import load_file, save_file

    unet = UNet2DConditionModel.from_pretrained(os.path.join(model, "unet")).eval()
    g = torch.Generator("cpu").manual_seed(0)
    d = unet.config.cross_attention_dim
    inp = {
        "sample": torch.randn(2, 4, 32, 32, generator=g),
        "timestep": torch.tensor([981.0]),
        "context": torch.randn(2, 77, d, generator=g),
    }
    path_in, path_out = os.path.join(tmp, "in.safetensors"), os.path.join(tmp, "out.safetensors")
    save_file(inp, path_in)
    t0 = time.time()
    with torch.inference_mode():
        ref = unet(inp["sample"], inp["timestep"], encoder_hidden_states=inp["context"]).sample
    t_ref = time.time() - t0
    t0 = time.time()
    subprocess.run([os.path.join(REPO, "build", "sdbench"), "unet", "--model", model, "--in", path_in,
                    "--out", path_out], check=True)
    t_ours = time.time() - t0
    ours = load_file(path_out)["out"]
    diff = (ours - ref).abs().max().item()
    scale = ref.abs().max().item()
    print(f"  unet forward 2x4x32x32: max|diff| {diff:.3g}, max|ref| {scale:.3g}, "
          f"rel {diff / max(scale, 1):.3g}  (diffusers {t_ref:.1f} s, diffusiond incl. load {t_ours:.1f} s)")
    return diff / max(scale, 1)


def generate_check(model, tmp):
    from diffusers import StableDiffusionPipeline
    from PIL import Image

    pipe = StableDiffusionPipeline.from_pretrained(model, torch_dtype=torch.float32,
                                                   safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    t0 = time.time()
    ref = pipe(PROMPT, height=256, width=256, num_inference_steps=4, guidance_scale=7.5,
               generator=torch.Generator("cpu").manual_seed(42)).images[0]
    t_ref = time.time() - t0
    ref = np.asarray(ref).astype(np.int32)
    out = os.path.join(tmp, "ours.png")
    t0 = time.time()
    subprocess.run([os.path.join(REPO, "build", "diffusiond"), "generate", "--model", model,
                    "--prompt", PROMPT, "--width", "256", "--height", "256", "--steps", "4",
                    "--guidance", "7.5", "--seed", "42", "--output", out], check=True)
    t_ours = time.time() - t0
    ours = np.asarray(Image.open(out).convert("RGB")).astype(np.int32)
    d = np.abs(ours - ref)
    same = (d == 0).mean()
    print(f"  generate 256x256, 4 steps PNDM, cfg 7.5, seed 42: identical bytes {100 * same:.3f}%, "
          f"max level diff {d.max()}, mean abs diff {d.mean():.4f}  "
          f"(diffusers {t_ref:.1f} s, diffusiond {t_ours:.1f} s incl. load)")
    return same, d.max()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", default=os.path.expanduser("~/.cache/diffusiond"))
    ap.add_argument("models", nargs="*", default=["sd15", "sd21base"])
    a = ap.parse_args()
    torch.set_num_threads(os.cpu_count())
    ok = True
    for m in a.models:
        model = os.path.join(a.cache, m)
        if not os.path.exists(os.path.join(model, "model_index.json")):
            subprocess.run([sys.executable, os.path.join(REPO, "tools", "make_fullsize.py"),
                            "--out", a.cache, m], check=True)
        print(m)
        with tempfile.TemporaryDirectory() as tmp:
            rel = unet_check(model, tmp, a.cache)
            same, lvl = generate_check(model, tmp)
        ok &= rel <= 1e-4 and same >= 0.999 and lvl <= 1
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
