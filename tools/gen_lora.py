#!/usr/bin/env python3
"""LoRA files for the tiny pipelines, and what diffusers makes with them.

    python3 tools/gen_lora.py            (needs peft besides gen_tiny.py's packages)

For tiny-sd1 and tiny-sdxl, two LoRAs made with PEFT (random factors, so
every module matters):
  <model>-style   UNet attention and feed-forward linears plus the text
                  encoders' attention and MLP: written in the diffusers/PEFT
                  format (save_lora_weights) and, the same factors, in kohya
                  naming (<model>-style-kohya; SD 1.x paths as kohya trains
                  SD 1.x, SDXL's UNet in the original "input_blocks" spelling
                  as kohya trains SDXL; lora_te_ / lora_te1_ / lora_te2_)
  <model>-detail  kohya LoCon: the UNet's resnet 3x3 convolutions and
                  time-embedding projections too, alpha = rank / 2
into tests/data/lora/, and tests/data/ref/lora-<model>.safetensors: images
and latents of diffusers' load_lora_weights + fuse_lora at weights 0, 0.5,
1, two at once, and a <lora:NAME:W> prompt tag (computed with the tag
removed, as A1111 does). The generator checks that the kohya and the PEFT
spellings of the same LoRA give diffusers the same image.
"""
import json
import math
import os
import sys
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import numpy as np
import torch
from peft import LoraConfig, get_peft_model_state_dict
from safetensors.torch import load_file, save_file

import transformers.integrations.peft as tpeft

# transformers 5.24 asks for peft >= 0.22, which PyPI does not have yet here
# (0.21.2); plain LoRA on nn.Linear works the same with 0.21.
tpeft.check_peft_version = lambda min_version=None: None

from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
from diffusers.utils import logging as dlogging
from transformers.utils import logging as tlogging

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_tiny as base  # noqa: E402

DATA = base.DATA
OUT = os.path.join(DATA, "lora")
UNET_LIN = ["to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2", "proj_in", "proj_out"]
UNET_CONV = ["conv1", "conv2", "time_emb_proj"]
TE = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]


@torch.no_grad()
def randomize_lora(model, seed, amp):
    """PEFT's init leaves B = 0; draw both factors so the LoRA does something."""
    g = torch.Generator().manual_seed(seed)
    for name, p in sorted(model.named_parameters()):
        if "lora_A" in name:
            p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p[0].numel()))
        elif "lora_B" in name:
            p.copy_(torch.randn(p.shape, generator=g) * amp / math.sqrt(p.shape[1]))


def peft_dicts(pipe, targets_unet, te, r, seed, name):
    pipe.unet.add_adapter(LoraConfig(r=r, lora_alpha=r, target_modules=targets_unet, init_lora_weights=False),
                          adapter_name=name)
    randomize_lora(pipe.unet, seed, 0.3)
    dicts = {"unet": get_peft_model_state_dict(pipe.unet, adapter_name=name)}
    encs = [("text_encoder", pipe.text_encoder)] + ([("text_encoder_2", pipe.text_encoder_2)]
                                                    if getattr(pipe, "text_encoder_2", None) else [])
    for i, (comp, enc) in enumerate(encs if te else []):
        enc.add_adapter(LoraConfig(r=r, lora_alpha=r, target_modules=TE, init_lora_weights=False), adapter_name=name)
        randomize_lora(enc, seed + 1 + i, 0.3)
        dicts[comp] = get_peft_model_state_dict(enc, adapter_name=name)
    for comp in ("unet", "text_encoder", "text_encoder_2"):
        m = getattr(pipe, comp, None)
        if m is not None and getattr(m, "peft_config", None) and name in m.peft_config:
            m.delete_adapters(name) if hasattr(m, "delete_adapters") else m.delete_adapter(name)
    return dicts


def sgm_names(xl_script_unet_convert, paths):
    """diffusers UNet module paths -> the original UNet's (SDXL script)."""
    conv = xl_script_unet_convert({p + ".weight": None for p in paths})
    return {d[:-len(".weight")]: s[:-len(".weight")] for d, s in zip(paths_w(paths), conv)}


def paths_w(paths):
    return [p + ".weight" for p in paths]


def to_kohya(dicts, xl, alpha_of_rank, sgm=None):
    out = {}
    for comp, d in dicts.items():
        pre = {"unet": "lora_unet_", "text_encoder": "lora_te1_" if xl else "lora_te_",
               "text_encoder_2": "lora_te2_"}[comp]
        for k, v in d.items():
            mod, fac = k.rsplit(".lora_", 1)
            if comp != "unet" and not mod.startswith("text_model."):
                mod = "text_model." + mod
            if comp == "unet" and sgm is not None:
                mod = sgm[mod]
            name = pre + mod.replace(".", "_")
            out[name + (".lora_down.weight" if fac.startswith("A") else ".lora_up.weight")] = v.contiguous()
            if fac.startswith("A"):
                out[name + ".alpha"] = torch.tensor(float(alpha_of_rank(v.shape[0])))
    return out


def save_peft(cls, path, dicts):
    with tempfile.TemporaryDirectory() as tmp:
        kw = {"unet_lora_layers": dicts["unet"]}
        if "text_encoder" in dicts:
            kw["text_encoder_lora_layers"] = dicts["text_encoder"]
        if "text_encoder_2" in dicts:
            kw["text_encoder_2_lora_layers"] = dicts["text_encoder_2"]
        cls.save_lora_weights(tmp, **kw)
        sd = load_file(os.path.join(tmp, "pytorch_lora_weights.safetensors"))
    save_file({k: v.contiguous() for k, v in sorted(sd.items())}, path)


def norm_keys(d):
    """Module/factor spellings of diffusers' converted kohya dicts and of
    PEFT files brought to one form (transformers 5 drops "text_model.")."""
    out = {}
    for k, v in d.items():
        k = k.replace(".lora.down.weight", ".lora_A.weight").replace(".lora.up.weight", ".lora_B.weight")
        k = k.replace(".lora_linear_layer.down.weight", ".lora_A.weight")
        k = k.replace(".lora_linear_layer.up.weight", ".lora_B.weight").replace("text_model.", "")
        for old, new in (("to_q", "q_proj"), ("to_k", "k_proj"), ("to_v", "v_proj"), ("to_out", "out_proj")):
            for f, g in (("down", "A"), ("up", "B")):
                k = k.replace(f".self_attn.{old}_lora.{f}.weight", f".self_attn.{new}.lora_{g}.weight")
                unet_new = "to_out.0" if old == "to_out" else old
                k = k.replace(f".processor.{old}_lora.{f}.weight", f".{unet_new}.lora_{g}.weight")
        out[k] = v
    return out


def same_lora(cls, pipe, kohya_path, peft_path):
    """diffusers' own kohya converter turns the kohya file into the PEFT one.
    (diffusers with transformers 5 cannot load a real kohya text-encoder
    LoRA, whose names keep "text_model.", so the kohya spelling's images are
    the PEFT file's, by this equivalence.)"""
    conv, alphas = cls.lora_state_dict(kohya_path, unet_config=pipe.unet.config)
    a, b = norm_keys(conv), norm_keys(load_file(peft_path))
    assert set(a) == set(b), sorted(set(a) ^ set(b))[:5]
    for k in a:
        assert torch.equal(a[k].float(), b[k].float()), k
    for k, v in (alphas or {}).items():
        assert abs(v - 4) < 1e-6, (k, v)  # alpha = rank: scale 1


@torch.no_grad()
def generate(load, c, loras):
    """loras: [(file, weight)], fused as diffusers does, into a fresh pipeline."""
    pipe = load()
    names = []
    for i, (f, w) in enumerate(loras):
        pipe.load_lora_weights(os.path.join(OUT, f + ".safetensors"), adapter_name=f"a{i}")
        names.append(f"a{i}")
    if names:
        pipe.set_adapters(names, adapter_weights=[w for _, w in loras])
        pipe.fuse_lora(adapter_names=names, lora_scale=1.0)
    kw = dict(prompt=c["clean_prompt"], negative_prompt=c["negative_prompt"], num_inference_steps=c["steps"],
              guidance_scale=c["guidance"], width=128, height=128)
    gen = lambda: torch.Generator("cpu").manual_seed(c["seed"])
    lat = pipe(**kw, generator=gen(), output_type="latent").images
    img = torch.from_numpy(np.array(pipe(**kw, generator=gen(), output_type="pil").images[0]))
    return lat, img


def main():
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    dlogging.set_verbosity_error()
    tlogging.set_verbosity_error()
    log = lambda s: print(s, flush=True)
    os.makedirs(OUT, exist_ok=True)
    import gen_single_file as gsf
    src = os.environ.get("DIFFUSERS_SRC", "/work/.mirror/huggingface+diffusers/repo")
    with tempfile.TemporaryDirectory() as tmp:
        xl_script = gsf.load_script(src, gsf.SCRIPTS["sdxl"], tmp)
    for model, cls, xl, seed in (("tiny-sd1", StableDiffusionPipeline, False, 10),
                                 ("tiny-sdxl", StableDiffusionXLPipeline, True, 20)):
        folder = os.path.join(DATA, model)
        kw = {"add_watermarker": False} if xl else {}
        def load():
            p = cls.from_pretrained(folder, torch_dtype=torch.float32, local_files_only=True, **kw)
            p.set_progress_bar_config(disable=True)
            if not xl:
                base.shim_clip_skip(p.text_encoder)
            return p
        pipe = load()
        style = peft_dicts(pipe, UNET_LIN, True, 4, seed, "style")
        detail = peft_dicts(pipe, UNET_LIN + UNET_CONV, False, 2, seed + 5, "detail")
        sgm = None
        if xl:
            paths = sorted({k.rsplit(".lora_", 1)[0] for d in (style["unet"], detail["unet"]) for k in d})
            # the script renames a state dict to the original UNet's names:
            # give it every name, as its own value, to read the mapping back
            names = {k: k for k in load().unet.state_dict()}
            inv = {d: o for o, d in xl_script.convert_unet_state_dict(names).items()}
            sgm = {p: inv[p + ".weight"][:-len(".weight")] for p in paths}
        save_peft(cls, os.path.join(OUT, f"{model}-style.safetensors"), style)
        save_file(to_kohya(style, xl, lambda r: r, sgm), os.path.join(OUT, f"{model}-style-kohya.safetensors"))
        save_file(to_kohya(detail, xl, lambda r: r / 2, sgm), os.path.join(OUT, f"{model}-detail.safetensors"))
        same_lora(cls, pipe, os.path.join(OUT, f"{model}-style-kohya.safetensors"),
                  os.path.join(OUT, f"{model}-style.safetensors"))
        prompt, neg = "a photo of an astronaut riding a horse on mars", "blurry"
        cases = [
            ("none", [], prompt), ("style_1", [("style", 1.0)], prompt),
            ("style_kohya_1", [("style-kohya", 1.0)], prompt), ("style_0.5", [("style", 0.5)], prompt),
            ("style_0", [("style", 0.0)], prompt), ("detail_1", [("detail", 1.0)], prompt),
            ("two", [("style", 0.7), ("detail", 0.5)], prompt),
            ("tag", [("detail", 0.8)], "<lora:" + model + "-detail:0.8>" + prompt),
        ]
        out, meta_cases, imgs = {}, [], {}
        for name, loras, p in cases:
            c = {"name": name, "prompt": p, "clean_prompt": prompt, "negative_prompt": neg, "steps": 3,
                 "guidance": 5.0, "seed": 4000, "width": 128, "height": 128, "scheduler": "default",
                 "eta": 0.0, "clip_skip": None,
                 "loras": [] if name == "tag" else [{"name": f"{model}-{f}", "weight": w} for f, w in loras]}
            # the kohya spelling of "style" is the PEFT file (same_lora above)
            lat, img = generate(load, c, [(f"{model}-{f.replace('-kohya', '')}", w) for f, w in loras])
            imgs[name] = lat
            out[f"case.{name}.latents"], out[f"case.{name}.image"] = lat, img
            meta_cases.append(c)
            log(f"  {model} {name}: latents {base.stats(lat)}")
        d0 = (imgs["style_0"] - imgs["none"]).abs().max().item()
        assert d0 < 1e-5, d0
        assert (imgs["style_1"] - imgs["none"]).abs().max().item() > 0.1
        meta = {"cases": json.dumps(meta_cases), "model": model,
                "generator": "tools/gen_lora.py; load_lora_weights + fuse_lora"}
        base.write_safetensors(os.path.join(DATA, "ref", f"lora-{model}.safetensors"), out, meta)
    for f in sorted(os.listdir(OUT)):
        os.chmod(os.path.join(OUT, f), 0o644)
        log(f"{f}: {os.path.getsize(os.path.join(OUT, f))} B, {len(load_file(os.path.join(OUT, f)))} tensors")


if __name__ == "__main__":
    sys.exit(main())
