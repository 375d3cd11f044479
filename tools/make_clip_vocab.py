#!/usr/bin/env python3
"""Build a diffusers-style CLIP tokenizer folder from OpenAI's BPE file.

Writes vocab.json + merges.txt (the same content as the tokenizer of
openai/clip-vit-large-patch14, which SD 1.x/2.x ship in tokenizer/),
tokenizer_config.json + special_tokens_map.json in the SD 1.x style, and a
licence note.

    python3 tools/make_clip_vocab.py \
        [/work/shared/reference/clip/bpe_simple_vocab_16e6.txt.gz] \
        [data/tokenizers/clip]

How the vocabulary is built (OpenAI clip/simple_tokenizer.py, reimplemented):
ids 0..255 are the 256 byte symbols of bytes_to_unicode (printable bytes
first, then the other 68), 256..511 the same with "</w>", then one token per
merge in merge order, then <|startoftext|>, <|endoftext|>.
"""
import gzip
import json
import os
import sys

N_MERGES = 49152 - 256 - 2  # 48894: the merges CLIP actually uses


def byte_symbols():
    """The 256 byte symbols in id order (GPT-2 / CLIP bytes_to_unicode)."""
    printable = (list(range(ord("!"), ord("~") + 1)) +
                 list(range(ord("\u00a1"), ord("\u00ac") + 1)) +
                 list(range(ord("\u00ae"), ord("\u00ff") + 1)))
    others = [b for b in range(256) if b not in printable]
    cps = {b: b for b in printable}
    for i, b in enumerate(others):
        cps[b] = 256 + i
    return [chr(cps[b]) for b in printable + others]


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else \
        "/work/shared/reference/clip/bpe_simple_vocab_16e6.txt.gz"
    out = sys.argv[2] if len(sys.argv) > 2 else "data/tokenizers/clip"
    os.makedirs(out, exist_ok=True)

    lines = gzip.open(src).read().decode("utf-8").split("\n")
    merges = lines[1:1 + N_MERGES]  # line 0 is the version header
    assert len(merges) == N_MERGES
    assert all(len(m.split(" ")) == 2 for m in merges)

    syms = byte_symbols()
    tokens = syms + [s + "</w>" for s in syms]
    tokens += [m.replace(" ", "") for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(tokens)}
    assert len(vocab) == 49408, len(vocab)

    with open(os.path.join(out, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False, separators=(",", ":"))
    with open(os.path.join(out, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        f.write("\n".join(merges) + "\n")

    # SD 1.x (runwayml/stable-diffusion-v1-5) tokenizer files.
    def added(content):
        return {"content": content, "lstrip": False, "normalized": True,
                "rstrip": False, "single_word": False}
    config = {
        "add_prefix_space": False,
        "bos_token": dict(added("<|startoftext|>"), __type="AddedToken"),
        "do_lower_case": True,
        "eos_token": dict(added("<|endoftext|>"), __type="AddedToken"),
        "errors": "replace",
        "model_max_length": 77,
        "pad_token": "<|endoftext|>",
        "tokenizer_class": "CLIPTokenizer",
        "unk_token": dict(added("<|endoftext|>"), __type="AddedToken"),
    }
    special = {
        "bos_token": added("<|startoftext|>"),
        "eos_token": added("<|endoftext|>"),
        "pad_token": "<|endoftext|>",
        "unk_token": added("<|endoftext|>"),
    }
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    with open(os.path.join(out, "special_tokens_map.json"), "w") as f:
        json.dump(special, f, indent=2)
        f.write("\n")

    with open(os.path.join(out, "LICENSE"), "w") as f:
        f.write(LICENSE)


LICENSE = """vocab.json and merges.txt are derived from OpenAI CLIP's
bpe_simple_vocab_16e6.txt.gz (https://github.com/openai/CLIP), by
tools/make_clip_vocab.py. They hold the same data as the tokenizer files of
openai/clip-vit-large-patch14 used by Stable Diffusion.

MIT License

Copyright (c) 2021 OpenAI

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""

if __name__ == "__main__":
    main()
