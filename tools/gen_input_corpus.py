#!/usr/bin/env python3
"""gen_input_corpus.py - seed corpora for the fuzz targets of client inputs.

    python3 tools/gen_input_corpus.py        (writes tests/fuzz/corpus/{image,base64,form})

image: PNGs of every color type and bit depth (Pillow), interlaced, with
alpha and tRNS, JPEGs (baseline, progressive, gray, CMYK), truncated files,
a 20000x20000 header (decompression bomb). base64: bare, padded, unpadded,
URL-safe, data: URLs, broken ones. form: multipart bodies as the openai
package sends them (image, image[] x2, mask, text fields), malformed ones,
an urlencoded body. The first byte of a form input picks its Content-Type
(fuzz_form.c).
"""
import base64
import io
import os
import struct
import zlib

from PIL import Image

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fuzz", "corpus")


def out(kind, name, data):
    d = os.path.join(ROOT, kind)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def save(img, fmt, **kw):
    b = io.BytesIO()
    img.save(b, fmt, **kw)
    return b.getvalue()


def gradient(mode, w=13, h=7):
    img = Image.new("RGB", (w, h))
    img.putdata([(x * 19 % 256, y * 37 % 256, (x + y) * 11 % 256) for y in range(h) for x in range(w)])
    return img.convert(mode)


def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def main():
    pngs = {
        "rgb.png": save(gradient("RGB"), "PNG"),
        "rgba.png": save(gradient("RGBA"), "PNG"),
        "gray.png": save(gradient("L"), "PNG"),
        "gray_alpha.png": save(gradient("LA"), "PNG"),
        "palette.png": save(gradient("P"), "PNG"),
        "palette_trns.png": save(gradient("P"), "PNG", transparency=3),
        "bilevel.png": save(gradient("1"), "PNG"),
        "gray16.png": save(gradient("I;16"), "PNG"),
    }
    for k, v in pngs.items():
        out("image", k, v)
    out("image", "rgb_truncated.png", pngs["rgb.png"][:60])
    ihdr = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    out("image", "bomb.png", b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) +
        chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b""))
    jpg = save(gradient("RGB", 40, 24), "JPEG", quality=80)
    out("image", "baseline.jpg", jpg)
    out("image", "progressive.jpg", save(gradient("RGB", 40, 24), "JPEG", progressive=True))
    out("image", "gray.jpg", save(gradient("L", 40, 24), "JPEG"))
    out("image", "cmyk.jpg", save(gradient("CMYK", 16, 16), "JPEG"))
    out("image", "truncated.jpg", jpg[: len(jpg) // 2])
    sof = jpg.find(b"\xff\xc0")
    big = bytearray(jpg)
    big[sof + 5:sof + 9] = struct.pack(">HH", 60000, 60000)
    out("image", "bomb.jpg", bytes(big))
    out("image", "text.txt", b"not an image")

    small = pngs["rgb.png"]
    enc = base64.b64encode(small)
    out("base64", "bare", enc)
    out("base64", "unpadded", enc.rstrip(b"="))
    out("base64", "urlsafe", base64.urlsafe_b64encode(small))
    out("base64", "data_url", b"data:image/png;base64," + enc)
    out("base64", "data_url_params", b"DATA:image/jpeg;name=a.jpg;base64," + base64.b64encode(jpg[:90]))
    out("base64", "data_url_plain", b"data:image/png," + enc)
    out("base64", "wrapped", b"\r\n".join(enc[i:i + 76] for i in range(0, len(enc), 76)))
    out("base64", "bad_char", enc[:20] + b"*" + enc[21:])
    out("base64", "after_pad", b"Zg==Zg==")
    out("base64", "one_char", b"Z")
    out("base64", "empty", b"")

    def multipart(parts, boundary="XyZ", close=True):
        b = b""
        for name, filename, data in parts:
            disp = b'form-data; name="%s"' % name.encode()
            if filename:
                disp += b'; filename="%s"' % filename.encode()
            b += b"--" + boundary.encode() + b"\r\nContent-Disposition: " + disp + b"\r\n"
            if filename:
                b += b"Content-Type: image/png\r\n"
            b += b"\r\n" + data + b"\r\n"
        if close:
            b += b"--" + boundary.encode() + b"--\r\n"
        return b
    tiny = pngs["gray.png"]
    out("form", "edit", b"\0" + multipart([("prompt", None, b"a dog"), ("model", None, b"gpt-image-1"),
                                             ("image", "in.png", tiny), ("mask", "m.png", tiny),
                                             ("n", None, b"2"), ("size", None, b"64x64")]))
    out("form", "edit_images", b"\0" + multipart([("image[]", "a.png", tiny), ("image[]", "b.png", tiny),
                                                    ("prompt", None, b"x")]))
    out("form", "unclosed", b"\0" + multipart([("prompt", None, b"x"), ("image", "a.png", tiny)], close=False))
    out("form", "no_boundary", b"\1" + multipart([("prompt", None, b"x")]))
    out("form", "urlencoded", b"\2prompt=a+cat&n=2&size=64x64&response_format=b64_json")
    out("form", "boundary_from_data", b"\3" + multipart([("prompt", None, b"x")], boundary="abc123"))
    out("form", "many_parts", b"\0" + multipart([("f%d" % i, None, b"v") for i in range(40)]))
    out("form", "long_name", b"\0" + multipart([("n" * 100, None, b"v")]))
    out("form", "empty", b"\0")


if __name__ == "__main__":
    main()
