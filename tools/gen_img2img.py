#!/usr/bin/env python3
"""References for image-to-image, inpainting and batches on the tiny
pipelines, from diffusers' own pipelines (run like tools/gen_tiny.py):

    python3 tools/gen_img2img.py

Writes tests/data/tiny-sd1-i2i/ (tiny-sd1 with a VAE of sane variance, see
write_i2i_folder), tests/data/tiny-sd1-inpaint/ (that with a 9-channel
inpainting UNet; the other networks are links) and tests/data/ref/img2img.safetensors:
the input images and masks (U8), and per case its latents and image. Cases:
  StableDiffusionImg2ImgPipeline  every scheduler, strength 0.3 / 0.75 / 1.0,
                                  non-square, an init image whose size is not
                                  a multiple of 8 (PIL-resized), SD 2.x, batch
  StableDiffusionInpaintPipeline  the 9-channel UNet at strength 1 and 0.6, and
                                  an ordinary UNet (diffusers' latent blend),
                                  RGB and gray masks, a mask of another size
  StableDiffusionXLImg2ImgPipeline  SDXL image-to-image
  StableDiffusionPipeline         num_images_per_prompt 3 (one generator) and
                                  a list of generators (seed, seed + 1)
Also resize.*: PIL Lanczos resizes of a test image (RGB and L) for the
C resizer's unit test.
"""
import json
import os
import shutil
import sys

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import numpy as np
import torch
from PIL import Image

import diffusers
from diffusers import (StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline, StableDiffusionPipeline,
                       StableDiffusionXLImg2ImgPipeline, UNet2DConditionModel)
from diffusers.utils import logging as dlogging
from transformers.utils import logging as tlogging

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_tiny as base  # noqa: E402

DATA = base.DATA


def test_image(w, h, seed):
    """A smooth colour pattern with some noise, 8-bit RGB (H, W, 3)."""
    g = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([128 + 100 * np.sin(x / 9 + y / 17), 128 + 90 * np.cos(x / 13 - y / 7),
                    128 + 80 * np.sin((x + y) / 11)], -1)
    img += g.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def test_mask(w, h, rgb):
    """Repaint a disc and a band; anti-aliased edges (grays around 128)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    d = np.hypot(x - w * 0.4, y - h * 0.55) - min(w, h) * 0.28
    m = np.clip(128 - 40 * d, 0, 255)
    m = np.maximum(m, np.where((x > w * 0.75) & (x < w * 0.85), 255, 0))
    m = m.astype(np.uint8)
    return np.repeat(m[..., None], 3, -1) if rgb else m


def write_i2i_folder():
    """tiny-sd1 with a VAE whose encoder has a sane variance: tiny-sd1's
    pushes two log-variance channels past diffusers' clamp (to test the
    clamp), which makes one latent channel of every sample e^10 wide and
    would drown the others in image-to-image references."""
    src, dst = os.path.join(DATA, "tiny-sd1"), os.path.join(DATA, "tiny-sd1-i2i")
    if os.path.isdir(dst):
        shutil.rmtree(dst)
    os.makedirs(dst)
    for comp in ("unet", "text_encoder", "tokenizer", "scheduler", "model_index.json"):
        os.symlink(os.path.join("..", "tiny-sd1", comp), os.path.join(dst, comp))
    from diffusers import AutoencoderKL
    vae = AutoencoderKL.from_pretrained(os.path.join(src, "vae"))
    with torch.no_grad():
        vae.quant_conv.bias[4] -= 20.0
        vae.quant_conv.bias[5] += 30.0
    vae.save_pretrained(os.path.join(dst, "vae"), safe_serialization=True)


def write_inpaint_folder():
    """tiny-sd1-i2i with a 9-channel UNet (same architecture otherwise)."""
    src, dst = os.path.join(DATA, "tiny-sd1"), os.path.join(DATA, "tiny-sd1-inpaint")
    if os.path.isdir(dst):
        shutil.rmtree(dst)
    os.makedirs(dst)
    for comp in ("text_encoder", "tokenizer", "scheduler"):
        os.symlink(os.path.join("..", "tiny-sd1", comp), os.path.join(dst, comp))
    os.symlink(os.path.join("..", "tiny-sd1-i2i", "vae"), os.path.join(dst, "vae"))
    cfg = dict(base.unet_config(False), in_channels=9)
    torch.manual_seed(900)
    unet = UNet2DConditionModel(**cfg)
    base.randomize(unet, 901)
    with torch.no_grad():
        unet.conv_out.weight *= 1.5
    unet.save_pretrained(os.path.join(dst, "unet"), safe_serialization=True)
    index = json.load(open(os.path.join(src, "model_index.json")))
    index["_class_name"] = "StableDiffusionInpaintPipeline"
    base.dump_json(os.path.join(dst, "model_index.json"), index)
    for d, _, files in os.walk(dst):
        for f in files:
            os.chmod(os.path.join(d, f), 0o644)


def load(cls, folder, variant=None):
    kw = {"variant": variant} if variant else {}
    if cls is StableDiffusionXLImg2ImgPipeline:
        kw["add_watermarker"] = False
    else:
        kw.update(safety_checker=None, requires_safety_checker=False)
    p = cls.from_pretrained(os.path.join(DATA, folder), torch_dtype=torch.float32, local_files_only=True, **kw)
    p.set_progress_bar_config(disable=True)
    if hasattr(p, "text_encoder") and cls is not StableDiffusionXLImg2ImgPipeline:
        base.shim_clip_skip(p.text_encoder)
    return p


@torch.no_grad()
def run(pipe, c, inputs):
    sched = pipe.scheduler
    if c["scheduler"] != "default":
        pipe.scheduler = base.SCHEDULERS[c["scheduler"]](sched.config)
    kw = dict(prompt=c["prompt"], negative_prompt=c["negative_prompt"], num_inference_steps=c["steps"],
              guidance_scale=c["guidance"], eta=c.get("eta", 0.0))
    if c.get("init"):
        kw["image"] = Image.fromarray(inputs[c["init"]])
    if c.get("mask"):
        m = inputs[c["mask"]]
        kw["mask_image"] = Image.fromarray(m, "RGB" if m.ndim == 3 else "L")
    if c.get("strength") is not None:
        kw["strength"] = c["strength"]
    if c.get("width"):
        kw["width"], kw["height"] = c["width"], c["height"]
    n = c.get("n_images", 1)
    if n > 1:
        kw["num_images_per_prompt"] = n
    if c.get("per_image"):
        gen = lambda: [torch.Generator("cpu").manual_seed(c["seed"] + k) for k in range(n)]
    else:
        gen = lambda: torch.Generator("cpu").manual_seed(c["seed"])
    lat = pipe(**kw, generator=gen(), output_type="latent").images
    imgs = pipe(**kw, generator=gen(), output_type="pil").images
    pipe.scheduler = sched
    return lat, torch.from_numpy(np.stack([np.array(i) for i in imgs]))


def main():
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    dlogging.set_verbosity_error()
    tlogging.set_verbosity_error()
    log = lambda s: print(s, flush=True)
    write_i2i_folder()
    write_inpaint_folder()
    inputs = {"img128": test_image(128, 128, 1), "img136x96": test_image(136, 96, 2),
              "img150x110": test_image(150, 110, 3), "mask128": test_mask(128, 128, False),
              "mask128rgb": test_mask(128, 128, True), "mask60x44": test_mask(60, 44, False)}
    P = "a photo of an astronaut riding a horse on mars"
    cases = []

    def case(name, model, cls, init=None, mask=None, strength=None, steps=4, scheduler="default",
             negative="blurry", guidance=7.5, **kw):
        c = dict(name=name, model=model, pipeline=cls.__name__, prompt=P, negative_prompt=negative, steps=steps,
                 guidance=guidance, scheduler=scheduler, init=init, mask=mask, strength=strength,
                 seed=5000 + 13 * len(cases), **kw)
        cases.append(c)

    I2I, INP = StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline
    for k, sname in enumerate(s for s in base.SCHEDULERS if s != "lcm"):
        st = (0.3, 0.75, 1.0)[k % 3]
        steps = 6 if sname.startswith("dpmpp") else 5
        case(f"i2i_{sname}_{st}", "tiny-sd1-i2i", I2I, "img128", strength=st, steps=steps, scheduler=sname)
    case("i2i_default_0.75", "tiny-sd1-i2i", I2I, "img128", strength=0.75)
    case("i2i_nonsquare", "tiny-sd1-i2i", I2I, "img136x96", strength=0.6, scheduler="euler")
    case("i2i_resized", "tiny-sd1-i2i", I2I, "img150x110", strength=0.75, scheduler="ddim")
    case("i2i_nocfg", "tiny-sd1-i2i", I2I, "img128", strength=0.5, guidance=1.0, scheduler="euler_a")
    case("i2i_sd2", "tiny-sd2", I2I, "img128", strength=0.7)
    case("i2i_batch2", "tiny-sd1-i2i", I2I, "img128", strength=0.75, scheduler="euler_a", n_images=2)
    case("inp9_full", "tiny-sd1-inpaint", INP, "img128", "mask128", strength=1.0, width=128, height=128)
    case("inp9_0.6", "tiny-sd1-inpaint", INP, "img128", "mask128rgb", strength=0.6, scheduler="euler",
         width=128, height=128)
    case("inp9_dpm_small_mask", "tiny-sd1-inpaint", INP, "img136x96", "mask60x44", strength=1.0, steps=5,
         scheduler="dpmpp_2m", width=136, height=96)
    case("inp4_blend", "tiny-sd1-i2i", INP, "img128", "mask128", strength=1.0, width=128, height=128)
    case("inp4_blend_0.75", "tiny-sd1-i2i", INP, "img128", "mask128", strength=0.75, scheduler="euler_a",
         width=128, height=128)
    case("xl_i2i", "tiny-sdxl", StableDiffusionXLImg2ImgPipeline, "img128", strength=0.6, guidance=5.0)
    case("t2i_batch3", "tiny-sd1", StableDiffusionPipeline, steps=4, n_images=3, width=128, height=128)
    case("t2i_batch2_seeds", "tiny-sd1", StableDiffusionPipeline, steps=4, n_images=2, per_image=True,
         scheduler="euler_a", width=128, height=128)
    out = {f"input.{k}": torch.from_numpy(v) for k, v in inputs.items()}
    pipes = {}
    for c in cases:
        key = (c["model"], c["pipeline"])
        if key not in pipes:
            cls = {p.__name__: p for p in (I2I, INP, StableDiffusionPipeline, StableDiffusionXLImg2ImgPipeline)}[
                c["pipeline"]]
            pipes[key] = load(cls, c["model"], "fp16" if c["model"] == "tiny-sd2" else None)
        lat, img = run(pipes[key], c, inputs)
        out[f"case.{c['name']}.latents"], out[f"case.{c['name']}.image"] = lat, img
        log(f"  {c['name']:<24} latents {base.stats(lat)} image {tuple(img.shape)}")
    # PIL Lanczos resizes for the C resizer
    src = Image.fromarray(inputs["img150x110"])
    for (w, h) in ((144, 104), (64, 200), (150, 57), (301, 110)):
        out[f"resize.rgb.{w}x{h}"] = torch.from_numpy(np.array(src.resize((w, h), Image.LANCZOS)))
    gsrc = Image.fromarray(inputs["mask60x44"], "L")
    out["resize.l.128x128"] = torch.from_numpy(np.array(gsrc.resize((128, 128), Image.LANCZOS)))
    out["gray.mask128rgb"] = torch.from_numpy(np.array(Image.fromarray(inputs["img128"]).convert("L")))
    out = {k: v.contiguous() for k, v in out.items()}
    meta = {"cases": json.dumps(cases), "generator": f"tools/gen_img2img.py; diffusers {diffusers.__version__}, "
                                                     f"torch {torch.__version__}"}
    path = os.path.join(DATA, "ref", "img2img.safetensors")
    base.write_safetensors(path, out, meta)
    log(f"{path}: {os.path.getsize(path)} B")


if __name__ == "__main__":
    sys.exit(main())
