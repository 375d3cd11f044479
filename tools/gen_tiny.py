#!/usr/bin/env python3
"""Generate the tiny random-weight Stable Diffusion test pipelines and their
diffusers reference outputs.

    python3 tools/gen_tiny.py            (run from anywhere; ~30 s on 2 cores)

Writes, relative to the repository root:
    tests/data/tiny-sd1/                 SD 1.x style diffusers folder, F32 weights, PNDM
    tests/data/tiny-sd2/                 SD 2.x style folder, fp16-variant weights only,
                                         DDIM v_prediction "trailing"
    tests/data/ref/tiny-sd1.safetensors  golden tensors (layout: tests/data/README.md)
    tests/data/ref/tiny-sd2.safetensors

Everything is seeded; a rerun on the same machine and library versions rewrites
byte-identical files.  The references are always computed from the folders as
diffusers loads them back from disk (so for tiny-sd2 from the fp16-rounded
weights, upcast to fp32 exactly), never from the in-memory models.

Needs: torch, diffusers, transformers, safetensors, numpy, regex (CPU only,
no network: the Hugging Face hub is forced offline below).
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import gzip
import json
import math
import shutil
import sys
import unicodedata

import numpy as np
import regex
import torch
from safetensors.torch import load_file, save_file

import diffusers
import transformers
from diffusers import (AutoencoderKL, DDIMScheduler, DPMSolverMultistepScheduler,
                       EulerAncestralDiscreteScheduler, EulerDiscreteScheduler,
                       LCMScheduler, PNDMScheduler, StableDiffusionPipeline,
                       UNet2DConditionModel)
from diffusers.utils import logging as dlogging
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
from transformers.utils import logging as tlogging

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "data")
BPE_GZ = os.environ.get("CLIP_BPE_GZ",
                        "/work/shared/reference/clip/bpe_simple_vocab_16e6.txt.gz")

N_MERGES = 486          # 256 + 256 + 486 + 2 = 1000 tokens
VOCAB_SIZE = 1000
BOS_ID, EOS_ID = 998, 999

PROMPTS = [
    "a photo of an astronaut riding a horse",
    "",
    # > 75 BPE tokens with this tiny vocabulary: exercises truncation to 77.
    "an extremely detailed oil painting of a quiet harbour town at sunset, with "
    "small wooden fishing boats, seagulls circling above the lighthouse, warm "
    "golden light reflecting on calm water, old stone houses with red roofs, "
    "narrow cobbled streets, flowers on every balcony, children playing near "
    "the pier, soft clouds, cinematic composition, trending on artstation",
    "Café Crème BRÛLÉE à Zürich — 東京の夜景 🚀 naïve ÆSIR",
    "  Hello,   WORLD!!! It's 2024... #1 (3.14) don't\tstop?? x=42; \"quoted\" ",
]

# ---------------------------------------------------------------------------
# Tokenizer: a 1000-token CLIP vocabulary cut from the real one.
# ---------------------------------------------------------------------------


def bytes_to_unicode():
    """CLIP/GPT-2 byte -> printable character table, in vocabulary order."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1))
                 + list(range(0xAE, 0xFF + 1)))
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    order = printable + [b for b in range(256) if b not in printable]
    return table, order


def tiny_vocab():
    """The CLIP merges file ships outside the repo; without it, regenerate
    from the 486 merges already committed in tiny-sd1 (same result)."""
    if os.path.exists(BPE_GZ):
        lines = gzip.open(BPE_GZ, "rt", encoding="utf-8").read().split("\n")
    else:
        path = os.path.join(DATA, "tiny-sd1", "tokenizer", "merges.txt")
        lines = open(path, encoding="utf-8").read().split("\n")
    # Line 0 is a header ("#version: 0.2"); merges follow, rank = index.
    merges = [tuple(line.split()) for line in lines[1:1 + N_MERGES]]
    assert all(len(m) == 2 for m in merges)
    table, order = bytes_to_unicode()
    symbols = [table[b] for b in order]
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    assert len(tokens) == VOCAB_SIZE and len(set(tokens)) == VOCAB_SIZE
    return {t: i for i, t in enumerate(tokens)}, merges


def special(content):
    return {"content": content, "lstrip": False, "normalized": True,
            "rstrip": False, "single_word": False}


def write_tokenizer(folder, vocab, merges, pad_in_map):
    """Files laid out like the real SD folders.  SD 2.x: tokenizer_config.json
    says pad "<|endoftext|>" but special_tokens_map.json says "!"."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        f.writelines(f"{a} {b}\n" for a, b in merges)
    added = lambda c: dict(special(c), __type="AddedToken")
    config = {
        "add_prefix_space": False,
        "bos_token": added("<|startoftext|>"),
        "do_lower_case": True,
        "eos_token": added("<|endoftext|>"),
        "errors": "replace",
        "model_max_length": 77,
        "pad_token": "<|endoftext|>",
        "tokenizer_class": "CLIPTokenizer",
        "unk_token": added("<|endoftext|>"),
    }
    tokens_map = {
        "bos_token": special("<|startoftext|>"),
        "eos_token": special("<|endoftext|>"),
        "pad_token": pad_in_map,
        "unk_token": special("<|endoftext|>"),
    }
    dump_json(os.path.join(folder, "tokenizer_config.json"), config)
    dump_json(os.path.join(folder, "special_tokens_map.json"), tokens_map)


CLIP_PAT = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE)


def reference_bpe_ids(text, vocab, merges, pad_id, split_on_bang):
    """Independent re-statement of OpenAI's CLIP tokenizer (without ftfy) used
    only to cross-check what transformers produces.  split_on_bang: the SD 2.x
    pad token "!" is a special token for transformers, so every "!" in the
    text becomes a lone id 0 and separates the words around it."""
    if split_on_bang:
        ids = []
        for i, part in enumerate(text.split("!")):
            ids += ([pad_id] if i else []) + bpe_ids(part, vocab, merges)
    else:
        ids = bpe_ids(text, vocab, merges)
    ids = [BOS_ID] + ids[:75] + [EOS_ID]
    return ids + [pad_id] * (77 - len(ids))


def bpe_ids(text, vocab, merges):
    table, _ = bytes_to_unicode()
    rank = {m: i for i, m in enumerate(merges)}
    text = unicodedata.normalize("NFC", text)
    text = regex.sub(r"\s+", " ", text).strip().lower()
    ids = []
    for piece in CLIP_PAT.findall(text):
        if piece in ("<|startoftext|>", "<|endoftext|>"):
            ids.append(vocab[piece])
            continue
        word = [table[b] for b in piece.encode("utf-8")]
        word[-1] += "</w>"
        while len(word) > 1:
            pairs = {(word[i], word[i + 1]) for i in range(len(word) - 1)}
            best = min(pairs, key=lambda p: rank.get(p, math.inf))
            if best not in rank:
                break
            merged, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        ids += [vocab[s] for s in word]
    return ids


# ---------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------


def unet_config(sd2):
    return dict(
        sample_size=16, in_channels=4, out_channels=4,
        block_out_channels=(16, 32, 32, 32), layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        norm_num_groups=8, cross_attention_dim=32,
        attention_head_dim=[1, 2, 4, 4] if sd2 else 2,
        use_linear_projection=sd2, upcast_attention=sd2)


VAE_CONFIG = dict(
    in_channels=3, out_channels=3, latent_channels=4,
    block_out_channels=(16, 32, 32, 32), layers_per_block=1, norm_num_groups=8,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    sample_size=128, scaling_factor=0.18215)


def clip_config(sd2):
    # bos/eos/pad ids mirror the (stale, unused) values of the real SD configs.
    return CLIPTextConfig(
        vocab_size=VOCAB_SIZE, hidden_size=32, intermediate_size=64,
        num_attention_heads=4, num_hidden_layers=3, max_position_embeddings=77,
        hidden_act="gelu" if sd2 else "quick_gelu", layer_norm_eps=1e-5,
        projection_dim=32, bos_token_id=0, eos_token_id=2, pad_token_id=1)


SD1_SCHEDULER = {   # runwayml/stable-diffusion-v1-5: no timestep_spacing key
    "_class_name": "PNDMScheduler",
    "_diffusers_version": "0.6.0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}

SD2_SCHEDULER = {
    "_class_name": "DDIMScheduler",
    "_diffusers_version": "0.8.0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "v_prediction",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,     # as in the real SD 2.1 config (PNDM.from_config keeps PLMS-only)
    "steps_offset": 1,
    "timestep_spacing": "trailing",
    "trained_betas": None,
}


def model_index(scheduler_class):
    return {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": "0.8.0",
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", scheduler_class],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }


@torch.no_grad()
def randomize(model, seed):
    """Replace the default init so every tensor matters and activations stay
    O(1): matrices N(0, 1/fan_in), norm weights 1 + 0.1 N, other vectors 0.1 N.
    Parameters are visited in name order so the result does not depend on
    module registration order."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in sorted(model.named_parameters()):
        noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
        if p.dim() == 1:
            is_norm_scale = name.endswith(".weight")
            p.copy_(1 + 0.1 * noise if is_norm_scale else 0.1 * noise)
        else:
            fan_in = p[0].numel()
            p.copy_(noise / math.sqrt(fan_in))


@torch.no_grad()
def build_models(sd2, seed):
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**unet_config(sd2))
    vae = AutoencoderKL(**VAE_CONFIG)
    text = CLIPTextModel(clip_config(sd2))
    randomize(unet, seed + 1)
    randomize(vae, seed + 2)
    randomize(text, seed + 3)
    # GroupNorm -> SiLU -> conv_out would give an output std of ~0.55; aim
    # for ~0.8, closer to a real noise prediction.
    unet.conv_out.weight *= 1.5
    # Push part of the encoder's log-variance channels past the [-30, 20] clamp
    # of DiagonalGaussianDistribution so the reference exercises it.
    vae.quant_conv.bias[4] += 20.0
    vae.quant_conv.bias[5] -= 30.0
    return unet, vae, text


def write_folder(folder, sd2, vocab, merges, seed):
    if os.path.isdir(folder):
        shutil.rmtree(folder)
    os.makedirs(folder)
    unet, vae, text = build_models(sd2, seed)
    if sd2:
        unet, vae, text = unet.half(), vae.half(), text.half()
        kw = {"variant": "fp16"}
    else:
        kw = {}
    unet.save_pretrained(os.path.join(folder, "unet"), safe_serialization=True, **kw)
    vae.save_pretrained(os.path.join(folder, "vae"), safe_serialization=True, **kw)
    text.save_pretrained(os.path.join(folder, "text_encoder"), safe_serialization=True, **kw)
    add_text_model_prefix(os.path.join(folder, "text_encoder"), kw.get("variant"))
    write_tokenizer(os.path.join(folder, "tokenizer"), vocab, merges,
                    "!" if sd2 else special("<|endoftext|>"))
    os.makedirs(os.path.join(folder, "scheduler"))
    dump_json(os.path.join(folder, "scheduler", "scheduler_config.json"),
              SD2_SCHEDULER if sd2 else SD1_SCHEDULER)
    dump_json(os.path.join(folder, "model_index.json"),
              model_index("DDIMScheduler" if sd2 else "PNDMScheduler"))
    for d, _, files in os.walk(folder):
        for f in files:
            os.chmod(os.path.join(d, f), 0o644)
    return {"unet": unet, "vae": vae, "text_encoder": text}


def add_text_model_prefix(folder, variant):
    """transformers 5 saves CLIPTextModel keys as "embeddings...", real SD
    folders (and transformers 4) use "text_model.embeddings...": store the
    real-world spelling (transformers 5 still loads it)."""
    path = os.path.join(folder, "model.fp16.safetensors" if variant else "model.safetensors")
    tensors = load_file(path)
    assert not any(k.startswith("text_model.") for k in tensors)
    save_file({"text_model." + k: v for k, v in tensors.items()}, path, metadata={"format": "pt"})


def dump_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


# ---------------------------------------------------------------------------
# References
# ---------------------------------------------------------------------------

SCHEDULERS = {
    "pndm": lambda c: PNDMScheduler.from_config(c),
    "ddim": lambda c: DDIMScheduler.from_config(c),
    "euler": lambda c: EulerDiscreteScheduler.from_config(c),
    "euler_a": lambda c: EulerAncestralDiscreteScheduler.from_config(c),
    "dpmpp_2m": lambda c: DPMSolverMultistepScheduler.from_config(c),
    "dpmpp_2m_karras": lambda c: DPMSolverMultistepScheduler.from_config(c, use_karras_sigmas=True),
    "lcm": lambda c: LCMScheduler.from_config(c),
}


def case(name, prompt, negative_prompt=None, steps=4, guidance=7.5, seed=0,
         scheduler="default", width=128, height=128, eta=0.0, clip_skip=None):
    return {"name": name, "prompt": prompt, "negative_prompt": negative_prompt,
            "steps": steps, "guidance": guidance, "seed": seed, "scheduler": scheduler,
            "width": width, "height": height, "eta": eta, "clip_skip": clip_skip}


def pipeline_cases():
    cases = []
    for sname in SCHEDULERS:
        steps = 5 if sname.startswith("dpmpp") else 4
        cases.append(case(f"{sname}_neg", "a photo of an astronaut riding a horse on mars",
                          "blurry, low quality", steps, 7.5))
        cases.append(case(f"{sname}_cfg", "a watercolor painting of a red fox in the snow",
                          None, steps, 7.5))
        cases.append(case(f"{sname}_nocfg", "a small red cube on a blue table",
                          None, steps, 1.0))
        for c in cases[-3:]:
            c["scheduler"] = sname
    cases.append(case("ddim_eta", "a castle on a hill at night", None, 4, 7.5,
                      scheduler="ddim", eta=0.7))
    # latent 12x17: 17 -> 9 -> 5 -> 3 in the UNet, 12 -> 6 -> 3 -> 2.
    cases.append(case("euler_nonsquare", "a wide panorama of snowy mountains", None, 4, 7.5,
                      scheduler="euler", width=136, height=96))
    cases.append(case("clipskip", "a portrait of a cat wearing a hat", "low quality", 4, 7.5,
                      clip_skip=1))
    cases.append(case("longprompt", PROMPTS[2], None, 4, 7.5))
    cases.append(case("turbo", "a bowl of fruit on a wooden table", None, 1, 0.0))
    for i, c in enumerate(cases):
        c["seed"] = 1000 + 17 * i
    return cases


def stats(t):
    t = t.double()
    return f"mean {t.mean().item():+.4f} std {t.std().item():.4f} max|x| {t.abs().max().item():.4f}"


def test_image(h, w, seed):
    """A smooth colour pattern plus noise in [-1, 1] (NCHW)."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.linspace(-1, 1, h).view(h, 1)
    x = torch.linspace(-1, 1, w).view(1, w)
    chans = [torch.sin(3 * x + 2 * y), torch.cos(4 * x * y + 1), x * y - 0.3 * y]
    img = torch.stack(chans).unsqueeze(0) * 0.8
    img = img + 0.15 * torch.randn(img.shape, generator=gen)
    return img.clamp(-1, 1).float()


@torch.no_grad()
def network_refs(pipe, out, log):
    tok, te, unet, vae = pipe.tokenizer, pipe.text_encoder, pipe.unet, pipe.vae
    hidden = []
    for k, p in enumerate(PROMPTS):
        ids = tok(p, padding="max_length", max_length=77, truncation=True,
                  return_tensors="pt").input_ids
        h = te(ids)[0]
        out[f"text.ids.{k}"] = ids[0].to(torch.int32)
        out[f"text.hidden.{k}"] = h
        hidden.append(h)
        # The pipeline's own encoding must be exactly last_hidden_state.
        pe, _ = pipe.encode_prompt(p, "cpu", 1, False)
        assert torch.equal(pe, h)
    out["text.clipskip1.0"], _ = pipe.encode_prompt(PROMPTS[0], "cpu", 1, False, clip_skip=1)
    # With CFG the negative prompt is encoded WITHOUT clip_skip (plain
    # last_hidden_state) even when clip_skip is set: the C engine must match.
    _, neg = pipe.encode_prompt(PROMPTS[0], "cpu", 1, True, negative_prompt=PROMPTS[4], clip_skip=1)
    assert torch.equal(neg, hidden[4])
    # clip_skip=1: final_layer_norm of the output of layer N-1 (hidden_states[-2]).
    hs = te(out["text.ids.0"][None].long(), output_hidden_states=True).hidden_states
    assert len(hs) == te.config.num_hidden_layers + 1
    assert torch.equal(out["text.clipskip1.0"], te.final_layer_norm(hs[-2]))
    log(f"  text.hidden.0 {stats(hidden[0])}")

    gen = torch.Generator().manual_seed(7)
    sample = torch.randn(2, 4, 16, 16, generator=gen)
    t = torch.tensor([981.0])
    ctx = torch.cat([hidden[1], hidden[0]])
    out["unet.sample"], out["unet.timestep"], out["unet.context"] = sample, t, ctx
    out["unet.out"] = unet(sample, t, encoder_hidden_states=ctx).sample
    assert torch.equal(out["unet.out"],
                       unet(sample, torch.tensor(981), encoder_hidden_states=ctx).sample)
    log(f"  unet.out  {stats(out['unet.out'])}")

    sample2 = torch.randn(2, 4, 12, 10, generator=gen)
    t2 = torch.tensor([964.5517], dtype=torch.float32)
    ctx2 = torch.cat([hidden[3], hidden[4]])
    out["unet2.sample"], out["unet2.timestep"], out["unet2.context"] = sample2, t2, ctx2
    out["unet2.out"] = unet(sample2, t2, encoder_hidden_states=ctx2).sample
    log(f"  unet2.out {stats(out['unet2.out'])}")

    sf = vae.config.scaling_factor
    for prefix, (lh, lw), s in (("vae", (16, 16), 11), ("vae2", (8, 12), 12)):
        lat = torch.randn(1, 4, lh, lw, generator=gen) / sf
        out[f"{prefix}.latents"] = lat
        out[f"{prefix}.decoded"] = vae.decode(lat).sample
        img = test_image(lh * 8, lw * 8, s)
        dist = vae.encode(img).latent_dist
        out[f"{prefix}.enc.image"] = img
        out[f"{prefix}.enc.mean"] = dist.mean
        out[f"{prefix}.enc.logvar"] = dist.logvar
        raw = vae.quant_conv(vae.encoder(img))[:, 4:]
        n_clamped = int(((raw > 20) | (raw < -30)).sum())
        assert torch.equal(dist.logvar, raw.clamp(-30, 20)) and n_clamped > 0
        log(f"  {prefix}.decoded {stats(out[prefix + '.decoded'])}; "
            f"enc.mean {stats(dist.mean)}; logvar clamped {n_clamped}/{raw.numel()}")


@torch.no_grad()
def run_case(pipe, base_scheduler, c):
    if c["scheduler"] == "default":
        pipe.scheduler = base_scheduler
    else:
        pipe.scheduler = SCHEDULERS[c["scheduler"]](base_scheduler.config)
    kw = dict(prompt=c["prompt"], negative_prompt=c["negative_prompt"],
              num_inference_steps=c["steps"], guidance_scale=c["guidance"],
              width=c["width"], height=c["height"], eta=c["eta"], clip_skip=c["clip_skip"])
    gen = lambda: torch.Generator("cpu").manual_seed(c["seed"])
    latents = pipe(**kw, generator=gen(), output_type="latent").images
    timesteps = [float(t) for t in pipe.scheduler.timesteps]
    image = np.array(pipe(**kw, generator=gen(), output_type="pil").images[0])
    # The stored image must be exactly the decode + postprocess of the stored latents.
    dec = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
    again = np.array(pipe.image_processor.postprocess(dec, output_type="pil")[0])
    assert again.dtype == np.uint8 and np.array_equal(image, again), c["name"]
    assert image.shape == (c["height"], c["width"], 3)
    return latents, torch.from_numpy(image), timesteps


def generate_refs(name, folder, variant, path, log):
    kw = {"variant": variant} if variant else {}
    pipe = StableDiffusionPipeline.from_pretrained(folder, torch_dtype=torch.float32,
                                                   local_files_only=True, **kw)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.safety_checker is None
    shim_clip_skip(pipe.text_encoder)
    base = pipe.scheduler
    log(f"{name}: pad token {pipe.tokenizer.pad_token!r} id {pipe.tokenizer.pad_token_id}; "
        f"scheduler {type(base).__name__}")
    out = {}
    network_refs(pipe, out, log)
    cases = pipeline_cases()
    for c in cases:
        latents, image, c["timesteps"] = run_case(pipe, base, c)
        out[f"case.{c['name']}.latents"] = latents
        out[f"case.{c['name']}.image"] = image
        u8 = image.double()
        log(f"  case {c['name']:<22} t={c['timesteps']} latents {stats(latents)}; "
            f"image mean {u8.mean():.1f} std {u8.std():.1f} "
            f"0/255 {(image == 0).float().mean() * 100:.1f}%/{(image == 255).float().mean() * 100:.1f}%")
    pipe.scheduler = base
    out = {k: v.detach().contiguous() for k, v in out.items()}
    for k, v in out.items():
        assert v.dtype in (torch.float32, torch.int32, torch.uint8), k
        assert torch.isfinite(v.float()).all(), k
    meta = {"cases": json.dumps(cases, ensure_ascii=False),
            "prompts": json.dumps(PROMPTS, ensure_ascii=False),
            "model": name,
            "generator": f"tools/gen_tiny.py; diffusers {diffusers.__version__}, "
                         f"transformers {transformers.__version__}, torch {torch.__version__}"}
    write_safetensors(path, out, meta)
    back = load_file(path)
    assert set(back) == set(out) and all(torch.equal(back[k], v) for k, v in out.items())
    return pipe


ST_DTYPES = {torch.float32: "F32", torch.int32: "I32", torch.uint8: "U8"}


def write_safetensors(path, tensors, metadata):
    """safetensors writer with a deterministic header (the Rust serializer
    emits __metadata__ keys in hash order, so its files differ run to run).
    Wider dtypes first and an 8-byte padded header keep every tensor aligned
    to its element size."""
    names = sorted(tensors, key=lambda k: (-tensors[k].element_size(), k))
    header, blobs, offset = {"__metadata__": dict(sorted(metadata.items()))}, [], 0
    for k in names:
        raw = tensors[k].contiguous().numpy().tobytes()
        header[k] = {"dtype": ST_DTYPES[tensors[k].dtype], "shape": list(tensors[k].shape),
                     "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        f.writelines(blobs)
    os.chmod(path, 0o644)


def shim_clip_skip(text_encoder):
    """diffusers 0.42 reaches the final LayerNorm as text_encoder.text_model.
    final_layer_norm (transformers 4 layout); transformers 5 flattened
    CLIPTextModel, so clip_skip raises AttributeError.  Alias the model as its
    own text_model (a plain attribute, not a registered submodule) so the
    pipeline's clip_skip code path runs unchanged."""
    if "text_model" not in text_encoder.__dict__ and not hasattr(text_encoder, "text_model"):
        object.__setattr__(text_encoder, "text_model", text_encoder)


def check_tokenizer(pipe, vocab, merges, pad_id, log):
    tok = pipe.tokenizer
    assert tok.pad_token_id == pad_id and tok.bos_token_id == BOS_ID and tok.eos_token_id == EOS_ID
    for p in PROMPTS + ["hello!!! world!", "a!b <|endoftext|> c", "<|startoftext|>x"]:
        got = tok(p, padding="max_length", max_length=77, truncation=True).input_ids
        want = reference_bpe_ids(p, vocab, merges, pad_id, split_on_bang=(pad_id == 0))
        assert got == want, p
    ids = tok(PROMPTS[0]).input_ids
    log(f"  {PROMPTS[0]!r} -> {ids} {tok.convert_ids_to_tokens(ids)}")
    assert tok.decode(ids, skip_special_tokens=True) == PROMPTS[0]


def check_weights_loaded(pipe, models):
    """Every saved tensor must come back exactly (fp16 -> fp32 is exact), and
    nothing may have been left at a fresh random init."""
    for comp, model in models.items():
        loaded = getattr(pipe, comp).state_dict()
        saved = model.state_dict()
        assert set(loaded) == set(saved), comp
        for k, v in saved.items():
            assert loaded[k].dtype == torch.float32 and torch.equal(loaded[k], v.float()), k


def folder_size(folder):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(folder) for f in fs)


def main():
    torch.set_num_threads(1)    # reproducible reductions, and the machine is shared
    torch.use_deterministic_algorithms(True)
    dlogging.set_verbosity_error()
    tlogging.set_verbosity_error()
    log = lambda s: print(s, flush=True)
    vocab, merges = tiny_vocab()
    os.makedirs(os.path.join(DATA, "ref"), exist_ok=True)
    for name, sd2, seed in (("tiny-sd1", False, 1), ("tiny-sd2", True, 2)):
        folder = os.path.join(DATA, name)
        models = write_folder(folder, sd2, vocab, merges, seed * 100)
        ref = os.path.join(DATA, "ref", name + ".safetensors")
        pipe = generate_refs(name, folder, "fp16" if sd2 else None, ref, log)
        check_tokenizer(pipe, vocab, merges, 0 if sd2 else EOS_ID, log)
        check_weights_loaded(pipe, models)
        counts = {c: sum(p.numel() for p in getattr(pipe, c).parameters())
                  for c in ("unet", "vae", "text_encoder")}
        log(f"{name}: params {counts}; folder {folder_size(folder)} B; "
            f"ref {os.path.getsize(ref)} B")


if __name__ == "__main__":
    sys.exit(main())
