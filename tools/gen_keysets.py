#!/usr/bin/env python3
"""Header-only checkpoint files of every family, for the detection tests
(tests/data/keysets/<name>.st-header.gz: the 8-byte length and the JSON
header of a .safetensors file, no tensor data; gzip-compressed).

    python3 tools/gen_keysets.py --diffusers-src PATH

The families diffusiond runs get their real key sets with real shapes: the
networks are built from the released configs (data/configs, on PyTorch's
"meta" device: shapes only, no memory) and converted to the original layout
by diffusers' own conversion scripts (PATH: a diffusers checkout or its bare
git directory, as for tools/gen_single_file.py), then prefixed as the
released files are. SD 2.x files hold the whole OpenCLIP ViT-H tower (24
layers and text_projection; diffusers' config uses 23), SD-Turbo's uses the
"conditioner.embedders.0.model." prefix, inpainting UNets read 9 channels.

The families it refuses (SDXL refiner, Playground v2.5, SD 3, Flux, Stable
Cascade, LoRA, a VAE alone, a diffusers component) get the keys the
detectors of diffusers (single_file_utils.CHECKPOINT_KEY_NAMES) and
sd.cpp look at, with the released models' shapes, plus the block naming
diffusers' converters read, so that a detector keyed on one odd name does
not pass by accident.
"""
import argparse
import gzip
import json
import os
import sys
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_single_file as gsf  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "data", "configs")
OUT = os.path.join(ROOT, "tests", "data", "keysets")
DT = {torch.float32: "F32", torch.float16: "F16"}


def write_header(name, shapes, meta=None):
    """shapes: {key: shape list}; F16 tensors packed one after another."""
    header, off = {}, 0
    if meta:
        header["__metadata__"] = meta
    for k in sorted(shapes):
        n = 2
        for d in shapes[k]:
            n *= d
        header[k] = {"dtype": "F16", "shape": list(shapes[k]), "data_offsets": [off, off + n]}
        off += n
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    path = os.path.join(OUT, name + ".st-header.gz")
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
    print(f"{name}: {len(shapes)} keys, {os.path.getsize(path)} B")


def meta_model(cls, cfg):
    with torch.device("meta"):
        return cls(**cfg) if isinstance(cfg, dict) else cls(cfg)


def cfg_json(family, comp):
    c = json.load(open(os.path.join(CONFIGS, family, comp, "config.json")))
    return {k: v for k, v in c.items() if not k.startswith("_")}


def sd(mod, family, unet_kw=None, te_layers=None, te_prefix=None):
    u = meta_model(UNet2DConditionModel, dict(cfg_json(family, "unet"), **(unet_kw or {})))
    v = meta_model(AutoencoderKL, cfg_json(family, "vae"))
    tc = cfg_json(family, "text_encoder")
    tc.pop("architectures", None)
    openclip = tc["hidden_size"] == 1024
    if openclip:  # the whole ViT-H text tower, as the released files hold it
        tc.update(num_hidden_layers=te_layers or 24, projection_dim=1024)
        te = meta_model(CLIPTextModelWithProjection, CLIPTextConfig(**tc))
    else:
        te = meta_model(CLIPTextModel, CLIPTextConfig(**tc))
    tsd = te.state_dict()
    if not any(k.startswith("text_model.") for k in tsd):
        tsd = {"text_model." + k: t for k, t in tsd.items()}
    out = {"model.diffusion_model." + k: t for k, t in mod.convert_unet_state_dict(u.state_dict()).items()}
    out.update({"first_stage_model." + k: t for k, t in mod.convert_vae_state_dict(v.state_dict()).items()})
    if openclip:
        t = mod.convert_text_enc_state_dict_v20({"transformer." + k: t for k, t in tsd.items()})
        t["text_projection"] = t.pop("transformer.text_projection.weight").T
        pre = te_prefix or "cond_stage_model.model."
    else:
        t = mod.convert_text_enc_state_dict(tsd)
        pre = te_prefix or "cond_stage_model.transformer."
    out.update({pre + k: v for k, v in t.items()})
    out["alphas_cumprod"] = torch.empty(1000, device="meta")
    return {k: list(t.shape) for k, t in out.items() if "position_ids" not in k}


def sdxl(mod):
    u = meta_model(UNet2DConditionModel, cfg_json("sdxl-base", "unet"))
    v = meta_model(AutoencoderKL, cfg_json("sdxl-base", "vae"))
    c1, c2 = cfg_json("sdxl-base", "text_encoder"), cfg_json("sdxl-base", "text_encoder_2")
    c1.pop("architectures"), c2.pop("architectures")
    t1 = meta_model(CLIPTextModel, CLIPTextConfig(**c1)).state_dict()
    t1 = {("text_model." + k if not k.startswith("text_model.") else k): t for k, t in t1.items()}
    t2 = meta_model(CLIPTextModelWithProjection, CLIPTextConfig(**c2)).state_dict()
    out = {"model.diffusion_model." + k: t for k, t in mod.convert_unet_state_dict(u.state_dict()).items()}
    out.update({"first_stage_model." + k: t for k, t in mod.convert_vae_state_dict(v.state_dict()).items()})
    out.update({"conditioner.embedders.0.transformer." + k: t
                for k, t in mod.convert_openai_text_enc_state_dict(t1).items()})
    t2c = mod.convert_openclip_text_enc_state_dict(t2)
    t2c["text_projection"] = t2c.pop("text_projection.weight").T
    out.update({"conditioner.embedders.1.model." + k: t for k, t in t2c.items()})
    return {k: list(t.shape) for k, t in out.items() if "position_ids" not in k}


def flux():
    s, H = {}, 3072
    for p in ("img_in", "txt_in"):
        s[p + ".weight"], s[p + ".bias"] = [H, 64 if p == "img_in" else 4096], [H]
    for p in ("time_in", "vector_in", "guidance_in"):
        s[p + ".in_layer.weight"] = [H, 256 if p != "vector_in" else 768]
        s[p + ".in_layer.bias"], s[p + ".out_layer.weight"], s[p + ".out_layer.bias"] = [H], [H, H], [H]
    for i in range(19):
        for side in ("img", "txt"):
            b = f"double_blocks.{i}.{side}_"
            s[b + "attn.qkv.weight"], s[b + "attn.qkv.bias"] = [3 * H, H], [3 * H]
            s[b + "attn.norm.query_norm.scale"] = s[b + "attn.norm.key_norm.scale"] = [128]
            s[b + "attn.proj.weight"], s[b + "attn.proj.bias"] = [H, H], [H]
            s[b + "mlp.0.weight"], s[b + "mlp.0.bias"] = [4 * H, H], [4 * H]
            s[b + "mlp.2.weight"], s[b + "mlp.2.bias"] = [H, 4 * H], [H]
            s[b + "mod.lin.weight"], s[b + "mod.lin.bias"] = [6 * H, H], [6 * H]
    for i in range(38):
        b = f"single_blocks.{i}."
        s[b + "linear1.weight"], s[b + "linear1.bias"] = [3 * H + 4 * H, H], [3 * H + 4 * H]
        s[b + "linear2.weight"], s[b + "linear2.bias"] = [H, H + 4 * H], [H]
        s[b + "norm.query_norm.scale"] = s[b + "norm.key_norm.scale"] = [128]
        s[b + "modulation.lin.weight"], s[b + "modulation.lin.bias"] = [3 * H, H], [3 * H]
    s["final_layer.linear.weight"], s["final_layer.linear.bias"] = [64, H], [64]
    s["final_layer.adaLN_modulation.1.weight"], s["final_layer.adaLN_modulation.1.bias"] = [2 * H, H], [2 * H]
    return s


def sd3():
    s, H = {}, 1536
    s["pos_embed"] = [1, 36864, H]
    s["x_embedder.proj.weight"], s["x_embedder.proj.bias"] = [H, 16, 2, 2], [H]
    for p, n in (("t_embedder", 256), ("y_embedder", 2048)):
        s[p + ".mlp.0.weight"], s[p + ".mlp.0.bias"] = [H, n], [H]
        s[p + ".mlp.2.weight"], s[p + ".mlp.2.bias"] = [H, H], [H]
    s["context_embedder.weight"], s["context_embedder.bias"] = [H, 4096], [H]
    for i in range(24):
        for side in ("x_block", "context_block"):
            b = f"joint_blocks.{i}.{side}."
            s[b + "attn.qkv.weight"], s[b + "attn.qkv.bias"] = [3 * H, H], [3 * H]
            if not (side == "context_block" and i == 23):
                s[b + "attn.proj.weight"], s[b + "attn.proj.bias"] = [H, H], [H]
                s[b + "mlp.fc1.weight"], s[b + "mlp.fc1.bias"] = [4 * H, H], [4 * H]
                s[b + "mlp.fc2.weight"], s[b + "mlp.fc2.bias"] = [H, 4 * H], [H]
            n = 2 * H if side == "context_block" and i == 23 else 6 * H
            s[b + "adaLN_modulation.1.weight"], s[b + "adaLN_modulation.1.bias"] = [n, H], [n]
    s["final_layer.linear.weight"], s["final_layer.linear.bias"] = [64, H], [64]
    s["final_layer.adaLN_modulation.1.weight"], s["final_layer.adaLN_modulation.1.bias"] = [2 * H, H], [2 * H]
    return {"model.diffusion_model." + k: v for k, v in s.items()}


def cascade_c():
    s = {"clip_txt_mapper.weight": [2048, 1280], "clip_txt_mapper.bias": [2048],
         "clip_txt_pooled_mapper.weight": [8192, 1280], "clip_img_mapper.weight": [8192, 768],
         "embedding.1.weight": [2048, 16, 1, 1], "clf.1.weight": [64, 2048, 1, 1]}
    for lvl, n in ((0, 8), (1, 24)):
        for j in range(n):
            s[f"down_blocks.{lvl}.{j}.channelwise.0.weight"] = [2048 * 4, 2048]
            s[f"down_blocks.{lvl}.{j}.depthwise.weight"] = [2048, 1, 3, 3]
    return s


def lora_kohya():
    s = {}
    for b, a in ((0, 0), (0, 1), (1, 0), (2, 1)):
        for m in ("attn1_to_q", "attn1_to_k", "attn2_to_v", "attn2_to_out_0", "ff_net_0_proj"):
            n = f"lora_unet_down_blocks_{b}_attentions_{a}_transformer_blocks_0_{m}"
            s[n + ".lora_down.weight"], s[n + ".lora_up.weight"], s[n + ".alpha"] = [8, 320], [320, 8], []
    for i in range(12):
        n = f"lora_te_text_model_encoder_layers_{i}_self_attn_q_proj"
        s[n + ".lora_down.weight"], s[n + ".lora_up.weight"], s[n + ".alpha"] = [8, 768], [768, 8], []
    return s


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--diffusers-src", required=True)
    a = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        sdm = gsf.load_script(a.diffusers_src, gsf.SCRIPTS["sd"], tmp)
        xlm = gsf.load_script(a.diffusers_src, gsf.SCRIPTS["sdxl"], tmp)
        write_header("sd15", sd(sdm, "sd15"))
        write_header("sd15-inpainting", sd(sdm, "sd15", {"in_channels": 9}))
        write_header("sd21-768-v", sd(sdm, "sd21"))
        write_header("sd21-base", sd(sdm, "sd21-base"), {"modelspec.prediction_type": "epsilon"})
        write_header("sd-turbo", sd(sdm, "sd-turbo", te_prefix="conditioner.embedders.0.model."))
        xl = sdxl(xlm)
        write_header("sdxl-base", xl)
        write_header("sdxl-vpred", dict(xl, v_pred=[], ztsnr=[]))
        write_header("playground-v2.5", dict(xl, edm_mean=[1, 4, 1, 1], edm_std=[1, 4, 1, 1]))
        ref = {k.replace("conditioner.embedders.1.", "conditioner.embedders.0."): v
               for k, v in xl.items() if k.startswith("conditioner.embedders.1.")}
        ref.update({k: (v[:1] + [1280] if "attn2.to_k." in k or "attn2.to_v." in k else v)
                    for k, v in xl.items() if k.startswith("model.diffusion_model.") and
                    "input_blocks.2." not in k})  # cross-attention reads bigG alone (1280)
        write_header("sdxl-refiner", ref)
        vae = {k[len("first_stage_model."):]: v for k, v in xl.items() if k.startswith("first_stage_model.")}
        write_header("vae-ldm", vae)
    write_header("flux-dev", flux())
    write_header("sd3-medium", sd3())
    write_header("cascade-stage-c", cascade_c())
    write_header("lora-kohya-sd15", lora_kohya())
    write_header("diffusers-unet", {"conv_in.weight": [320, 4, 3, 3], "conv_in.bias": [320],
                                    "time_embedding.linear_1.weight": [1280, 320],
                                    "down_blocks.0.resnets.0.conv1.weight": [320, 320, 3, 3]})


if __name__ == "__main__":
    sys.exit(main())
