#!/usr/bin/env python3
"""Convert the tiny test pipelines to single-file checkpoints with diffusers'
own conversion scripts, and record what diffusers' from_single_file makes of
them.

    python3 tools/gen_single_file.py --diffusers-src PATH

PATH is a diffusers source checkout (or its bare git directory): the
conversion scripts live in its scripts/ folder, not in the pip package
(scripts/convert_diffusers_to_original_stable_diffusion.py,
scripts/convert_diffusers_to_original_sdxl.py). Nothing of them is copied
here; they are run as they are. Writes:

    tests/data/single/tiny-sd1.safetensors   SD 1.x layout, F32 (from tests/data/tiny-sd1)
    tests/data/single/tiny-sd2.safetensors   SD 2.x layout (OpenCLIP text encoder), F16
    tests/data/single/tiny-sdxl.safetensors  SDXL layout (conditioner.embedders.*), F16
    tests/data/single/tiny-sd2.ckpt          the SD 2.x one as the script writes .ckpt files
                                             (torch.save({"state_dict": ...}))
    tests/data/ref/single-<name>.safetensors from_single_file(file, config=<folder>)
                                             images and latents for some of the folder's
                                             cases, each checked equal to the folder's

The tiny SD 2.x text encoder has 3 layers, so the SD script would take it for
SD 1.x (it looks for a 23rd layer); its v2 text-encoder conversion is called
directly instead, as the script does for a real SD 2.x folder.
"""
import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
from diffusers.utils import logging as dlogging
from transformers.utils import logging as tlogging

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_tiny as base  # noqa: E402

DATA = base.DATA
SCRIPTS = {"sd": "scripts/convert_diffusers_to_original_stable_diffusion.py",
           "sdxl": "scripts/convert_diffusers_to_original_sdxl.py"}


def load_script(src, rel, tmp):
    path = os.path.join(src, rel)
    if not os.path.exists(path):  # a bare git directory
        text = subprocess.run(["git", "--git-dir", src, "show", "HEAD:" + rel], check=True,
                              capture_output=True).stdout
        path = os.path.join(tmp, os.path.basename(rel))
        open(path, "wb").write(text)
    spec = importlib.util.spec_from_file_location(os.path.basename(rel)[:-3], path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def weights(folder, comp, variant=None):
    name = "model" if comp.startswith("text_encoder") else "diffusion_pytorch_model"
    return load_file(os.path.join(folder, comp, f"{name}.{variant}.safetensors" if variant
                                  else f"{name}.safetensors"))


def convert_sd(mod, folder, variant, openclip):
    """What the script's __main__ does (its paths are fixed to non-variant
    names, so the steps are called here on the variant's files)."""
    unet = {"model.diffusion_model." + k: v
            for k, v in mod.convert_unet_state_dict(weights(folder, "unet", variant)).items()}
    vae = {"first_stage_model." + k: v
           for k, v in mod.convert_vae_state_dict(weights(folder, "vae", variant)).items()}
    te = weights(folder, "text_encoder", variant)
    if openclip:
        te = mod.convert_text_enc_state_dict_v20({"transformer." + k: v for k, v in te.items()})
        te = {"cond_stage_model.model." + k: v for k, v in te.items()}
    else:
        te = {"cond_stage_model.transformer." + k: v
              for k, v in mod.convert_text_enc_state_dict(te).items()}
    return {**unet, **vae, **te}


def convert_sdxl(mod, folder):
    unet = {"model.diffusion_model." + k: v
            for k, v in mod.convert_unet_state_dict(weights(folder, "unet")).items()}
    vae = {"first_stage_model." + k: v for k, v in mod.convert_vae_state_dict(weights(folder, "vae")).items()}
    te1 = {"conditioner.embedders.0.transformer." + k: v
           for k, v in mod.convert_openai_text_enc_state_dict(weights(folder, "text_encoder")).items()}
    te2 = {"conditioner.embedders.1.model." + k: v
           for k, v in mod.convert_openclip_text_enc_state_dict(weights(folder, "text_encoder_2")).items()}
    te2["conditioner.embedders.1.model.text_projection"] = te2.pop(
        "conditioner.embedders.1.model.text_projection.weight").T.contiguous()
    return {**unet, **vae, **te1, **te2}


@torch.no_grad()
def refs(name, cls, path, folder, case_names, log):
    pipe = cls.from_single_file(path, config=folder, torch_dtype=torch.float32, local_files_only=True,
                                **({"add_watermarker": False} if cls is StableDiffusionXLPipeline else {}))
    pipe.set_progress_bar_config(disable=True)
    base.shim_clip_skip(pipe.text_encoder)
    folder_ref = load_file(os.path.join(DATA, "ref", name + ".safetensors"))
    cases = [c for c in json.loads(open_meta(os.path.join(DATA, "ref", name + ".safetensors"))["cases"])
             if c["name"] in case_names]
    assert len(cases) == len(case_names)
    base_sched = pipe.scheduler
    out = {}
    for c in cases:
        pipe.scheduler = base_sched if c["scheduler"] == "default" else \
            base.SCHEDULERS[c["scheduler"]](base_sched.config)
        kw = dict(prompt=c["prompt"], negative_prompt=c["negative_prompt"], num_inference_steps=c["steps"],
                  guidance_scale=c["guidance"], width=c["width"], height=c["height"],
                  clip_skip=c["clip_skip"])
        gen = lambda: torch.Generator("cpu").manual_seed(c["seed"])
        lat = pipe(**kw, generator=gen(), output_type="latent").images
        img = torch.from_numpy(np.array(pipe(**kw, generator=gen(), output_type="pil").images[0]))
        # from_single_file gives exactly what the folder gives
        assert torch.equal(lat, folder_ref[f"case.{c['name']}.latents"]), c["name"]
        assert torch.equal(img, folder_ref[f"case.{c['name']}.image"]), c["name"]
        out[f"case.{c['name']}.latents"], out[f"case.{c['name']}.image"] = lat, img
        log(f"  {name} {c['name']}: from_single_file == folder")
    pipe.scheduler = base_sched
    meta = {"cases": json.dumps(cases, ensure_ascii=False), "model": name,
            "generator": "tools/gen_single_file.py; from_single_file(config=folder)"}
    base.write_safetensors(os.path.join(DATA, "ref", f"single-{name}.safetensors"), out, meta)


def open_meta(path):
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        return json.loads(f.read(n))["__metadata__"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--diffusers-src", required=True)
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    dlogging.set_verbosity_error()
    tlogging.set_verbosity_error()
    log = lambda s: print(s, flush=True)
    out_dir = os.path.join(DATA, "single")
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        sd = load_script(a.diffusers_src, SCRIPTS["sd"], tmp)
        xl = load_script(a.diffusers_src, SCRIPTS["sdxl"], tmp)
        jobs = [("tiny-sd1", StableDiffusionPipeline, lambda f: convert_sd(sd, f, None, False),
                 ["pndm_neg", "euler_a_cfg", "clipskip", "euler_nonsquare"]),
                ("tiny-sd2", StableDiffusionPipeline, lambda f: convert_sd(sd, f, "fp16", True),
                 ["ddim_neg", "dpmpp_2m_cfg", "clipskip", "turbo"]),
                ("tiny-sdxl", StableDiffusionXLPipeline, lambda f: convert_sdxl(xl, f),
                 ["euler_zeroneg", "dpmpp_2m_neg", "clipskip", "nonsquare"])]
        for name, cls, conv, cases in jobs:
            folder = os.path.join(DATA, name)
            sdict = {k: v.contiguous() for k, v in conv(folder).items()}
            path = os.path.join(out_dir, name + ".safetensors")
            save_file(sdict, path)
            os.chmod(path, 0o644)
            log(f"{name}: {len(sdict)} tensors, {os.path.getsize(path)} B")
            if name == "tiny-sd2":  # and as the script writes a .ckpt (torch.save zip + pickle)
                ckpt = os.path.join(out_dir, name + ".ckpt")
                torch.save({"state_dict": sdict}, ckpt)
                os.chmod(ckpt, 0o644)
                log(f"{name}.ckpt: {os.path.getsize(ckpt)} B")
            refs(name, cls, path, folder, cases, log)


if __name__ == "__main__":
    sys.exit(main())
