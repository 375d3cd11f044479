#!/usr/bin/env python3
"""Write the standard model configurations diffusiond uses for single-file
checkpoints (data/configs/<family>/): a diffusers folder without weights per
family (model_index.json, unet/, vae/, text_encoder[_2]/ configs,
scheduler/scheduler_config.json, tokenizer[_2] links to data/tokenizers/).

The values are those of the released models (sd-reference.md section 1,
model-formats.md section 1); diffusers' and transformers' own config classes
fill in every other key with its class default, as save_pretrained writes
them. Needs diffusers, transformers, accelerate (pip). Deterministic.

    python3 tools/make_std_configs.py
"""
import json
import os

os.environ["HF_HUB_OFFLINE"] = "1"

from accelerate import init_empty_weights
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "data", "configs")

SD_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, center_input_sample=False, flip_sin_to_cos=True,
    freq_shift=0, down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    mid_block_type="UNetMidBlock2DCrossAttn", up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
    only_cross_attention=False, block_out_channels=[320, 640, 1280, 1280], layers_per_block=2,
    downsample_padding=1, mid_block_scale_factor=1, act_fn="silu", norm_num_groups=32, norm_eps=1e-5,
    cross_attention_dim=768, attention_head_dim=8, dual_cross_attention=False,
    use_linear_projection=False, upcast_attention=False)
SD2_UNET = dict(SD_UNET, cross_attention_dim=1024, attention_head_dim=[5, 10, 20, 20],
                use_linear_projection=True)
SDXL_UNET = dict(
    SD_UNET, sample_size=128, block_out_channels=[320, 640, 1280],
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    transformer_layers_per_block=[1, 2, 10], attention_head_dim=[5, 10, 20], cross_attention_dim=2048,
    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816)

VAE = dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
           up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=[128, 256, 512, 512],
           layers_per_block=2, act_fn="silu", latent_channels=4, norm_num_groups=32,
           sample_size=512, scaling_factor=0.18215)
SDXL_VAE = dict(VAE, sample_size=1024, scaling_factor=0.13025, force_upcast=True)

CLIP_L = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_attention_heads=12,
              num_hidden_layers=12, max_position_embeddings=77, hidden_act="quick_gelu",
              layer_norm_eps=1e-5, projection_dim=768, bos_token_id=0, eos_token_id=2, pad_token_id=1)
# OpenCLIP ViT-H/14 text tower as SD 2.x uses it: 23 of its 24 layers
# (the penultimate layer's output, then the final LayerNorm).
OPEN_CLIP_H = dict(CLIP_L, hidden_size=1024, intermediate_size=4096, num_attention_heads=16,
                   num_hidden_layers=23, hidden_act="gelu", projection_dim=512)
OPEN_CLIP_BIGG = dict(CLIP_L, hidden_size=1280, intermediate_size=5120, num_attention_heads=20,
                      num_hidden_layers=32, hidden_act="gelu", projection_dim=1280)

SCHED_COMMON = {"beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
                "clip_sample": False, "num_train_timesteps": 1000, "set_alpha_to_one": False,
                "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None}
PNDM = dict(SCHED_COMMON, _class_name="PNDMScheduler", prediction_type="epsilon")
DDIM_V = dict(SCHED_COMMON, _class_name="DDIMScheduler", prediction_type="v_prediction")
EULER_TRAILING = dict(SCHED_COMMON, _class_name="EulerDiscreteScheduler", prediction_type="epsilon",
                      interpolation_type="linear", timestep_spacing="trailing", use_karras_sigmas=False)
SDXL_EULER = dict(SCHED_COMMON, _class_name="EulerDiscreteScheduler", prediction_type="epsilon",
                  interpolation_type="linear", timestep_spacing="leading", use_karras_sigmas=False,
                  sample_max_value=1.0)
SDXL_TURBO_SCHED = dict(SCHED_COMMON, _class_name="EulerAncestralDiscreteScheduler",
                        prediction_type="epsilon", timestep_spacing="trailing")

FAMILIES = {
    # name: (unet, vae, text encoders, scheduler, pipeline); text encoders
    # are (config, class, tokenizer folder) in component order.
    "sd15": (SD_UNET, VAE, [(CLIP_L, "CLIPTextModel", "clip")], PNDM, "StableDiffusionPipeline"),
    "sd21": (dict(SD2_UNET, sample_size=96, upcast_attention=True), dict(VAE, sample_size=768),
             [(OPEN_CLIP_H, "CLIPTextModel", "openclip")], DDIM_V, "StableDiffusionPipeline"),
    "sd21-base": (SD2_UNET, dict(VAE, sample_size=768), [(OPEN_CLIP_H, "CLIPTextModel", "openclip")],
                  PNDM, "StableDiffusionPipeline"),
    "sd-turbo": (SD2_UNET, dict(VAE, sample_size=768), [(OPEN_CLIP_H, "CLIPTextModel", "openclip")],
                 EULER_TRAILING, "StableDiffusionPipeline"),
    "sdxl-base": (SDXL_UNET, SDXL_VAE,
                  [(CLIP_L, "CLIPTextModel", "clip"),
                   (OPEN_CLIP_BIGG, "CLIPTextModelWithProjection", "openclip")],
                  SDXL_EULER, "StableDiffusionXLPipeline"),
    # inpainting UNets read latents + mask + masked image latents (9 channels)
    "sd15-inpainting": (dict(SD_UNET, in_channels=9), VAE, [(CLIP_L, "CLIPTextModel", "clip")], PNDM,
                        "StableDiffusionInpaintPipeline"),
    "sd2-inpainting": (dict(SD2_UNET, in_channels=9), dict(VAE, sample_size=768),
                       [(OPEN_CLIP_H, "CLIPTextModel", "openclip")], PNDM, "StableDiffusionInpaintPipeline"),
    "sdxl-inpainting": (dict(SDXL_UNET, in_channels=9), SDXL_VAE,
                        [(CLIP_L, "CLIPTextModel", "clip"),
                         (OPEN_CLIP_BIGG, "CLIPTextModelWithProjection", "openclip")],
                        SDXL_EULER, "StableDiffusionXLInpaintPipeline"),
    "sdxl-turbo": (dict(SDXL_UNET, sample_size=64), dict(SDXL_VAE, sample_size=512),
                   [(CLIP_L, "CLIPTextModel", "clip"),
                    (OPEN_CLIP_BIGG, "CLIPTextModelWithProjection", "openclip")],
                   SDXL_TURBO_SCHED, "StableDiffusionXLPipeline"),
}


def dump(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def model_config(cls, kw):
    with init_empty_weights():
        m = cls(**kw)
    cfg = dict(m.config)
    cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
    cfg["_class_name"] = cls.__name__
    return json.loads(json.dumps(cfg))  # tuples -> lists


def main():
    for name, (unet, vae, encoders, sched, pipeline) in FAMILIES.items():
        d = os.path.join(OUT, name)
        dump(os.path.join(d, "unet", "config.json"), model_config(UNet2DConditionModel, unet))
        dump(os.path.join(d, "vae", "config.json"), model_config(AutoencoderKL, vae))
        index = {"_class_name": pipeline, "scheduler": ["diffusers", sched["_class_name"]],
                 "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"]}
        if pipeline.startswith("StableDiffusionXL"):
            index["force_zeros_for_empty_prompt"] = True
        else:
            index.update(requires_safety_checker=False, safety_checker=[None, None],
                         feature_extractor=[None, None])
        for i, (cfg, cls, tok) in enumerate(encoders):
            sfx = "" if i == 0 else "_2"
            c = CLIPTextConfig(**cfg).to_dict()
            c["architectures"] = [cls]
            c = {k: v for k, v in c.items() if k not in ("transformers_version", "_name_or_path")}
            dump(os.path.join(d, "text_encoder" + sfx, "config.json"), c)
            index["text_encoder" + sfx] = ["transformers", cls]
            index["tokenizer" + sfx] = ["transformers", "CLIPTokenizer"]
            link = os.path.join(d, "tokenizer" + sfx)
            if os.path.lexists(link):
                os.remove(link)
            os.symlink(os.path.join("..", "..", "tokenizers", tok), link)
        dump(os.path.join(d, "scheduler", "scheduler_config.json"), sched)
        dump(os.path.join(d, "model_index.json"), index)
        print(name, "written")


if __name__ == "__main__":
    main()
