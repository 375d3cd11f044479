#!/usr/bin/env python3
"""Build full-size Stable Diffusion pipelines with random weights.

The real SD 1.5 and SD 2.1-base architectures (sd-reference.md section 1 and
appendices: every layer, width and head count as released), with weights
drawn by diffusers/transformers' own initialisers, saved in the diffusers
layout with safetensors. They compute and time exactly like the real
checkpoints; the images are noise. Used by tools/fullsize_check.py (parity)
and bench/ (speed). Needs torch, diffusers, transformers (pip).

    python3 tools/make_fullsize.py [--out ~/.cache/diffusiond] [sd15] [sd21base] [sdxl] [sdxl-turbo]

Each model takes about 4.4 GB on disk and a minute or two to build; existing
folders are kept.
"""
import argparse
import json
import os
import shutil
import sys

import torch
from safetensors.torch import save_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOCAB = os.path.join(REPO, "data", "tokenizers", "clip")

UNET_COMMON = dict(
    sample_size=64, in_channels=4, out_channels=4, center_input_sample=False,
    flip_sin_to_cos=True, freq_shift=0,
    down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    mid_block_type="UNetMidBlock2DCrossAttn",
    up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
    only_cross_attention=False, block_out_channels=[320, 640, 1280, 1280],
    layers_per_block=2, downsample_padding=1, mid_block_scale_factor=1, act_fn="silu",
    norm_num_groups=32, norm_eps=1e-5, dual_cross_attention=False,
)
VAE = dict(
    in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=[128, 256, 512, 512],
    layers_per_block=2, act_fn="silu", latent_channels=4, norm_num_groups=32,
    sample_size=512, scaling_factor=0.18215,
)
PNDM = dict(
    beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
    prediction_type="epsilon", set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1,
    clip_sample=False, trained_betas=None,
)
MODELS = {
    "sd15": dict(
        unet=dict(UNET_COMMON, attention_head_dim=8, cross_attention_dim=768,
                  use_linear_projection=False),
        text=dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                  num_hidden_layers=12, hidden_act="quick_gelu", projection_dim=768),
        pad="<|endoftext|>",
    ),
    "sd21base": dict(
        unet=dict(UNET_COMMON, attention_head_dim=[5, 10, 20, 20], cross_attention_dim=1024,
                  use_linear_projection=True),
        text=dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16,
                  num_hidden_layers=23, hidden_act="gelu", projection_dim=512),
        pad="!",
    ),
}


def build_sdxl(name, out):
    """SDXL base from the bundled standard config (data/configs/sdxl-base),
    weights saved in F16 (as the released fp16 variant; both engines upcast
    them for fp32 runs); "sdxl-turbo" is the same networks with SDXL-Turbo's
    config (512 px, EulerAncestral "trailing"), linked."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfgdir = os.path.join(REPO, "data", "configs", name)
    d = os.path.join(out, name)
    if os.path.exists(os.path.join(d, "model_index.json")):
        print(f"{d}: exists")
        return d
    if name == "sdxl-turbo":
        base = build_sdxl("sdxl", out)
        os.makedirs(d)
        for comp in ("text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "vae"):
            os.symlink(os.path.join(base, comp), os.path.join(d, comp))
        os.makedirs(os.path.join(d, "unet"))
        os.symlink(os.path.join(base, "unet", "diffusion_pytorch_model.safetensors"),
                   os.path.join(d, "unet", "diffusion_pytorch_model.safetensors"))
        for f in ("unet/config.json", "scheduler/scheduler_config.json", "model_index.json"):
            os.makedirs(os.path.dirname(os.path.join(d, f)), exist_ok=True)
            shutil.copy(os.path.join(cfgdir, f), os.path.join(d, f))
        return d
    cfgdir = os.path.join(REPO, "data", "configs", "sdxl-base")
    tmp = d + ".tmp"
    os.makedirs(tmp, exist_ok=True)
    torch.manual_seed(1024)
    load = lambda comp: {k: v for k, v in json.load(open(os.path.join(cfgdir, comp, "config.json"))).items()
                         if not k.startswith("_")}
    for comp, cls in (("unet", UNet2DConditionModel), ("vae", AutoencoderKL)):
        if not os.path.exists(os.path.join(tmp, comp, "diffusion_pytorch_model.safetensors")):
            print(f"{name}: {comp}", flush=True)
            cls(**load(comp)).half().save_pretrained(os.path.join(tmp, comp))
    for comp, cls in (("text_encoder", CLIPTextModel), ("text_encoder_2", CLIPTextModelWithProjection)):
        if os.path.exists(os.path.join(tmp, comp, "model.safetensors")):
            continue
        print(f"{name}: {comp}", flush=True)
        c = load(comp)
        arch = c.pop("architectures")
        cfg = CLIPTextConfig(**c)
        cfg.architectures = arch
        m = cls(cfg).half()
        os.makedirs(os.path.join(tmp, comp), exist_ok=True)
        cfg.save_pretrained(os.path.join(tmp, comp))
        sd = {k if k.startswith("text_model.") or k.startswith("text_projection") else "text_model." + k:
              v.contiguous() for k, v in m.state_dict().items() if "position_ids" not in k}
        save_file(sd, os.path.join(tmp, comp, "model.safetensors"), metadata={"format": "pt"})
    for f in ("scheduler/scheduler_config.json", "model_index.json"):
        os.makedirs(os.path.dirname(os.path.join(tmp, f)), exist_ok=True)
        shutil.copy(os.path.join(cfgdir, f), os.path.join(tmp, f))
    for tok in ("tokenizer", "tokenizer_2"):
        shutil.copytree(os.path.realpath(os.path.join(cfgdir, tok)), os.path.join(tmp, tok), dirs_exist_ok=True)
    os.rename(tmp, d)
    print(f"{d}: done")
    return d


def build(name, out):
    if name.startswith("sdxl"):
        return build_sdxl(name, out)
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    spec = MODELS[name]
    d = os.path.join(out, name)
    if os.path.exists(os.path.join(d, "model_index.json")):
        print(f"{d}: exists")
        return d
    tmp = d + ".tmp"  # components already built there by an interrupted run are kept
    os.makedirs(tmp, exist_ok=True)
    torch.manual_seed({"sd15": 15, "sd21base": 21}[name])
    if not os.path.exists(os.path.join(tmp, "unet", "diffusion_pytorch_model.safetensors")):
        print(f"{name}: unet", flush=True)
        UNet2DConditionModel(**spec["unet"]).save_pretrained(os.path.join(tmp, "unet"))
    if not os.path.exists(os.path.join(tmp, "vae", "diffusion_pytorch_model.safetensors")):
        print(f"{name}: vae", flush=True)
        AutoencoderKL(**VAE).save_pretrained(os.path.join(tmp, "vae"))
    print(f"{name}: text encoder", flush=True)
    shutil.rmtree(os.path.join(tmp, "text_encoder"), ignore_errors=True)
    shutil.rmtree(os.path.join(tmp, "tokenizer"), ignore_errors=True)
    cfg = CLIPTextConfig(vocab_size=49408, max_position_embeddings=77, layer_norm_eps=1e-5,
                         **spec["text"])
    te = CLIPTextModel(cfg).eval()
    os.makedirs(os.path.join(tmp, "text_encoder"))
    cfg.architectures = ["CLIPTextModel"]
    cfg.save_pretrained(os.path.join(tmp, "text_encoder"))
    # Released SD checkpoints name these "text_model.*" (transformers 4).
    sd = {k if k.startswith("text_model.") else "text_model." + k: v.contiguous()
          for k, v in te.state_dict().items() if "position_ids" not in k}
    save_file(sd, os.path.join(tmp, "text_encoder", "model.safetensors"), metadata={"format": "pt"})
    tok = os.path.join(tmp, "tokenizer")
    os.makedirs(tok)
    for f in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        shutil.copy(os.path.join(VOCAB, f), tok)
    with open(os.path.join(VOCAB, "special_tokens_map.json")) as f:
        stm = json.load(f)
    stm["pad_token"] = spec["pad"]
    with open(os.path.join(tok, "special_tokens_map.json"), "w") as f:
        json.dump(stm, f, indent=2)
    # The released scheduler_config.json (written by an older diffusers; it
    # carries keys such as clip_sample that PNDMScheduler ignores).
    os.makedirs(os.path.join(tmp, "scheduler"), exist_ok=True)
    with open(os.path.join(tmp, "scheduler", "scheduler_config.json"), "w") as f:
        json.dump(dict(_class_name="PNDMScheduler", _diffusers_version="0.6.0", **PNDM), f, indent=2)
    index = {
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.42.1",
        "feature_extractor": [None, None], "safety_checker": [None, None],
        "requires_safety_checker": False,
        "scheduler": ["diffusers", "PNDMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    with open(os.path.join(tmp, "model_index.json"), "w") as f:
        json.dump(index, f, indent=2)
    os.rename(tmp, d)
    print(f"{d}: done")
    return d


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.expanduser("~/.cache/diffusiond"))
    ap.add_argument("models", nargs="*", default=list(MODELS))
    a = ap.parse_args()
    for m in a.models:
        if m not in MODELS and m not in ("sdxl", "sdxl-turbo"):
            sys.exit(f"unknown model {m}; known: {', '.join(MODELS)}")
        build(m, a.out)


if __name__ == "__main__":
    main()
