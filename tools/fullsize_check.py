#!/usr/bin/env python3
"""Full-size parity check against diffusers (outside CI).

For each full-size random-weight model made by tools/make_fullsize.py:
  1. one UNet forward (batch 2, 256x256 -> 32x32 latents, t=981; SDXL with
     its added conditioning) through `build/sdbench unet` and through
     diffusers, compared;
  2. one 256x256, 4-step generation (the model's scheduler; guidance 7.5,
     SDXL 5.0) through `build/diffusiond generate` and through diffusers'
     pipeline (float32, CPU generator with the same seed), images compared;
  3. with --single DIFFUSERS_SRC: the folder converted to a single file by
     diffusers' own conversion script, loaded by diffusiond with no --config
     (the family detected, its bundled standard config), must give the
     folder's image byte for byte.

    python3 tools/fullsize_check.py [--cache ~/.cache/diffusiond] [--single PATH] [sd15] [sd21base] [sdxl]
"""
import argparse
import gc
import json
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

    unet = UNet2DConditionModel.from_pretrained(os.path.join(model, "unet"), torch_dtype=torch.float32).eval()
    g = torch.Generator("cpu").manual_seed(0)
    d = unet.config.cross_attention_dim
    inp = {
        "sample": torch.randn(2, 4, 32, 32, generator=g),
        "timestep": torch.tensor([981.0]),
        "context": torch.randn(2, 77, d, generator=g),
    }
    added = None
    if unet.config.addition_embed_type == "text_time":
        p = unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim
        inp["text_embeds"] = torch.randn(2, p, generator=g)
        inp["time_ids"] = torch.tensor([[256.0, 256.0, 0.0, 0.0, 256.0, 256.0], [1024.0, 768.0, 64.0, 0.0, 256.0, 256.0]])
        added = {"text_embeds": inp["text_embeds"], "time_ids": inp["time_ids"]}
    path_in, path_out = os.path.join(tmp, "in.safetensors"), os.path.join(tmp, "out.safetensors")
    save_file(inp, path_in)
    t0 = time.time()
    with torch.inference_mode():
        ref = unet(inp["sample"], inp["timestep"], encoder_hidden_states=inp["context"],
                   added_cond_kwargs=added).sample
    t_ref = time.time() - t0
    del unet  # SDXL in float32 twice would not fit in 24 GB
    gc.collect()
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


def diffusers_image(model, out):
    """The reference image, in this process (run as a child: SDXL in float32
    in two processes at once would not fit in 24 GB)."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    xl = os.path.exists(os.path.join(model, "text_encoder_2"))
    if xl:
        pipe = StableDiffusionXLPipeline.from_pretrained(model, torch_dtype=torch.float32, add_watermarker=False)
    else:
        pipe = StableDiffusionPipeline.from_pretrained(model, torch_dtype=torch.float32, safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    t0 = time.time()
    img = pipe(PROMPT, height=256, width=256, num_inference_steps=4, guidance_scale=5.0 if xl else 7.5,
               generator=torch.Generator("cpu").manual_seed(42)).images[0]
    img.save(out)
    print(f"{time.time() - t0:.1f}")


def generate_check(model, tmp):
    from PIL import Image

    xl = os.path.exists(os.path.join(model, "text_encoder_2"))
    guidance = 5.0 if xl else 7.5
    ref_png = os.path.join(tmp, "ref.png")
    p = subprocess.run([sys.executable, os.path.abspath(__file__), "--diffusers-image", model, ref_png],
                       check=True, stdout=subprocess.PIPE, text=True)
    t_ref = float(p.stdout.strip().splitlines()[-1])
    ref = np.asarray(Image.open(ref_png).convert("RGB")).astype(np.int32)
    out = os.path.join(tmp, "ours.png")
    t0 = time.time()
    subprocess.run([os.path.join(REPO, "build", "diffusiond"), "generate", "--model", model,
                    "--prompt", PROMPT, "--width", "256", "--height", "256", "--steps", "4",
                    "--guidance", str(guidance), "--seed", "42", "--output", out], check=True)
    t_ours = time.time() - t0
    ours = np.asarray(Image.open(out).convert("RGB")).astype(np.int32)
    d = np.abs(ours - ref)
    same = (d == 0).mean()
    print(f"  generate 256x256, 4 steps, cfg {guidance}, seed 42: identical bytes {100 * same:.3f}%, "
          f"max level diff {d.max()}, mean abs diff {d.mean():.4f}  "
          f"(diffusers {t_ref:.1f} s, diffusiond {t_ours:.1f} s incl. load)")
    return same, d.max(), out


def single_check(model, tmp, src, folder_png):
    """The folder as a single file (diffusers' script), no --config."""
    sys.path.insert(0, os.path.join(REPO, "tools"))
    import gen_single_file as gsf
    xl = os.path.exists(os.path.join(model, "text_encoder_2"))
    mod = gsf.load_script(src, gsf.SCRIPTS["sdxl" if xl else "sd"], tmp)
    if xl:
        sd = gsf.convert_sdxl(mod, model)
    else:
        openclip = json.load(open(os.path.join(model, "text_encoder", "config.json")))["hidden_size"] == 1024
        sd = gsf.convert_sd(mod, model, None, openclip)
    from safetensors.torch import save_file
    path = os.path.join(tmp, os.path.basename(model) + ".safetensors")
    save_file({k: v.contiguous() for k, v in sd.items()}, path)
    del sd
    out = os.path.join(tmp, "single.png")
    extra = ["--prediction-type", "epsilon"] if "sd21" in model else []  # an SD 2.x file: v unless told
    p = subprocess.run([os.path.join(REPO, "build", "diffusiond"), "generate", "--model", path, "--prompt", PROMPT,
                        "--width", "256", "--height", "256", "--steps", "4", "--guidance", "5.0" if xl else "7.5",
                        "--seed", "42", "--scheduler", "pndm" if not xl else "euler", "--output", out] + extra,
                       capture_output=True, text=True)
    print("  single file " + (p.stderr.strip().splitlines()[-1] if p.stderr.strip() else ""))
    from PIL import Image
    a = np.asarray(Image.open(out).convert("RGB")) if p.returncode == 0 else None
    b = np.asarray(Image.open(folder_png).convert("RGB"))
    same = a is not None and np.array_equal(a, b)
    print(f"  single file (no --config, {os.path.getsize(path) / 1e9:.2f} GB): "
          f"{'same image as the folder' if same else 'DIFFERS from the folder'}")
    return same


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", default=os.path.expanduser("~/.cache/diffusiond"))
    ap.add_argument("--single", metavar="DIFFUSERS_SRC", help="also check the single-file conversion")
    ap.add_argument("--diffusers-image", nargs=2, metavar=("MODEL", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("models", nargs="*", default=["sd15", "sd21base"])
    a = ap.parse_args()
    torch.set_num_threads(os.cpu_count())
    if a.diffusers_image:
        return diffusers_image(*a.diffusers_image)
    ok = True
    for m in a.models:
        model = os.path.join(a.cache, m)
        if not os.path.exists(os.path.join(model, "model_index.json")):
            subprocess.run([sys.executable, os.path.join(REPO, "tools", "make_fullsize.py"),
                            "--out", a.cache, m], check=True)
        print(m)
        with tempfile.TemporaryDirectory() as tmp:
            rel = unet_check(model, tmp, a.cache)
            same, lvl, png = generate_check(model, tmp)
            single = single_check(model, tmp, a.single, png) if a.single else True
        ok &= rel <= 1e-4 and same >= 0.999 and lvl <= 1 and single
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
