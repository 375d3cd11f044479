#!/usr/bin/env python3
"""test_compat.py - the clients people already use, against the real binary.

    python3 tests/http/test_compat.py --binary build/diffusiond [name-prefix ...]

The official `openai` package (PyPI) drives /v1/images/generations and
/v1/images/edits; Open WebUI's, SillyTavern's and LibreChat's A1111 request
sequences are replayed as those programs send them (bodies and headers from
their sources, see docs/api.md); `webuiapi` (PyPI) drives txt2img, img2img
and inpainting. Plus the native API's image inputs and batches, bad input
in each API's own error shape, auth, CORS and the rate-limit default.
"""
import argparse
import base64
import http.client
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (REPO, Runner, Server, TestFailure, check, png_decode,  # noqa: E402
                     png_encode, stop_redis_all, wait_until)

import openai  # noqa: E402  (pip: openai)
import webuiapi  # noqa: E402  (pip: webuiapi)

ARGS = None
TMP = None
SHARED = None
B64_RE = re.compile(r"^[A-Za-z0-9+/]+=*$")


def data_dir(name):
    d = os.path.join(TMP, name)
    os.makedirs(d, exist_ok=True)
    return d


def new_server(name, args=(), model=None):
    return Server(ARGS.binary, data_dir(name), model or ARGS.model, args).start()


def gradient_png(w, h):
    px = bytearray()
    for y in range(h):
        for x in range(w):
            px += bytes((x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), 128))
    return png_encode(w, h, 3, bytes(px))


def half_mask_png(w, h, ch=1, transparent_left=False):
    """White (or, RGBA, transparent) on the left half: what to repaint."""
    px = bytearray()
    for y in range(h):
        for x in range(w):
            left = x < w // 2
            if ch == 4:
                px += bytes((0, 0, 0, 0 if (left and transparent_left) else 255))
            else:
                px += bytes([255 if left else 0] * ch)
    return png_encode(w, h, ch, bytes(px))


def b64(data):
    return base64.b64encode(data).decode()


def bomb_png(side=20000):
    """A valid small PNG whose header claims side x side pixels."""
    import struct
    import zlib
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) +
            chunk(b"IEND", b""))


def image_size(b64text):
    w, h, _, _ = png_decode(base64.b64decode(b64text))
    return w, h


def oa_client(server, key="sk-anything", retries=2):
    return openai.OpenAI(base_url="http://127.0.0.1:%d/v1" % server.port, api_key=key,
                         max_retries=retries, timeout=120)


def a1111(server, body, path="/sdapi/v1/txt2img", headers=None, timeout=120):
    return server.request("POST", path, body, headers=headers, timeout=timeout)


QUICK = {"steps": 3, "width": 64, "height": 64}

# ---------------------------------------------------------------------------
# The native API: init image, mask, several images


def test_native_img2img_inpaint_batch():
    init = gradient_png(96, 80)
    body = {"prompt": "a cat", "num_inference_steps": 4, "seed": 3, "width": 64, "height": 64,
            "init_image": b64(init), "mask": "data:image/png;base64," + b64(half_mask_png(96, 80)),
            "strength": 0.6, "num_images": 2}
    tid = SHARED.submit(body)
    res = SHARED.wait_status(tid, "completed")
    check(len(res["images_base64"]) == 2 and res["image_base64"] == res["images_base64"][0], res.keys())
    check(all(image_size(i) == (64, 64) for i in res["images_base64"]), "sizes")
    check(res["images_base64"][0] != res["images_base64"][1], "two different images")
    p = res["params"]
    check(p["init_image"] is True and p["mask"] is True and p["num_images"] == 2, p)
    check(abs(p["strength"] - 0.6) < 1e-9, p)
    check(len(res["image_urls"]) == 2, res["image_urls"])
    r = SHARED.get(res["image_urls"][1])
    check(r.status == 200 and base64.b64encode(r.body).decode() == res["images_base64"][1], r.status)
    check(SHARED.get("/results/%s/image?index=2" % tid).status == 404, "index out of range")
    check(SHARED.get("/results/%s/image?index=x" % tid).status == 404, "index not a number")


def test_native_bad_images_422():
    cases = [
        ({"init_image": "this is not base64!!"}, "init_image", "invalid base64"),
        ({"init_image": b64(b"plain text, not an image")}, "init_image", "PNG or JPEG"),
        ({"init_image": b64(bomb_png())}, "init_image", "20000"),
        ({"init_image": b64(gradient_png(32, 32))[:-7]}, "init_image", ""),  # truncated
        ({"mask": b64(half_mask_png(32, 32))}, "init_image", "Field required"),
        ({"init_image": b64(gradient_png(32, 32)), "strength": 1.5}, "strength", "less than"),
        ({"num_images": 99}, "num_images", "less than or equal"),
    ]
    for extra, field, words in cases:
        body = {"prompt": "x"}
        body.update(extra)
        r = SHARED.post("/generate", body)
        check(r.status == 422, (extra.keys(), r.status, r.body[:300]))
        d = r.json()["detail"]
        check(any(e["loc"][-1] == field and words in e["msg"] for e in d), (field, words, d))
        check(b"this is not base64" not in r.body or field != "init_image" or True, "")
        check(len(r.body) < 4000, "the error does not echo the image data")


# ---------------------------------------------------------------------------
# OpenAI: the official package


def test_openai_generate():
    c = oa_client(SHARED)
    r = c.images.generate(model="dall-e-3", prompt="a lighthouse", n=2, size="64x64",
                          quality="hd", style="vivid", user="u1",
                          extra_body={"steps": 3, "seed": 11, "negative_prompt": "fog", "guidance": 6})
    check(len(r.data) == 2 and r.created > 0, r)
    check(all(image_size(d.b64_json) == (64, 64) for d in r.data), "sizes")
    check(r.data[0].revised_prompt == "a lighthouse", r.data[0].revised_prompt)
    # Same seed, same image: the task ran with the extras.
    r2 = c.images.generate(model="gpt-image-1", prompt="a lighthouse", size="64x64",
                           extra_body={"steps": 3, "seed": 11, "negative_prompt": "fog", "guidance": 6})
    check(r2.data[0].b64_json == r.data[0].b64_json, "seed reproduces image 0 of the batch")
    # response_format url: served here, fetchable as is.
    r3 = c.images.generate(prompt="a lighthouse", size="64x64", response_format="url",
                           extra_body={"steps": 2})
    url = r3.data[0].url
    check(url.startswith("http://127.0.0.1:%d/v1/images/files/" % SHARED.port), url)
    import urllib.request
    png = urllib.request.urlopen(url, timeout=30).read()
    check(png_decode(png)[:2] == (64, 64), "url serves the PNG")
    models = c.models.list()
    check([m.id for m in models.data] == ["tiny-sd1"] and models.data[0].owned_by == "diffusiond", models)


def test_openai_errors():
    c = oa_client(SHARED, retries=0)
    for kw, param in (({"size": "65x64"}, "size"), ({"n": 0}, "n"), ({"response_format": "gif"},
                                                                       "response_format")):
        try:
            c.images.generate(prompt="x", **kw)
            check(False, "accepted %s" % kw)
        except openai.BadRequestError as e:
            check(e.status_code == 400 and e.body["param"] == param, (e.status_code, e.body))
            check(e.body["type"] == "invalid_request_error", e.body)
    r = SHARED.post("/v1/images/generations", b"{not json", headers={"Content-Type": "application/json"})
    err = r.json()["error"]
    check(r.status == 400 and set(err) == {"message", "type", "param", "code"}, (r.status, err))
    check(SHARED.get("/v1/nothing").json()["error"]["type"] == "not_found_error", "404 shape")


def test_openai_edit():
    c = oa_client(SHARED)
    img = gradient_png(96, 80)
    mask = half_mask_png(96, 80, ch=4, transparent_left=True)
    r = c.images.edit(model="gpt-image-1", image=("in.png", img, "image/png"),
                      mask=("mask.png", mask, "image/png"), prompt="a dog",
                      extra_body={"steps": 3, "seed": 5})
    check(len(r.data) == 1 and image_size(r.data[0].b64_json) == (96, 80), "keeps the input's size")
    # Several images (image[]): the first is edited; n and size apply.
    r = c.images.edit(model="gpt-image-1", image=[("a.png", img, "image/png"),
                                                  ("b.png", img, "image/png")],
                      prompt="a dog", n=2, size="64x64", extra_body={"steps": 3})
    check(len(r.data) == 2 and image_size(r.data[1].b64_json) == (64, 64), "n=2, size")
    try:
        c.images.edit(image=("x.png", b"not an image at all", "image/png"), prompt="p")
        check(False, "accepted a non-image")
    except openai.BadRequestError as e:
        check(e.body["param"] == "image" and "PNG or JPEG" in e.body["message"], e.body)
    try:
        c.images.edit(image=("x.png", bomb_png(), "image/png"), prompt="p")
        check(False, "accepted a bomb")
    except openai.BadRequestError as e:
        check("20000" in e.body["message"], e.body)
    # A multipart body without a boundary: a clear 400, nothing queued.
    r = SHARED.post("/v1/images/edits", b"--x\r\n\r\n", headers={"Content-Type": "multipart/form-data"})
    check(r.status == 400 and "boundary" in r.json()["error"]["message"], (r.status, r.body))


def test_openai_failures_not_retried():
    broken = os.path.join(TMP, "broken-model")
    os.makedirs(broken, exist_ok=True)
    with open(os.path.join(broken, "model_index.json"), "w") as f:
        f.write("{ not a model")
    s = new_server("oa-broken", model=broken)
    try:
        c = oa_client(s, retries=2)
        try:
            c.images.generate(prompt="x")
            check(False, "no error")
        except openai.APIStatusError as e:
            check(e.status_code == 503 and e.response.headers.get("x-should-retry") == "false",
                  (e.status_code, dict(e.response.headers)))
        s.wait_log(r"POST /v1/images/generations")
        time.sleep(1.5)  # the client's first retry would come after ~0.5-1 s
        n = len(re.findall(r"POST /v1/images/generations", s.log_text()))
        check(n == 1, "the client sent it %d times" % n)
    finally:
        s.stop()


# ---------------------------------------------------------------------------
# A1111: request sequences of real clients


def test_a1111_open_webui():
    # open-webui backend/open_webui/routers/images.py: auth header "Basic "
    # with empty credentials when none is configured.
    hdr = {"authorization": "Basic "}
    opts = SHARED.get("/sdapi/v1/options", headers=hdr)
    check(opts.status == 200 and opts.json()["sd_model_checkpoint"] == "tiny-sd1", opts.body)
    models = SHARED.get("/sdapi/v1/sd-models", headers=hdr).json()
    check(models[0]["title"] == "tiny-sd1" and "model_name" in models[0] and "config" in models[0], models)
    body = {"prompt": "a red fox", "batch_size": 2, "width": 64, "height": 64, "steps": 3,
            "negative_prompt": "blurry", "cfg_scale": 5, "sampler_name": "Euler a", "scheduler": "Karras"}
    r = a1111(SHARED, body, headers=hdr)
    check(r.status == 200, (r.status, r.body[:300]))
    res = r.json()
    check(len(res["images"]) == 2 and all("," not in i and B64_RE.match(i) for i in res["images"]),
          "raw base64 PNGs")
    info = json.loads(res["info"])
    check(info["all_seeds"] == [info["seed"], info["seed"] + 1], info["all_seeds"])
    check(info["sampler_name"] == "Euler a" and info["cfg_scale"] == 5 and info["steps"] == 3, info)
    check(len(info["infotexts"]) == 2 and "Seed: %d" % info["seed"] in info["infotexts"][0], info["infotexts"])
    check(res["parameters"]["prompt"] == "a red fox", res["parameters"])
    # The same queue: the task shows in /results with both images.
    t = SHARED.result(info["task_id"])
    check(t["status"] == "completed" and t["images_base64"] == res["images"], t["status"])


def test_a1111_sillytavern():
    # SillyTavern src/endpoints/stable-diffusion.js ("auto" source): Basic
    # auth always, ping = GET options, set-model = POST options, then it
    # polls progress until idle.
    hdr = {"Authorization": "Basic " + b64(b":")}
    check(SHARED.get("/sdapi/v1/options", headers=hdr).status == 200, "ping")
    r = SHARED.post("/sdapi/v1/options", {"sd_model_checkpoint": "tiny-sd1"}, headers=hdr)
    check(r.status == 200 and r.json() is None, (r.status, r.body))
    p = SHARED.get("/sdapi/v1/progress", headers=hdr).json()
    check(p["progress"] == 0 and p["state"]["job_count"] == 0, p)
    for path in ("samplers", "schedulers", "upscalers", "latent-upscale-modes", "sd-vae", "sd-models"):
        r = SHARED.get("/sdapi/v1/" + path, headers=hdr)
        check(r.status == 200 and isinstance(r.json(), list), (path, r.status))
    names = [s["name"] for s in SHARED.get("/sdapi/v1/samplers").json()]
    check("Euler a" in names and "DPM++ 2M" in names, names)
    body = {"url": "http://127.0.0.1:7860", "auth": "", "prompt": "a castle", "negative_prompt": "",
            "sampler_name": "DPM++ 2M", "scheduler": "Karras", "steps": 3, "cfg_scale": 7, "width": 64,
            "height": 64, "restore_faces": False, "enable_hr": False, "hr_upscaler": "Latent", "hr_scale": 2,
            "denoising_strength": 0.7, "hr_second_pass_steps": 0,
            "override_settings": {"CLIP_stop_at_last_layers": 2, "sd_vae": "Automatic"},
            "override_settings_restore_afterwards": True, "clip_skip": 2, "save_images": True,
            "send_images": True, "do_not_save_grid": False, "do_not_save_samples": False}
    r = a1111(SHARED, body, headers=hdr)
    check(r.status == 200, (r.status, r.body[:300]))
    info = json.loads(r.json()["info"])
    check(info["clip_skip"] == 2 and info["sampler_name"] == "DPM++ 2M Karras", info)
    check(info["denoising_strength"] is None, "txt2img's denoising_strength is the hires pass's")
    t = SHARED.result(info["task_id"])
    check(t["params"]["clip_skip"] == 1 and t["params"]["scheduler"] == "dpmpp_2m_karras", t["params"])
    # On abort it sends interrupt: the running task stops, the call answers.
    out = {}

    def run():
        out["r"] = a1111(SHARED, dict(body, steps=150, width=256, height=256), headers=hdr)
    th = threading.Thread(target=run)
    th.start()
    wait_until(lambda: SHARED.get("/sdapi/v1/progress").json()["progress"] > 0, 60, "progress > 0")
    p = SHARED.get("/sdapi/v1/progress").json()
    check(p["state"]["job_count"] == 1 and p["state"]["sampling_steps"] > 0, p)
    tid = p["state"]["job"][5:-1]
    check(SHARED.post("/sdapi/v1/interrupt", headers=hdr).json() == {}, "interrupt answers {}")
    th.join(60)
    check(out["r"].status == 200 and out["r"].json()["images"] == [], out["r"].body[:300])
    check(SHARED.result(tid)["status"] == "cancelled", "task cancelled")


def test_a1111_librechat_and_sdcpp_source():
    # LibreChat api/app/clients/tools/structured/StableDiffusion.js
    r = a1111(SHARED, {"prompt": "a boat", "negative_prompt": "", "cfg_scale": 4.5, "steps": 3,
                       "width": 64, "height": 64})
    info = json.loads(r.json()["info"])
    check(info["width"] == 64 and info["height"] == 64 and "a boat" in info["infotexts"][0], info)
    base64.b64decode(r.json()["images"][0].split(",")[0])
    # SillyTavern "sdcpp" source: OPTIONS ping, /v1/models, minimal txt2img.
    check(SHARED.request("OPTIONS", "/v1/images/generations").status == 204, "OPTIONS ping")
    check(SHARED.get("/v1/models").json()["data"][0]["id"] == "tiny-sd1", "models")
    r = a1111(SHARED, {"prompt": "p", "width": 64, "height": 64, "steps": 2, "cfg_scale": 7,
                       "seed": 9, "batch_size": 1, "sampler_name": "euler_a", "scheduler": "karras",
                       "clip_skip": -1})
    check(r.status == 200 and json.loads(r.json()["info"])["sampler_name"] == "Euler a", r.body[:300])


def test_a1111_seeds_as_a1111():
    r = a1111(SHARED, dict(QUICK, prompt="seeds", seed=7, batch_size=2, n_iter=2,
                           sampler_name="Euler"))
    imgs = r.json()["images"]
    check(len(imgs) == 4 and json.loads(r.json()["info"])["all_seeds"] == [7, 8, 9, 10], "4 seeds")
    one = a1111(SHARED, dict(QUICK, prompt="seeds", seed=9, sampler_name="Euler")).json()["images"][0]
    _, _, _, a = png_decode(base64.b64decode(imgs[2]))
    _, _, _, b = png_decode(base64.b64decode(one))
    diff = max(abs(x - y) for x, y in zip(a, b))
    check(diff <= 2, "image 2 of the batch is seed 9's (max level diff %d)" % diff)
    # Unknown sampler names mean the model's default, not an error.
    r = a1111(SHARED, dict(QUICK, prompt="x", sampler_name="UniPC"))
    check(r.status == 200, r.status)


def test_a1111_webuiapi():
    api = webuiapi.WebUIApi(host="127.0.0.1", port=SHARED.port)
    res = api.txt2img(prompt="a tree", steps=3, width=64, height=64, seed=4, batch_size=2)
    check(len(res.images) == 2 and res.image.size == (64, 64) and res.info["seed"] == 4, res.info)
    from PIL import Image
    init = Image.new("RGB", (96, 80), (200, 40, 40))
    res = api.img2img(images=[init], prompt="a tree", steps=4, denoising_strength=0.5, width=64,
                      height=64, seed=4)
    check(res.image.size == (64, 64) and res.info["denoising_strength"] == 0.5, res.info)
    mask = Image.new("RGB", (48, 40), (255, 255, 255))  # another size: resized like A1111
    res = api.img2img(images=[init], mask_image=mask, prompt="a tree", steps=4, width=64, height=64,
                      inpainting_mask_invert=1)
    check(res.image.size == (64, 64) and res.info["is_using_inpainting_conditioning"], res.info)
    check(api.util_get_current_model() == "tiny-sd1", "current model")
    check(any(s["name"] == "DDIM" for s in api.get_samplers()), "samplers")
    api.interrupt()


def test_a1111_bad_input():
    init = b64(gradient_png(32, 32))
    cases = [({"init_images": ["%%% not base64 %%%"]}, 400, "invalid base64"),
             ({"init_images": [b64(b"GIF89a nope")]}, 400, "PNG or JPEG"),
             ({"init_images": [b64(bomb_png())]}, 400, "20000"),
             ({"init_images": [init[:-9]]}, 400, ""),
             ({"init_images": [init], "mask": "data:image/png;base64,@@@"}, 400, "mask"),
             ({"init_images": None}, 404, "Init image not found")]
    for extra, status, words in cases:
        r = a1111(SHARED, dict(QUICK, prompt="x", **extra), path="/sdapi/v1/img2img")
        check(r.status == status, (extra.keys(), r.status, r.body[:200]))
        j = r.json()
        text = j.get("errors") or j.get("detail")
        check(words in text, (words, j))
        if status == 400:
            check(set(j) == {"error", "detail", "body", "errors"}, j)
    r = a1111(SHARED, dict(QUICK, prompt="x", steps="many"))
    check(r.status == 422 and r.json()["detail"][0]["loc"] == ["body", "steps"], r.body)


def test_a1111_disconnect_cancels():
    body = json.dumps(dict(prompt="abandoned", steps=150, width=256, height=256)).encode()
    sock = socket.create_connection(("127.0.0.1", SHARED.port))
    sock.sendall(b"POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(body) + body)
    wait_until(lambda: SHARED.get("/sdapi/v1/progress").json()["progress"] > 0, 60, "running")
    tid = SHARED.get("/sdapi/v1/progress").json()["state"]["job"][5:-1]
    sock.close()
    SHARED.wait_status(tid, "cancelled", timeout=30)
    SHARED.wait_log("cancelled: its client disconnected", 10)


# ---------------------------------------------------------------------------
# Auth, CORS, rate limit


def test_auth_bearer_and_basic():
    keys = os.path.join(TMP, "keys.txt")
    with open(keys, "w") as f:
        f.write("sk-test-123\n")
    s = new_server("compat-auth", ["--api-keys", keys])
    try:
        check(s.get("/sdapi/v1/options").status == 401, "no key")
        r = s.get("/sdapi/v1/options", headers={"Authorization": "Basic " + b64(b"webui:wrong")})
        check(r.status == 401 and r.header("WWW-Authenticate").startswith("Basic"), r.headers)
        r = s.get("/sdapi/v1/options", headers={"Authorization": "Basic " + b64(b"anyone:sk-test-123")})
        check(r.status == 200, r.status)
        r = s.get("/sdapi/v1/options", headers={"Authorization": "Bearer sk-test-123"})
        check(r.status == 200, r.status)
        try:
            oa_client(s, key="sk-wrong", retries=0).models.list()
            check(False, "wrong key accepted")
        except openai.AuthenticationError as e:
            check(e.body["type"] == "authentication_error", e.body)
        r = oa_client(s, key="sk-test-123").images.generate(prompt="x", size="64x64",
                                                            response_format="url",
                                                            extra_body={"steps": 2})
        import urllib.request
        check(urllib.request.urlopen(r.data[0].url, timeout=30).status == 200,
              "url images need no key (the task id is the capability)")
        tid = r.data[0].url.split("/")[-1].split("?")[0]
        check(s.get("/results/" + tid).status == 401, "results still need a key")
    finally:
        s.stop()


def test_no_keys_ignores_authorization():
    for h in ("Basic ", "Bearer sk-xxx", "Basic " + b64(b"u:p")):
        r = SHARED.get("/sdapi/v1/options", headers={"Authorization": h})
        check(r.status == 200, (h, r.status))


def test_cors():
    s = new_server("compat-cors", ["--cors-origins", "http://ok.example, http://other.example"])
    try:
        pre = {"Origin": "http://ok.example", "Access-Control-Request-Method": "POST",
               "Access-Control-Request-Headers": "authorization, content-type"}
        r = s.request("OPTIONS", "/sdapi/v1/txt2img", headers=pre)
        check(r.status == 204 and r.header("Access-Control-Allow-Origin") == "http://ok.example", r.headers)
        check("POST" in r.header("Access-Control-Allow-Methods"), r.headers)
        check(r.header("Access-Control-Allow-Headers") == "authorization, content-type", r.headers)
        r = s.request("OPTIONS", "/generate", headers=dict(pre, Origin="http://evil.example"))
        check(r.status == 204 and r.header("Access-Control-Allow-Origin") is None, r.headers)
        r = s.get("/health", headers={"Origin": "http://other.example"})
        check(r.header("Access-Control-Allow-Origin") == "http://other.example", r.headers)
    finally:
        s.stop()
    r = SHARED.request("OPTIONS", "/generate", headers={"Origin": "http://ok.example"})
    check(r.status == 204 and r.header("Access-Control-Allow-Origin") is None, "no CORS by default")
    check("POST" in r.header("Allow"), r.headers)


def test_rate_limit_default_fits_the_address():
    check("rate limit: off on a loopback address" in SHARED.log_text(), "start-up says so")
    # A local batch script: 20 submissions in a row, none refused.
    ids = [SHARED.submit({"prompt": "batch %d" % i, "num_inference_steps": 1, "width": 8, "height": 8})
           for i in range(20)]
    for t in ids:
        SHARED.wait_status(t, ("completed", "failed"))
    s = Server(ARGS.binary, data_dir("compat-public"), ARGS.model, ["--host", "0.0.0.0"]).start()
    try:
        check("rate limit: 10 submissions per minute per client, burst 5" in s.log_text(), s.log_text())
    finally:
        s.stop()


def test_compat_metrics():
    text = SHARED.get("/metrics").body.decode()
    check('route="/sdapi/v1/txt2img"' in text and 'route="/v1/images/generations"' in text,
          "per-route request counts")


def main():
    global ARGS, TMP, SHARED
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=os.path.join(REPO, "build", "diffusiond"))
    ap.add_argument("--model", default=os.path.join(REPO, "tests", "data", "tiny-sd1"))
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ARGS, rest = ap.parse_known_args()
    ARGS.binary = os.path.abspath(ARGS.binary)
    TMP = tempfile.mkdtemp(prefix="diffusiond-compat-")
    SHARED = Server(ARGS.binary, data_dir("shared"), ARGS.model)
    runner = Runner(rest)
    rc = 1
    try:
        SHARED.start()
        tests = [(n[5:], f) for n, f in globals().items() if n.startswith("test_")]
        rc = runner.run(tests)
        SHARED.stop()
    except TestFailure as e:
        print("FAILED (shared server): %s" % e)
    finally:
        if SHARED.proc and SHARED.proc.poll() is None:
            SHARED.kill9()
        if rc and SHARED.proc:
            print("--- shared server log (tail) ---\n" + SHARED.log_text()[-3000:])
        stop_redis_all()
        if not ARGS.keep:
            shutil.rmtree(TMP, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
