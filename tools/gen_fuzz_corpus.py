#!/usr/bin/env python3
"""Writes the seed corpora for the safetensors and png fuzz targets.

    python3 tools/gen_fuzz_corpus.py        (from the repository root)

tests/fuzz/corpus/safetensors/  small valid files (every dtype, metadata,
                                scalars, empty tensors, holes, unaligned)
                                and one file per rejection path.
tests/fuzz/corpus/png/          tiny images in every colour type and bit
                                depth, interlaced or not, with tEXt / zTXt /
                                iTXt "parameters", plus broken ones.

Needs only the standard library: PNGs are assembled chunk by chunk here so
that every format (16-bit RGB, Adam7, text after IDAT...) can be covered.
"""
import json
import os
import shutil
import struct
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ST_DIR = os.path.join(ROOT, "tests/fuzz/corpus/safetensors")
PNG_DIR = os.path.join(ROOT, "tests/fuzz/corpus/png")


def put(d, name, data):
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# --------------------------------------------------------------------------
# safetensors

def st(header, data=b"", pad=True):
    h = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def t(dtype, shape, begin, end):
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def gen_safetensors():
    for f in ("basic.safetensors", "unaligned.safetensors"):
        shutil.copy(os.path.join(ROOT, "tests/data/st", f), os.path.join(ST_DIR, f))
    sizes = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2,
             "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1,
             "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "C64": 8}
    hdr, off = {"__metadata__": {"format": "pt"}}, 0
    for name, size in sizes.items():
        hdr[name.lower()] = t(name, [2, 1], off, off + 2 * size)
        off += 2 * size
    data = bytes((i * 37) & 255 for i in range(off))
    put(ST_DIR, "all_dtypes", st(hdr, data))
    put(ST_DIR, "f16_specials", st({"h": t("F16", [8], 0, 16)},
        struct.pack("<8H", 0x0000, 0x8000, 0x0001, 0x03ff, 0x7c00, 0xfc00, 0x7e01, 0x7bff)))
    put(ST_DIR, "empty_object", st({}))
    put(ST_DIR, "metadata_only", st({"__metadata__": {"a": "b", "c": ""}}))
    put(ST_DIR, "scalar_and_empty", st({"s": t("F32", [], 0, 4),
                                        "e": t("F32", [0, 1099511627776], 4, 4)}, b"\0\0\x80\x3f"))
    put(ST_DIR, "holes_trailing", st({"a": t("U8", [2], 3, 5), "b": t("I16", [1], 8, 10)},
                                     bytes(range(16))))
    put(ST_DIR, "eight_dims", st({"m": t("I8", [1, 1, 1, 1, 1, 1, 2, 1], 0, 2)}, b"\1\2"))
    # Rejections.
    put(ST_DIR, "bad_truncated", st({"a": t("F32", [4], 0, 16)}, b"\0" * 16)[:-5])
    put(ST_DIR, "bad_header_len", struct.pack("<Q", 2**63) + b"{}")
    put(ST_DIR, "bad_not_json", struct.pack("<Q", 4) + b"{x:1")
    put(ST_DIR, "bad_array", st([1, 2]))
    put(ST_DIR, "bad_dtype", st({"a": t("F12", [1], 0, 4)}, b"\0" * 4))
    put(ST_DIR, "bad_size", st({"a": t("F32", [2], 0, 4)}, b"\0" * 8))
    put(ST_DIR, "bad_range", st({"a": t("F32", [2], 4, 12)}, b"\0" * 8))
    put(ST_DIR, "bad_overlap", st({"a": t("F32", [2], 0, 8), "b": t("U8", [2], 6, 8)}, b"\0" * 8))
    put(ST_DIR, "bad_negative", st({"a": t("F32", [-1], 0, 4)}, b"\0" * 4))
    put(ST_DIR, "bad_huge", st({"a": t("F32", [2**62, 2**62], 0, 4)}, b"\0" * 4))
    dup = (b'{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
           b'"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}')
    put(ST_DIR, "bad_duplicate", struct.pack("<Q", len(dup)) + dup + b"\0\0")
    put(ST_DIR, "bad_metadata", st({"__metadata__": {"n": 1}}))
    put(ST_DIR, "short", b"\x02\0\0")


# --------------------------------------------------------------------------
# png

ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4),
         (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def chunk(kind, body):
    return (struct.pack(">I", len(body)) + kind + body +
            struct.pack(">I", zlib.crc32(kind + body) & 0xffffffff))


def pack_row(samples, depth):
    """Samples (ints) of one row to bytes, MSB first for depth < 8."""
    if depth == 8:
        return bytes(samples)
    if depth == 16:
        return b"".join(struct.pack(">H", s) for s in samples)
    out, acc, nbits = bytearray(), 0, 0
    for s in samples:
        acc, nbits = acc << depth | s, nbits + depth
        if nbits == 8:
            out.append(acc)
            acc, nbits = 0, 0
    if nbits:
        out.append(acc << (8 - nbits))
    return bytes(out)


def png(w, h, color, depth, pixel, interlace=False, pre=(), post=()):
    """pixel(x, y) -> tuple of samples; pre/post: extra chunks around IDAT."""
    raw = bytearray()
    passes = ADAM7 if interlace else [(0, 0, 1, 1)]
    for x0, y0, dx, dy in passes:
        xs, ys = range(x0, w, dx), range(y0, h, dy)
        if not xs or not ys:
            continue
        for y in ys:
            samples = [s for x in xs for s in pixel(x, y)]
            raw += b"\0" + pack_row(samples, depth)
    ihdr = struct.pack(">IIBBBBB", w, h, depth, color, 0, 0, 1 if interlace else 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + b"".join(pre) +
            chunk(b"IDAT", zlib.compress(bytes(raw), 6)) + b"".join(post) +
            chunk(b"IEND", b""))


def text(key, value):
    return chunk(b"tEXt", key + b"\0" + value)


def ztext(key, value):
    return chunk(b"zTXt", key + b"\0\0" + zlib.compress(value))


def itext(key, value):
    return chunk(b"iTXt", key + b"\0\0\0" + b"\0" + b"\0" + value)


def gen_png():
    rgb = lambda x, y: ((x * 40) & 255, (y * 50) & 255, (x * y * 7) & 255)
    params = b"a cat, Steps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 8x6"
    put(PNG_DIR, "rgb8_text", png(8, 6, 2, 8, rgb, pre=[text(b"parameters", params)]))
    put(PNG_DIR, "rgb8_ztxt_after", png(5, 3, 2, 8, rgb, post=[ztext(b"parameters", params)]))
    put(PNG_DIR, "rgb8_itxt", png(3, 3, 2, 8, rgb,
                                  pre=[itext(b"parameters", "caf\u00e9 \u65e5\u672c".encode())]))
    put(PNG_DIR, "rgb16_adam7", png(9, 7, 2, 16, lambda x, y: (x * 7000, y * 9000, 65535),
                                    interlace=True))
    put(PNG_DIR, "rgba8", png(4, 4, 6, 8, lambda x, y: rgb(x, y) + (x * 60,)))
    put(PNG_DIR, "rgba16", png(3, 2, 6, 16, lambda x, y: (x * 20000, 1, 2, y * 60000)))
    for d in (1, 2, 4, 8, 16):
        put(PNG_DIR, "gray%d" % d, png(11, 3, 0, d, lambda x, y: ((x + y) % (1 << d),),
                                       interlace=d == 2))
    put(PNG_DIR, "gray_alpha8", png(4, 3, 4, 8, lambda x, y: (x * 60, y * 100)))
    put(PNG_DIR, "gray_alpha16", png(2, 2, 4, 16, lambda x, y: (x * 30000, 5)))
    plte = chunk(b"PLTE", bytes(range(48)))
    trns = chunk(b"tRNS", b"\0\x80\xff")
    for d in (1, 2, 4, 8):
        put(PNG_DIR, "palette%d" % d, png(7, 5, 3, d, lambda x, y: ((x * y) % (1 << d),),
                                          pre=[plte, trns]))
    put(PNG_DIR, "gray8_trns_gama", png(4, 4, 0, 8, lambda x, y: (x * 16,),
                                        pre=[chunk(b"gAMA", struct.pack(">I", 45455)),
                                             chunk(b"tRNS", b"\0\x10")]))
    good = png(4, 4, 2, 8, rgb, pre=[text(b"parameters", b"x")])
    put(PNG_DIR, "bad_truncated", good[:-20])
    bad = bytearray(good)
    bad[-20] ^= 0xff                     # inside IDAT: CRC mismatch
    put(PNG_DIR, "bad_crc", bytes(bad))
    put(PNG_DIR, "bad_no_iend", good[:-12])
    bad = bytearray(good)
    bad[33:37] = struct.pack(">I", 0x5a00000c)   # tEXt claims 1.5 GB
    put(PNG_DIR, "bad_chunk_len", bytes(bad))
    put(PNG_DIR, "bad_too_wide", png(600, 1, 0, 1, lambda x, y: (0,)))
    put(PNG_DIR, "bad_signature", b"\x89PNX\r\n\x1a\n" + good[8:])
    put(PNG_DIR, "bad_palette_missing", png(2, 2, 3, 8, lambda x, y: (0,)))


if __name__ == "__main__":
    for d in (ST_DIR, PNG_DIR):
        os.makedirs(d, exist_ok=True)
    gen_safetensors()
    gen_png()
