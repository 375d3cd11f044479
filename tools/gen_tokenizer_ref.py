#!/usr/bin/env python3
"""Reference ids for the C tokenizer, from transformers' CLIPTokenizer.

    python3 tools/gen_tokenizer_ref.py            # -> tests/data/tokenizer_ref.json
    python3 tools/gen_tokenizer_ref.py --codepoints /tmp/cp.tsv
                                                  # every code point (dev check)

Needs transformers (5.x) and data/tokenizers/clip (tools/make_clip_vocab.py).
Ids are what diffusers' StableDiffusionPipeline gets:
tokenizer(text, padding="max_length", max_length=77, truncation=True).

tokenizer_ref.json:
  "cases":   [{text | text_hex, ids (SD 1.x folder, pad 49407),
               ids_sd2 (SD 2.x folder, pad "!" = 0), n_tokens}]
             text_hex: raw bytes (invalid UTF-8), which transformers gets as
             bytes.decode("utf-8", errors="replace").
             n_tokens: the untruncated prompt token count (SD 1.x).
  "configs": [{name, files: {file name: file text}, bos_id, eos_id, pad_id,
               max_length, vocab_size, cases: [{text, ids}]}]
             tokenizer folders that differ only in their JSON files (the C
             test writes them next to links to the shared vocab/merges).

--codepoints writes one line per code point (1..0x10FFFF, no surrogates)
and per canonically decomposable character (in NFD form):
"<probe as UTF-8 hex>\t<ids>", the probe's ids without bos/eos, for the
opt-in exhaustive C test (TOKENIZER_CODEPOINTS=/tmp/cp.tsv).
"""
import json
import os
import shutil
import sys
import tempfile
import unicodedata
import warnings

warnings.filterwarnings("ignore")
from transformers import CLIPTokenizer  # noqa: E402

VOCAB_DIR = "data/tokenizers/clip"
OUT = "tests/data/tokenizer_ref.json"
SOT, EOT = "<|startoftext|>", "<|endoftext|>"


def added(content, normalized=True, type_field=False):
    d = {"content": content, "lstrip": False, "normalized": normalized,
         "rstrip": False, "single_word": False}
    if type_field:
        d = {"__type": "AddedToken", **d}
    return d


# SD 2.x (stabilityai/stable-diffusion-2-1-base) tokenizer JSON files.
SD2_CONFIG = {
    "add_prefix_space": False,
    "bos_token": added(SOT, type_field=True),
    "do_lower_case": True,
    "eos_token": added(EOT, type_field=True),
    "errors": "replace",
    "model_max_length": 77,
    "name_or_path": "./stability/stable-diffusion-2-1-base/tokenizer",
    "pad_token": EOT,
    "special_tokens_map_file": "./special_tokens_map.json",
    "tokenizer_class": "CLIPTokenizer",
    "unk_token": added(EOT, type_field=True),
}
SD2_MAP = {"bos_token": added(SOT), "eos_token": added(EOT), "pad_token": "!",
           "unk_token": added(EOT)}

LONG = ("a highly detailed digital painting of a majestic ancient castle on a "
        "cliff above a stormy sea, dramatic lighting, volumetric clouds, "
        "intricate stonework, flying dragons in the distance, golden hour, "
        "cinematic composition, trending on artstation, concept art by greg "
        "rutkowski and alphonse mucha, ultra sharp focus, 8k resolution, "
        "unreal engine render, octane render, masterpiece, best quality")

TEXTS = [
    "a photo of an astronaut riding a horse on mars",
    "A painting of a squirrel eating a burger",
    "",
    "Hello,   World!! 123 don't",
    "photorealistic 8k render, trending on artstation",
    "x",
    "aaaaaaaa",
    "   ",
    "\t\n  \r\n",
    "a\tb\nc\r\nd  e\u000bf\u000cg",
    " leading and trailing spaces ",
    # accents, NFC vs NFD
    "Café crème brûlée à la française",
    "Cafe\u0301 cre\u0300me bru\u0302le\u0301e a\u0300 la franc\u0327aise",
    "Tiếng Việt có dấu",
    "e\u0323\u0301 q\u0301\u0323 (combining marks out of canonical order)",
    "z\u0361\u0307 stacked combining a\u0308\u0308\u0308",
    "\u212b \u2126 \u212a singletons: angstrom ohm kelvin",
    "\u1100\u1161\u11a8 \uac01 hangul jamo vs syllable",
    # scripts
    "東京タワーの夜景、美しい",
    "한국어 텍스트",
    "مرحبا بالعالم",
    "שלום עולם",
    "नमस्ते दुनिया",
    "สวัสดีชาวโลก",
    "δοκιμή ΔΟΚΙΜΉ",
    "日本" * 50,
    # emoji
    "emoji \U0001F431\u200d\U0001F464 \U0001F680\U0001F525 \U0001F44D\U0001F3FD \u2764\ufe0f",
    "\U0001F600" * 30,
    # case mapping
    "Straße STRASSE ß \u1e9e",
    "\u0130stanbul ISTANBUL \u0131i \u0130 I\u0307",
    "ΟΔΥΣΣΕΥΣ Σίσυφος ΣΑΣ",
    "\u01c4emal \u01c5 \u01c6 \u01c5ungla",
    "\u01f0 \u0390 \ufb03 \u0149 ligatures ﬁne ﬀ",
    "𝓗𝓮𝓵𝓵𝓸 𝔀𝓸𝓻𝓵𝓭 \u24b6\u24b7 \u24d0",
    "ＦＵＬＬ－ＷＩＤＴＨ\u3000ｔｅｘｔ１２３",
    "ABCdef GHI jkl MNO",
    # numbers
    "1234 3.14 1,000 -5 +7 1e10 0x1F",
    "\u00bd \u00b2 \u00b3 \u2177 \u0663 \u0664 \u096b \u216b \u2474",
    "1" * 100,
    # punctuation
    "!!!???...,,,;;;",
    "hello!!!world???",
    "wow! amazing!! best quality!!!",
    "!" * 100 + "?" * 50,
    "masterpiece, best quality, (ultra-detailed:1.2), [bad hands], {cat|dog}",
    "email me at foo@example.com or https://example.com/p?q=1&x=2#frag",
    "C++ / C# / F# & <html> $100 50% ~tilde `code` ^caret_underscore",
    # contractions
    "'s 'S 'LL 'll 're 'Re 've 'm 'd 't",
    "it's I'M we'RE they've you'd she'll don't",
    "''s '''quote''' \u2019s rock'n'roll 'x '",
    # white space and controls
    "new\u00a0line\u2003em\u3000space\u200bzero-width\ufeffbom",
    "\u0085nel\u2028ls\u2029ps\u1680ogham\u180emvs",
    "a\x01b\x7fc\x1fd\x1ce",
    # special tokens in the text
    SOT + "a cat" + EOT,
    "<|ENDOFTEXT|> and <|StartOfText|>",
    "hi!!" + EOT + "there",
    EOT + "!!",
    "x" + SOT + SOT + "<|endoftext",
    # long prompts and words
    LONG,
    "a, " * 40,
    "a" * 300,
    "supercalifragilisticexpialidocious antidisestablishmentarianism "
    "pneumonoultramicroscopicsilicovolcanoconiosis",
]

# Invalid UTF-8: the C tokenizer replaces it as Python's errors="replace".
BYTES = [
    b"caf\xc3 \xff\xfe ok \xe2\x82 \xed\xa0\x80 \xf0\x9f\x98 end",
    b"\xc0\xaf \xe0\x80\xaf \xf4\x90\x80\x80 \xf8\x88\x80\x80\x80 \x80\xbf",
    b"\xf0\x9f\x98\x80\xf0\x9f\x98 \xe6\x97\xa5\xe6\x97",
]

# Tokenizer folders differing in their JSON files. The texts show which
# added tokens are cut out and whether case matters for them.
CONFIG_TEXTS = [
    "a <|ENDOFTEXT|> b <|STARTOFTEXT|> c",
    "x<|endoftext|>!y <|startoftext|>",
    "wow!! <pad> <x> <cat-toy> <CAT-TOY> hi",
    "",
]
SD1_DIR_FILES = ["tokenizer_config.json", "special_tokens_map.json"]
TMP_DIRS = []


def sd1_files():
    return {f: json.load(open(os.path.join(VOCAB_DIR, f))) for f in SD1_DIR_FILES}


def configs():
    A = lambda c, n: added(c, n, type_field=True)  # noqa: E731
    dec = lambda i, c, n, s: (str(i), {"content": c, "lstrip": False, "normalized": n,  # noqa
                                       "rstrip": False, "single_word": False, "special": s})
    sdxl2 = {"add_prefix_space": False, "bos_token": SOT, "eos_token": EOT, "pad_token": "!",
             "unk_token": EOT, "model_max_length": 77, "do_lower_case": True,
             "added_tokens_decoder": dict([dec(0, "!", False, True), dec(49406, SOT, True, True),
                                           dec(49407, EOT, False, True)])}
    return [
        ("sd1", sd1_files()),
        ("sd2", {"tokenizer_config.json": SD2_CONFIG, "special_tokens_map.json": SD2_MAP}),
        ("sd2_config_only", {"tokenizer_config.json": SD2_CONFIG}),
        ("sd2_map_only", {"special_tokens_map.json": SD2_MAP}),
        ("no_json", {}),
        ("decoder_sdxl2", {"tokenizer_config.json": sdxl2,
                           "special_tokens_map.json": {"pad_token": EOT}}),
        ("decoder_new_token", {"tokenizer_config.json": {
            "model_max_length": 77,
            "added_tokens_decoder": dict([dec(49406, SOT, True, True), dec(49407, EOT, False, True),
                                          dec(49408, "<cat-toy>", True, False)])}}),
        ("added_tokens_json", {"tokenizer_config.json": {"model_max_length": 77},
                               "added_tokens.json": {"<cat-toy>": 49408}}),
        ("eos_str_unk_norm", {"tokenizer_config.json": {
            "eos_token": EOT, "unk_token": A(EOT, True), "pad_token": EOT}}),
        ("eos_norm_unk_str", {"tokenizer_config.json": {
            "eos_token": A(EOT, True), "unk_token": EOT, "pad_token": A(EOT, True)}}),
        ("eos_not_unk_norm", {"tokenizer_config.json": {
            "eos_token": A(EOT, False), "unk_token": A(EOT, True), "pad_token": A(EOT, False)}}),
        ("map_objects", {"special_tokens_map.json": {
            "bos_token": {"content": SOT}, "pad_token": {"content": "!", "normalized": True}}}),
        ("pad_unknown", {"tokenizer_config.json": {"pad_token": "<pad>"}}),
        ("additional", {"special_tokens_map.json": {"additional_special_tokens": ["<x>", "<pad>"]}}),
        ("max_length_64", {"tokenizer_config.json": {"model_max_length": 64}}),
        ("max_length_huge", {"tokenizer_config.json": {"model_max_length": 1e30}}),
        ("max_length_bigint", {"tokenizer_config.json": {"model_max_length": int(1e30)}}),
    ]


def make_dir(files):
    d = tempfile.mkdtemp(prefix="gen_tokenizer_ref_")
    TMP_DIRS.append(d)
    for f in ["vocab.json", "merges.txt"]:
        shutil.copy(os.path.join(VOCAB_DIR, f), d)
    for name, content in files.items():
        with open(os.path.join(d, name), "w") as fp:
            json.dump(content, fp)
    return d


def encode(tok, text, max_length=77):
    return tok(text, padding="max_length", max_length=max_length, truncation=True).input_ids


def check_vocab(tok):
    """The vocab folder gives the reference's 11.1 ids."""
    expect = {
        "a photo of an astronaut riding a horse on mars":
            [320, 1125, 539, 550, 18376, 6765, 320, 4558, 525, 7496],
        "Hello,   World!! 123 don't": [3306, 267, 1002, 748, 272, 273, 274, 847, 713],
        "x": [343],
        "aaaaaaaa": [6727, 19336],
    }
    for text, ids in expect.items():
        got = encode(tok, text)
        assert got[1:len(ids) + 1] == ids and got[0] == 49406 and got[len(ids) + 1] == 49407, text
    assert len(tok) == 49408 and tok.convert_tokens_to_ids("!</w>") == 256


def main():
    sd1 = CLIPTokenizer.from_pretrained(VOCAB_DIR)
    check_vocab(sd1)
    sd2 = CLIPTokenizer.from_pretrained(make_dir(dict(configs()[1][1])))
    assert sd1.pad_token_id == 49407 and sd2.pad_token_id == 0

    if len(sys.argv) == 3 and sys.argv[1] == "--codepoints":
        return codepoints(sd1, sys.argv[2])

    cases = []
    for item in TEXTS + BYTES:
        text = item.decode("utf-8", errors="replace") if isinstance(item, bytes) else item
        case = {"text_hex": item.hex()} if isinstance(item, bytes) else {"text": text}
        full = sd1(text).input_ids
        case.update(ids=encode(sd1, text), ids_sd2=encode(sd2, text), n_tokens=len(full) - 2)
        cases.append(case)

    out_configs = []
    for name, files in configs():
        tok = CLIPTokenizer.from_pretrained(make_dir(files))
        # transformers keeps 1e30 for an absent or huge model_max_length; we use 77.
        max_length = tok.model_max_length if tok.model_max_length <= 1e6 else 77
        out_configs.append({
            "name": name, "files": {k: json.dumps(v, indent=1) for k, v in files.items()},
            "bos_id": tok.bos_token_id, "eos_id": tok.eos_token_id,
            "pad_id": tok.pad_token_id, "max_length": max_length, "vocab_size": len(tok),
            "cases": [{"text": t, "ids": encode(tok, t, max_length)} for t in CONFIG_TEXTS],
        })

    with open(OUT, "w", encoding="utf-8") as f:
        f.write('{"cases": [\n')
        f.write(",\n".join(json.dumps(c, ensure_ascii=False) for c in cases))
        f.write('\n], "configs": [\n')
        f.write(",\n".join(json.dumps(c, ensure_ascii=False) for c in out_configs))
        f.write("\n]}\n")
    print(f"{OUT}: {len(cases)} cases, {len(out_configs)} configs")


def codepoints(tok, path):
    backend = tok.backend_tokenizer
    backend.no_padding()
    backend.no_truncation()
    probes = []
    for c in range(1, 0x110000):
        if 0xD800 <= c <= 0xDFFF:
            continue
        ch = chr(c)
        # alone, between letters, digits, punctuation, doubled
        probes.append(ch + " a" + ch + "a 1" + ch + "1 !" + ch + "! " + ch + ch)
    for c in range(0x80, 0x110000):
        d = unicodedata.decomposition(chr(c)) if not 0xD800 <= c <= 0xDFFF else ""
        if d and not d.startswith("<"):
            probes.append("a" + unicodedata.normalize("NFD", chr(c)) + "a")
    with open(path, "w") as f:
        for i in range(0, len(probes), 4096):
            batch = probes[i:i + 4096]
            encs = backend.encode_batch(batch, add_special_tokens=False)
            for p, e in zip(batch, encs):
                f.write(p.encode("utf-8").hex() + "\t" + " ".join(map(str, e.ids)) + "\n")
    print(f"{path}: {len(probes)} probes")


if __name__ == "__main__":
    try:
        main()
    finally:
        for d in TMP_DIRS:
            shutil.rmtree(d, ignore_errors=True)
