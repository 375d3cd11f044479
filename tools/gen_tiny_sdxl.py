#!/usr/bin/env python3
"""Generate the tiny random-weight SDXL test pipeline and its diffusers
reference outputs (like tools/gen_tiny.py does for SD 1.x/2.x).

    python3 tools/gen_tiny_sdxl.py          (~20 s on 2 cores, offline)

Writes, relative to the repository root:
    tests/data/tiny-sdxl/                  StableDiffusionXLPipeline folder, F32 weights
    tests/data/ref/tiny-sdxl.safetensors   golden tensors: both text encoders (hidden
                                           states and pooled projection), UNet forwards
                                           with the added conditioning, pipeline cases

The architecture is SDXL's, narrow: 3 UNet levels (DownBlock2D then two
CrossAttnDownBlock2D, mirrored up), transformer depth 1/2/3 (the mid block
3), two text encoders (CLIP-L style quick_gelu, OpenCLIP-bigG style gelu
with projection), text_time add_embedding, VAE scaling 0.13025, Euler
"leading" scheduler, force_zeros_for_empty_prompt. Needs the same packages
as gen_tiny.py.
"""
import json
import os
import shutil
import sys

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import numpy as np
import torch
from safetensors.torch import load_file

import diffusers
import transformers
from diffusers import (AutoencoderKL, EulerAncestralDiscreteScheduler, StableDiffusionXLPipeline,
                       UNet2DConditionModel)
from diffusers.utils import logging as dlogging
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection
from transformers.utils import logging as tlogging

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_tiny as base  # noqa: E402  (tokenizer, randomize, writers, SCHEDULERS)

DATA = base.DATA
NAME = "tiny-sdxl"

UNET = dict(
    sample_size=16, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(16, 32, 32),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 3), attention_head_dim=(2, 4, 4),
    norm_num_groups=8, cross_attention_dim=32 + 48, use_linear_projection=True,
    addition_embed_type="text_time", addition_time_embed_dim=8,
    projection_class_embeddings_input_dim=32 + 6 * 8)

VAE = dict(base.VAE_CONFIG, scaling_factor=0.13025, force_upcast=True)

SCHEDULER = {   # stabilityai/stable-diffusion-xl-base-1.0
    "_class_name": "EulerDiscreteScheduler",
    "_diffusers_version": "0.19.0.dev0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "sample_max_value": 1.0,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "trained_betas": None,
    "use_karras_sigmas": False,
}

TURBO_SCHEDULER = {  # stabilityai/sdxl-turbo
    "_class_name": "EulerAncestralDiscreteScheduler",
    "_diffusers_version": "0.24.0.dev0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "sample_max_value": 1.0,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "trailing",
    "trained_betas": None,
    "use_karras_sigmas": False,
}


def write_turbo_folder(folder):
    """tiny-sdxl with SDXL-Turbo's scheduler: links to the networks."""
    if os.path.isdir(folder):
        shutil.rmtree(folder)
    os.makedirs(os.path.join(folder, "scheduler"))
    for comp in ("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2"):
        os.symlink(os.path.join("..", NAME, comp), os.path.join(folder, comp))
    index = json.load(open(os.path.join(DATA, NAME, "model_index.json")))
    index["scheduler"] = ["diffusers", "EulerAncestralDiscreteScheduler"]
    base.dump_json(os.path.join(folder, "model_index.json"), index)
    base.dump_json(os.path.join(folder, "scheduler", "scheduler_config.json"), TURBO_SCHEDULER)


def te_configs():
    common = dict(vocab_size=base.VOCAB_SIZE, max_position_embeddings=77, layer_norm_eps=1e-5,
                  bos_token_id=0, eos_token_id=2, pad_token_id=1)
    te1 = CLIPTextConfig(hidden_size=32, intermediate_size=64, num_attention_heads=4,
                         num_hidden_layers=3, hidden_act="quick_gelu", projection_dim=32, **common)
    te2 = CLIPTextConfig(hidden_size=48, intermediate_size=96, num_attention_heads=4,
                         num_hidden_layers=4, hidden_act="gelu", projection_dim=32, **common)
    return te1, te2


@torch.no_grad()
def build(seed):
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**UNET)
    vae = AutoencoderKL(**VAE)
    c1, c2 = te_configs()
    te1, te2 = CLIPTextModel(c1), CLIPTextModelWithProjection(c2)
    base.randomize(unet, seed + 1)
    base.randomize(vae, seed + 2)
    base.randomize(te1, seed + 3)
    base.randomize(te2, seed + 4)
    unet.conv_out.weight *= 1.5
    vae.quant_conv.bias[4] += 20.0
    vae.quant_conv.bias[5] -= 30.0
    return {"unet": unet, "vae": vae, "text_encoder": te1, "text_encoder_2": te2}


def write_folder(folder, vocab, merges, seed):
    if os.path.isdir(folder):
        shutil.rmtree(folder)
    os.makedirs(folder)
    models = build(seed)
    # Stored in half precision (as most SDXL downloads are): small files, and
    # diffusers upcasts them to float32 exactly.
    models = {comp: m.half() for comp, m in models.items()}
    for comp, m in models.items():
        m.save_pretrained(os.path.join(folder, comp), safe_serialization=True)
    # transformers 5 saves CLIPTextModel without the "text_model." prefix;
    # real SDXL folders have it (WithProjection already writes it).
    base.add_text_model_prefix(os.path.join(folder, "text_encoder"), None)
    base.write_tokenizer(os.path.join(folder, "tokenizer"), vocab, merges,
                         base.special("<|endoftext|>"))
    base.write_tokenizer(os.path.join(folder, "tokenizer_2"), vocab, merges, "!")
    os.makedirs(os.path.join(folder, "scheduler"))
    base.dump_json(os.path.join(folder, "scheduler", "scheduler_config.json"), SCHEDULER)
    base.dump_json(os.path.join(folder, "model_index.json"), {
        "_class_name": "StableDiffusionXLPipeline",
        "_diffusers_version": "0.19.0.dev0",
        "force_zeros_for_empty_prompt": True,
        "scheduler": ["diffusers", "EulerDiscreteScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "tokenizer_2": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    })
    for d, _, files in os.walk(folder):
        for f in files:
            os.chmod(os.path.join(d, f), 0o644)
    return models


def case(name, prompt, negative_prompt=None, steps=4, guidance=5.0, scheduler="default",
         width=128, height=128, clip_skip=None, original_size=None, crop=(0, 0), target_size=None):
    return {"name": name, "prompt": prompt, "negative_prompt": negative_prompt, "steps": steps,
            "guidance": guidance, "scheduler": scheduler, "width": width, "height": height,
            "eta": 0.0, "clip_skip": clip_skip, "original_size": original_size, "crop": list(crop),
            "target_size": target_size}


def pipeline_cases():
    cases = []
    for sname in base.SCHEDULERS:
        if sname == "lcm":
            continue
        steps = 5 if sname.startswith("dpmpp") else 4
        cases.append(case(f"{sname}_zeroneg", "a photo of an astronaut riding a horse on mars",
                          None, steps, scheduler=sname))
        cases.append(case(f"{sname}_neg", "a watercolor painting of a red fox in the snow",
                          "blurry, low quality", steps, scheduler=sname))
    cases.append(case("default_emptyneg", "a small red cube on a blue table", ""))
    cases.append(case("nocfg", "a small red cube on a blue table", None, 4, 1.0))
    cases.append(case("nonsquare", "a wide panorama of snowy mountains", "fog", 4,
                      scheduler="euler", width=136, height=96))
    cases.append(case("clipskip", "a portrait of a cat wearing a hat", "low quality", 4, clip_skip=1))
    cases.append(case("microcond", "a bowl of fruit on a wooden table", None, 4,
                      original_size=[512, 384], crop=(32, 16), target_size=[96, 160]))
    cases.append(case("longprompt", base.PROMPTS[2], None, 4))
    # SDXL-Turbo style, through tiny-sdxl-turbo (same networks, its scheduler:
    # EulerAncestral with "trailing" spacing): 1 and 4 steps at guidance 0.
    for steps in (1, 4):
        t = case(f"turbo{steps}", "a bowl of fruit on a wooden table", None, steps, 0.0, width=96, height=96)
        t["model"] = "tiny-sdxl-turbo"
        cases.append(t)
    for i, c in enumerate(cases):
        c["seed"] = 3000 + 17 * i
    return cases


@torch.no_grad()
def run_case(pipe, base_sched, c):
    if c["scheduler"] == "default":
        pipe.scheduler = base_sched
    else:
        pipe.scheduler = base.SCHEDULERS[c["scheduler"]](base_sched.config)
    if c.get("model") == "tiny-sdxl-turbo":
        pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(TURBO_SCHEDULER)
    kw = dict(prompt=c["prompt"], negative_prompt=c["negative_prompt"],
              num_inference_steps=c["steps"], guidance_scale=c["guidance"],
              width=c["width"], height=c["height"], clip_skip=c["clip_skip"],
              crops_coords_top_left=tuple(c["crop"]))
    if c["original_size"]:
        kw["original_size"] = tuple(c["original_size"])
    if c["target_size"]:
        kw["target_size"] = tuple(c["target_size"])
    gen = lambda: torch.Generator("cpu").manual_seed(c["seed"])
    latents = pipe(**kw, generator=gen(), output_type="latent").images
    timesteps = [float(t) for t in pipe.scheduler.timesteps]
    image = np.array(pipe(**kw, generator=gen(), output_type="pil").images[0])
    dec = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
    again = np.array(pipe.image_processor.postprocess(dec, output_type="pil")[0])
    assert np.array_equal(image, again), c["name"]
    return latents, torch.from_numpy(image), timesteps


@torch.no_grad()
def network_refs(pipe, out, log):
    te1, te2 = pipe.text_encoder, pipe.text_encoder_2
    for k, p in enumerate(base.PROMPTS):
        ids1 = pipe.tokenizer(p, padding="max_length", max_length=77, truncation=True,
                              return_tensors="pt").input_ids
        ids2 = pipe.tokenizer_2(p, padding="max_length", max_length=77, truncation=True,
                                return_tensors="pt").input_ids
        o1 = te1(ids1, output_hidden_states=True)
        o2 = te2(ids2, output_hidden_states=True)
        out[f"text.ids.{k}"] = ids1[0].to(torch.int32)
        out[f"text2.ids.{k}"] = ids2[0].to(torch.int32)
        out[f"text.hidden.{k}"] = o1.hidden_states[-2][0]
        out[f"text2.hidden.{k}"] = o2.hidden_states[-2][0]
        out[f"text2.pooled.{k}"] = o2.text_embeds[0]
        pe, _, pooled, _ = pipe.encode_prompt(p, device="cpu", num_images_per_prompt=1,
                                              do_classifier_free_guidance=False)
        assert torch.equal(pe[0], torch.cat([o1.hidden_states[-2][0], o2.hidden_states[-2][0]], -1))
        assert torch.equal(pooled[0], o2.text_embeds[0])
    log(f"  text2.pooled.0 {base.stats(out['text2.pooled.0'])}")
    gen = torch.Generator().manual_seed(7)
    for tag, (h, w), t in (("unet", (16, 16), 981.0), ("unet2", (12, 10), 964.5517)):
        sample = torch.randn(2, 4, h, w, generator=gen)
        ctx = torch.randn(2, 77, 80, generator=gen)
        text_embeds = torch.randn(2, 32, generator=gen)
        time_ids = torch.tensor([[128.0, 96.0, 0.0, 0.0, 128.0, 96.0], [512.0, 384.0, 32.0, 16.0, 96.0, 160.0]])
        tt = torch.tensor([t], dtype=torch.float32)
        o = pipe.unet(sample, tt, encoder_hidden_states=ctx,
                      added_cond_kwargs={"text_embeds": text_embeds, "time_ids": time_ids}).sample
        out[f"{tag}.sample"], out[f"{tag}.timestep"], out[f"{tag}.context"] = sample, tt, ctx
        out[f"{tag}.text_embeds"], out[f"{tag}.time_ids"], out[f"{tag}.out"] = text_embeds, time_ids, o
        log(f"  {tag}.out {base.stats(o)}")


def main():
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    dlogging.set_verbosity_error()
    tlogging.set_verbosity_error()
    log = lambda s: print(s, flush=True)
    vocab, merges = base.tiny_vocab()
    folder = os.path.join(DATA, NAME)
    models = write_folder(folder, vocab, merges, 500)
    write_turbo_folder(os.path.join(DATA, NAME + "-turbo"))
    pipe = StableDiffusionXLPipeline.from_pretrained(folder, torch_dtype=torch.float32,
                                                     local_files_only=True, add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    for comp, model in models.items():
        loaded = getattr(pipe, comp).state_dict()
        for k, v in model.state_dict().items():
            assert loaded[k].dtype == torch.float32 and torch.equal(loaded[k], v.float()), (comp, k)
    assert pipe.tokenizer.pad_token_id == base.EOS_ID and pipe.tokenizer_2.pad_token_id == 0
    out = {}
    network_refs(pipe, out, log)
    base_sched = pipe.scheduler
    cases = pipeline_cases()
    for c in cases:
        latents, image, c["timesteps"] = run_case(pipe, base_sched, c)
        out[f"case.{c['name']}.latents"] = latents
        out[f"case.{c['name']}.image"] = image
        log(f"  case {c['name']:<22} t={c['timesteps']} latents {base.stats(latents)}")
    out = {k: v.detach().contiguous() for k, v in out.items()}
    meta = {"cases": json.dumps(cases, ensure_ascii=False),
            "prompts": json.dumps(base.PROMPTS, ensure_ascii=False), "model": NAME,
            "generator": f"tools/gen_tiny_sdxl.py; diffusers {diffusers.__version__}, "
                         f"transformers {transformers.__version__}, torch {torch.__version__}"}
    path = os.path.join(DATA, "ref", NAME + ".safetensors")
    base.write_safetensors(path, out, meta)
    back = load_file(path)
    assert set(back) == set(out)
    n = {c: sum(p.numel() for p in getattr(pipe, c).parameters())
         for c in ("unet", "vae", "text_encoder", "text_encoder_2")}
    log(f"{NAME}: params {n}; folder {base.folder_size(folder)} B; ref {os.path.getsize(path)} B")


if __name__ == "__main__":
    sys.exit(main())
