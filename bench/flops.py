"""FLOP counts of the Stable Diffusion networks, from their diffusers configs.

Counts the multiply-adds of every convolution, linear layer and attention
product (QK^T and softmax·V) and reports FLOP = 2 x MAC. Norms, activations,
softmax and element-wise additions are left out (under 1 % of the total), as
is usual for "effective GFLOP/s" figures. Sizes are for ONE image (batch 1);
a guided UNet step (batch 2) costs twice the UNet figure.

    python3 bench/flops.py [MODEL_DIR ...]      prints the table for 256 and 512

Used by bench/compare.py. Cross-checked against torch.utils.flop_counter on
the diffusers modules (see docs/performance.md).
"""
import json
import os
import sys


def _conv(cin, cout, k, h, w):
    return cin * cout * k * k * h * w


def _resnet(cin, cout, h, w, temb=0):
    m = _conv(cin, cout, 3, h, w) + _conv(cout, cout, 3, h, w) + temb * cout
    if cin != cout:
        m += _conv(cin, cout, 1, h, w)  # 1x1 shortcut
    return m


def _transformer(c, h, w, ctx_len, ctx_dim, depth=1):
    """Transformer2DModel with `depth` BasicTransformerBlocks (SD1/SD2: 1)."""
    n = h * w
    m = 2 * n * c * c                       # proj_in + proj_out (1x1 conv or linear)
    b = 4 * n * c * c + 2 * n * n * c       # self-attention: q,k,v,out + QK^T, AV
    b += 2 * n * c * c + 2 * ctx_len * ctx_dim * c + 2 * n * ctx_len * c  # cross-attention
    b += n * c * 8 * c + n * 4 * c * c      # GEGLU feed-forward: c -> 2x4c, 4c -> c
    return m + depth * b


def unet_macs(cfg, h, w, ctx_len=77):
    """Multiply-adds of one UNet2DConditionModel forward for one latent of h x w."""
    ch = cfg["block_out_channels"]
    lpb = cfg["layers_per_block"]
    ctx_dim = cfg["cross_attention_dim"]
    temb = ch[0] * 4
    depth = cfg.get("transformer_layers_per_block") or 1
    depth = depth if isinstance(depth, list) else [depth] * len(ch)
    m = _conv(cfg["in_channels"], ch[0], 3, h, w)
    m += ch[0] * temb + temb * temb          # time embedding MLP
    if cfg.get("addition_embed_type") == "text_time":  # SDXL add_embedding MLP
        m += cfg["projection_class_embeddings_input_dim"] * temb + temb * temb
    skips = [ch[0]]
    c = ch[0]
    for i, kind in enumerate(cfg["down_block_types"]):
        for _ in range(lpb):
            m += _resnet(c, ch[i], h, w, temb)
            c = ch[i]
            if kind.startswith("CrossAttn"):
                m += _transformer(c, h, w, ctx_len, ctx_dim, depth[i])
            skips.append(c)
        if i < len(ch) - 1:                  # downsampler: 3x3 stride-2 conv
            h, w = (h + 1) // 2, (w + 1) // 2
            m += _conv(c, c, 3, h, w)
            skips.append(c)
    m += 2 * _resnet(c, c, h, w, temb) + _transformer(c, h, w, ctx_len, ctx_dim, depth[-1])  # mid block
    rev = list(reversed(ch))
    for i, kind in enumerate(cfg["up_block_types"]):
        for _ in range(lpb + 1):
            m += _resnet(c + skips.pop(), rev[i], h, w, temb)
            c = rev[i]
            if kind.startswith("CrossAttn"):
                m += _transformer(c, h, w, ctx_len, ctx_dim, depth[len(ch) - 1 - i])
        if i < len(ch) - 1:                  # upsampler: nearest x2 then 3x3 conv
            h, w = h * 2, w * 2
            m += _conv(c, c, 3, h, w)
    return m + _conv(c, cfg["out_channels"], 3, h, w)


def vae_decoder_macs(cfg, h, w):
    """Multiply-adds of AutoencoderKL.decode (post_quant_conv + decoder), latent h x w."""
    ch = cfg["block_out_channels"]
    lat = cfg["latent_channels"]
    m = _conv(lat, lat, 1, h, w) if cfg.get("use_post_quant_conv", True) else 0
    c = ch[-1]
    m += _conv(lat, c, 3, h, w)
    n = h * w                                # mid: resnet, single-head attention, resnet
    m += 2 * _resnet(c, c, h, w) + 4 * n * c * c + 2 * n * n * c
    rev = list(reversed(ch))
    for i in range(len(rev)):
        for _ in range(cfg["layers_per_block"] + 1):
            m += _resnet(c, rev[i], h, w)
            c = rev[i]
        if i < len(rev) - 1:
            h, w = h * 2, w * 2
            m += _conv(c, c, 3, h, w)
    return m + _conv(c, cfg["out_channels"], 3, h, w)


def clip_text_macs(cfg, n=77):
    """Multiply-adds of one CLIPTextModel forward over n tokens (all layers)."""
    c, f, layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    return layers * (4 * n * c * c + 2 * n * n * c + 2 * n * c * f)


def model_flops(model_dir, size):
    """GFLOP per image at size x size: unet (one forward, batch 1), vae (decode), text (one prompt)."""
    def cfg(sub):
        with open(os.path.join(model_dir, sub, "config.json")) as f:
            return json.load(f)
    lat = size // 8
    return {
        "unet": 2 * unet_macs(cfg("unet"), lat, lat) / 1e9,
        "vae": 2 * vae_decoder_macs(cfg("vae"), lat, lat) / 1e9,
        "text": 2 * (clip_text_macs(cfg("text_encoder")) + (clip_text_macs(cfg("text_encoder_2"))
                     if os.path.exists(os.path.join(model_dir, "text_encoder_2")) else 0)) / 1e9,
    }


if __name__ == "__main__":
    dirs = sys.argv[1:] or [os.path.expanduser(f"~/.cache/diffusiond/{m}") for m in ("sd15", "sd21base")]
    for d in dirs:
        for s in (256, 512):
            f = model_flops(d, s)
            print(f"{os.path.basename(d.rstrip('/')):10s} {s}x{s}: UNet {f['unet']:7.1f} GFLOP/forward/image, "
                  f"VAE decode {f['vae']:7.1f} GFLOP, text encoder {f['text']:5.1f} GFLOP/prompt")
