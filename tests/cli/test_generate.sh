#!/usr/bin/env bash
# tests/cli/test_generate.sh - `diffusiond generate` end to end: the image,
# its determinism, progress output, argument errors and broken model folders
# (a one-line error naming the file, non-zero exit, never a crash).
set -uo pipefail
BUILD=${BUILD:-build}
BIN="$BUILD/diffusiond"
MODEL=tests/data/tiny-sd1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
ok()   { echo "OK       $1"; }
fail() { echo "NOT OK   $1"; fails=$((fails + 1)); }

# expect_err NAME EXIT_CODE PATTERN -- command...
expect_err() {
    local name=$1 code=$2 pat=$3
    shift 4
    "$@" >"$tmp/out" 2>"$tmp/err"
    local rc=$?
    local lines
    lines=$(wc -l <"$tmp/err")
    if [ "$rc" -eq "$code" ] && grep -q -- "$pat" "$tmp/err" && [ "$lines" -le 2 ] && [ "$rc" -lt 128 ]; then
        ok "$name"
    else
        fail "$name (exit $rc, want $code; stderr: $(head -c 300 "$tmp/err"))"
    fi
}

gen() { "$BIN" generate --model "$MODEL" --steps 4 --quiet "$@"; }

# 1. an image, deterministic for a seed, different for another seed
if gen --prompt "a red fox" --seed 7 --output "$tmp/a.png" && gen --prompt "a red fox" --seed 7 --output "$tmp/b.png" \
   && gen --prompt "a red fox" --seed 8 --output "$tmp/c.png"; then
    if [ "$(head -c 8 "$tmp/a.png" | od -An -tx1 | tr -d ' \n')" = "89504e470d0a1a0a" ]; then ok "png written"; else fail "png magic"; fi
    if cmp -s "$tmp/a.png" "$tmp/b.png"; then ok "same seed, same file"; else fail "same seed differs"; fi
    if ! cmp -s "$tmp/a.png" "$tmp/c.png"; then ok "other seed, other image"; else fail "seed ignored"; fi
    if grep -a -q "Steps: 4, Sampler: PLMS, CFG scale: 7.5, Seed: 7, Size: 128x128, Model: tiny-sd1" "$tmp/a.png"; then
        ok "parameters text chunk"; else fail "parameters text chunk"; fi
else
    fail "generate"
fi

# the bundled model is the default
(cd /tmp && "$OLDPWD/$BIN" generate --steps 1 --quiet --prompt x --output "$tmp/g.png") && ok "bundled default model" || fail "bundled default model"

# 2. summary line when stderr is not a terminal; random seed reported
"$BIN" generate --model "$MODEL" --steps 2 --prompt x --output "$tmp/d.png" 2>"$tmp/err"
if grep -q "^$tmp/d.png: 128x128, 2 steps, pndm, fp32, seed [0-9]*, [0-9.]* s$" "$tmp/err"; then ok "summary line"; else fail "summary line: $(cat "$tmp/err")"; fi

# progress bar when stderr is a terminal (util-linux `script` gives a pty)
if command -v script >/dev/null; then
    script -qec "$BIN generate --model $MODEL --steps 3 --prompt x --output $tmp/t.png" /dev/null >"$tmp/tty" 2>&1
    if grep -q "step 4/4 .* s/step  ETA" "$tmp/tty"; then ok "progress bar on a tty"; else fail "progress bar: $(head -c 300 "$tmp/tty")"; fi
fi

# 3. other settings: scheduler, size, negative prompt, eta, clip skip, variant
gen --prompt "a castle" --negative-prompt "blurry" --scheduler ddim --eta 0.5 --width 96 --height 64 \
    --clip-skip 1 --guidance 5 --seed 1 --output "$tmp/e.png" && ok "all options" || fail "all options"
"$BIN" generate --model tests/data/tiny-sd2 --variant fp16 --steps 2 --quiet --prompt "a cat!!" \
    --output "$tmp/f.png" && ok "sd2 fp16 variant" || fail "sd2 fp16 variant"

# bf16 where the CPU has no bf16 dot products (forced here): one note, bf16
# weights with float32 products (the wide backend), an image close to the
# fp32 one (bf16-rounded weights), not an emulated bf16 one several times slower
gen --prompt "a red fox" --seed 7 --output "$tmp/p32.png" 2>/dev/null
DIFFUSIOND_CPU=avx512 "$BIN" generate --model "$MODEL" --steps 4 --prompt "a red fox" --seed 7 \
    --precision bf16 --output "$tmp/p16.png" 2>"$tmp/err"
if grep -q "^diffusiond: note: bf16: weights held in bf16, products computed in float32.*avx512 kernels" "$tmp/err" \
   && grep -q ", bf16, seed 7" "$tmp/err" && [ -s "$tmp/p16.png" ]; then
    ok "bf16 without bf16 dot products: bf16 weights, float32 products"
else
    fail "bf16 without bf16 dot products: $(cat "$tmp/err")"
fi
DIFFUSIOND_CPU=avx512 "$BIN" --version | grep -q "^--precision bf16: bf16 weights widened for float32 products" \
    && ok "--version says what bf16 does on this CPU" || fail "--version: bf16 line"

# image-to-image, inpainting, batches (PNG and JPEG inputs made by the harness)
python3 - "$tmp" <<'PY'
import struct, sys, zlib
def png(path, w, h, px):
    raw = b"".join(b"\0" + bytes(px(x, y) for x in range(w) for _ in range(3)) for y in range(h))
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    open(path, "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                           + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
png(sys.argv[1] + "/init.png", 150, 100, lambda x, y: (x * 7 + y * 3) % 256)
png(sys.argv[1] + "/mask.png", 60, 40, lambda x, y: 255 if x > 30 else 0)
PY
if "$BIN" generate --model tests/data/tiny-sd1-i2i --steps 4 --quiet --prompt "a fox" --seed 3 --init-image "$tmp/init.png" \
       --strength 0.6 --batch 2 --output "$tmp/i2i.png" && [ -s "$tmp/i2i-1.png" ] && [ -s "$tmp/i2i-2.png" ] \
   && grep -a -q "Size: 144x96.*Denoising strength: 0.6" "$tmp/i2i-1.png" && ! cmp -s "$tmp/i2i-1.png" "$tmp/i2i-2.png"; then
    ok "image-to-image batch of 2 (144x96 from 150x100)"
else
    fail "image-to-image batch"
fi
"$BIN" generate --model tests/data/tiny-sd1-inpaint --steps 3 --quiet --prompt "a fox" --init-image "$tmp/init.png" \
    --mask "$tmp/mask.png" --output "$tmp/inp.png" && ok "inpainting (9-channel UNet)" || fail "inpainting"
expect_err "mask without init image" 2 "mask needs --init-image" -- gen --prompt x --mask "$tmp/mask.png" --output "$tmp/x.png"
printf 'GIF89a' > "$tmp/x.gif"
expect_err "init image not PNG/JPEG" 1 "x.gif: not a PNG or JPEG image" -- gen --prompt x --init-image "$tmp/x.gif" --output "$tmp/x.png"
expect_err "inpainting model without a mask" 2 "inpainting model" -- "$BIN" generate --model tests/data/tiny-sd1-inpaint --prompt x --output "$tmp/x.png"

# 4. bad arguments: exit 2, one line
expect_err "width not multiple of 8" 2 "multiple of 8" -- gen --prompt x --width 100 --output "$tmp/x.png"
expect_err "steps < 1" 2 "steps must be" -- gen --prompt x --steps 0 --output "$tmp/x.png"
expect_err "steps not a number" 2 "steps must be" -- gen --prompt x --steps 4x --output "$tmp/x.png"
expect_err "unknown scheduler" 2 "unknown scheduler 'foo'" -- gen --prompt x --scheduler foo --output "$tmp/x.png"
expect_err "eta out of range" 2 "eta must be" -- gen --prompt x --eta 2 --output "$tmp/x.png"
expect_err "bad seed" 2 "seed must be" -- gen --prompt x --seed 1e5 --output "$tmp/x.png"
gen --prompt x --seed -1 --output "$tmp/n1.png" && ok "negative seed accepted" || fail "negative seed accepted"
expect_err "missing prompt" 2 "\-\-prompt is required" -- gen --output "$tmp/x.png"
expect_err "missing output" 2 "output is required" -- gen --prompt x
expect_err "clip skip too big" 2 "clip_skip must be" -- gen --prompt x --clip-skip 3 --output "$tmp/x.png"
expect_err "unknown option" 2 "unknown or incomplete option '--bogus'" -- gen --prompt x --bogus --output "$tmp/x.png"
expect_err "unwritable output" 1 "$tmp/nodir/x.png" -- gen --prompt x --output "$tmp/nodir/x.png"

# 5. broken model folders: one line naming the file, exit 1
broken() { rm -rf "$tmp/m"; cp -r "$MODEL" "$tmp/m"; }
broken; rm "$tmp/m/unet/diffusion_pytorch_model.safetensors"; touch "$tmp/m/unet/diffusion_pytorch_model.bin"
expect_err "bin weights" 1 "diffusion_pytorch_model.bin: not a PyTorch checkpoint" -- gen --model "$tmp/m" --prompt x --output "$tmp/x.png"
broken; truncate -s 5000 "$tmp/m/unet/diffusion_pytorch_model.safetensors"
expect_err "truncated safetensors" 1 "unet/diffusion_pytorch_model.safetensors" -- gen --model "$tmp/m" --prompt x --output "$tmp/x.png"
broken; printf 'garbage' > "$tmp/m/vae/diffusion_pytorch_model.safetensors"
expect_err "garbage safetensors" 1 "vae/diffusion_pytorch_model.safetensors" -- gen --model "$tmp/m" --prompt x --output "$tmp/x.png"
broken; rm "$tmp/m/text_encoder/config.json"
expect_err "missing config" 1 "text_encoder/config.json: missing" -- gen --model "$tmp/m" --prompt x --output "$tmp/x.png"
broken; sed -i 's/"cross_attention_dim": 32/"cross_attention_dim": 48/' "$tmp/m/unet/config.json"
expect_err "config/weights mismatch" 1 "attn2.to_k.weight' has shape \[16,32\] but the config implies \[16,48\]" -- gen --model "$tmp/m" --prompt x --output "$tmp/x.png"
broken; sed -i 's/PNDMScheduler/FancyScheduler/' "$tmp/m/scheduler/scheduler_config.json"
expect_err "unknown scheduler class" 1 "FancyScheduler" -- gen --model "$tmp/m" --prompt x --output "$tmp/x.png"
broken; sed -i 's/"AutoencoderKL"/"AutoencoderTiny"/' "$tmp/m/model_index.json"
expect_err "unknown vae class" 1 "AutoencoderTiny" -- gen --model "$tmp/m" --prompt x --output "$tmp/x.png"
printf 'Mposix\nsystem\n' > "$tmp/evil.ckpt"
expect_err "ckpt that is not a zip" 1 "evil.ckpt: not a PyTorch checkpoint" -- gen --model "$tmp/evil.ckpt" --prompt x --output "$tmp/x.png"
"$BIN" generate --model tests/data/single/tiny-sd2.ckpt --config tests/data/tiny-sd2 --steps 2 --quiet --prompt x \
    --output "$tmp/ck.png" && ok "a .ckpt checkpoint" || fail "a .ckpt checkpoint"
expect_err "not a model folder" 1 "model_index.json: missing" -- gen --model "$tmp" --prompt x --output "$tmp/x.png"
expect_err "missing variant" 1 "variant \"fp16\" not found" -- gen --variant fp16 --prompt x --output "$tmp/x.png"

echo "$fails failed"
[ "$fails" -eq 0 ]
