#!/usr/bin/env python3
"""test_http.py - integration tests of `diffusiond serve` over real HTTP.

    python3 tests/http/test_http.py --binary build/diffusiond [name-prefix ...]

Starts the real binary on free loopback ports with the tiny model
(tests/data/tiny-sd1) and temporary data directories; needs only Python's
standard library. Prints one line per test and "N passed, N failed".
"""
import argparse
import base64
import http.client
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (REPO, Runner, Server, TestFailure, check, png_decode,  # noqa: E402
                     redis_cmd, stop_redis_all, wait_until)

ARGS = None
TMP = None
SHARED = None          # the server most tests share
LONG = None            # a request body whose generation takes a few seconds
SEED_KEYS = {"task_id", "status", "prompt", "image_base64", "error_message"}
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def data_dir(name):
    d = os.path.join(TMP, name)
    os.makedirs(d, exist_ok=True)
    return d


def new_server(name, args=(), model=None, start=True):
    s = Server(ARGS.binary, data_dir(name), model or ARGS.model, args)
    return s.start() if start else s


def quick(prompt="a red circle", **kw):
    body = {"prompt": prompt, "num_inference_steps": 4, "guidance_scale": 7.5, "seed": 42,
            "width": 64, "height": 64}
    body.update(kw)
    return body


def metric(server, name):
    m = re.search(r"^%s ([0-9.e+-]+)$" % re.escape(name), server.get("/metrics").body.decode(),
                  re.M)
    return float(m.group(1)) if m else None


def calibrate():
    """Pick a size and step count that keep one generation busy for ~2.5 s,
    from the per-step time the server itself measures (/metrics). The
    engine's first run of a shape is slower (warm-up), so time the second."""
    global LONG
    side = 64
    for _ in range(2):
        s0 = metric(SHARED, "diffusiond_step_seconds_sum") or 0.0
        n0 = metric(SHARED, "diffusiond_step_seconds_count") or 0.0
        tid = SHARED.submit(quick("calibration", num_inference_steps=8))
        SHARED.wait_status(tid, "completed", timeout=300)
    per_step = (metric(SHARED, "diffusiond_step_seconds_sum") - s0) / (
        metric(SHARED, "diffusiond_step_seconds_count") - n0)
    while per_step * 150 < 2.5 and side < 1024:  # a fast machine: bigger images
        side, per_step = side * 2, per_step * 4
    steps = max(8, min(150, math.ceil(2.5 / max(per_step, 1e-4))))
    LONG = quick("a long generation", width=side, height=side, num_inference_steps=steps)
    print("# long task: %dx%d, %d steps (%.3f s per step)" % (side, side, steps, per_step),
          flush=True)


def wait_running(server, tid, min_step=1, timeout=120):
    def running():
        r = server.result(tid)
        check(r["status"] in ("pending", "processing"), "task ended early: %s" % r["status"])
        return r["status"] == "processing" and r["progress"]["step"] >= min_step and r
    return wait_until(running, timeout, "task %s to be running" % tid)


# ---------------------------------------------------------------------------
# The seed's contract


def test_seed_flow():
    r = SHARED.post("/generate", quick())
    check(r.status == 202, "status %d" % r.status)
    body = r.json()
    check(UUID_RE.match(body["task_id"]), "task id is a uuid4: %s" % body["task_id"])
    check(body["status"] == "pending", body)
    check(body["message"] == "Task received and queued for processing.", body)
    check(r.header("Location") == "/results/" + body["task_id"], r.headers)
    check(int(r.header("Retry-After")) >= 1, r.headers)
    res = SHARED.wait_status(body["task_id"], ("completed", "failed"))
    check(res["status"] == "completed", res)
    check(SEED_KEYS <= set(res), "seed fields: %s" % sorted(res))
    check(res["prompt"] == "a red circle" and res["error_message"] is None, res)
    png = base64.b64decode(res["image_base64"], validate=True)
    w, h, ch, pixels = png_decode(png)
    check((w, h, ch) == (64, 64, 3), "image %dx%dx%d" % (w, h, ch))
    check(res["seed"] == 42 and res["progress"]["step"] == res["progress"]["total_steps"] > 0,
          res)
    for k in ("created_at", "started_at", "finished_at"):
        check(re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", res[k]), "%s: %s" % (k, res[k]))
    check(res["created_at"] <= res["started_at"] <= res["finished_at"], res)
    img = SHARED.get("/results/%s/image" % body["task_id"])
    check(img.status == 200 and img.header("Content-Type") == "image/png", img.status)
    check(img.body == png, "the image endpoint serves the same PNG")
    compare_with_cli(quick(), pixels)


def compare_with_cli(body, pixels):
    """The served image equals what `diffusiond generate` writes."""
    out = os.path.join(TMP, "cli.png")
    cmd = [ARGS.binary, "generate", "--model", ARGS.model, "--prompt", body["prompt"],
           "--steps", str(body["num_inference_steps"]), "--guidance",
           str(body["guidance_scale"]), "--seed", str(body["seed"]), "--width",
           str(body["width"]), "--height", str(body["height"]), "--output", out]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
    check(p.returncode == 0, "diffusiond generate failed: %s" % p.stdout.decode()[-500:])
    w, h, ch, cli_pixels = png_decode(open(out, "rb").read())
    check(cli_pixels == pixels, "pixels differ from diffusiond generate")


def test_health():
    r = SHARED.get("/health")
    check(r.status == 200, r.status)
    b = r.json()
    check(b["status"] == "ok" and b["model_status"] == "available", b)
    info = b["model_info"]
    check(info["precision"] == "fp32" and info["compute"] == "float32", info)


def test_not_found():
    r = SHARED.get("/results/123e4567-e89b-42d3-a456-426614174000")
    check(r.status == 404 and r.json() == {"detail": "Task ID not found."}, r.body)
    r = SHARED.get("/results/not-a-uuid")
    check(r.status == 404 and r.json() == {"detail": "Task ID not found."}, r.body)
    r = SHARED.get("/results/123e4567-e89b-42d3-a456-426614174000/image")
    check(r.status == 404, r.status)
    r = SHARED.get("/nothing/here")
    check(r.status == 404 and r.json() == {"detail": "Not Found"}, r.body)
    r = SHARED.request("PUT", "/generate")
    check(r.status == 405 and r.header("Allow") == "POST", (r.status, r.headers))


def test_validation_422():
    r = SHARED.post("/generate", {"negative_prompt": "x"})
    check(r.status == 422, r.status)
    check(r.json() == {"detail": [{"type": "missing", "loc": ["body", "prompt"],
                                   "msg": "Field required", "input": {"negative_prompt": "x"}}]},
          r.body)
    r = SHARED.post("/generate", {"prompt": 3, "num_inference_steps": "many", "seed": 1.5})
    check(r.status == 422, r.status)
    types = [(e["type"], e["loc"]) for e in r.json()["detail"]]
    check(types == [("string_type", ["body", "prompt"]),
                    ("int_parsing", ["body", "num_inference_steps"]),
                    ("int_from_float", ["body", "seed"])], types)
    r = SHARED.post("/generate", b"{not json", headers={"Content-Type": "application/json"})
    d = r.json()["detail"][0]
    check(r.status == 422 and d["type"] == "json_invalid" and d["loc"][0] == "body", r.body)
    r = SHARED.post("/generate", b'{"prompt": "a"}', headers={"Content-Type": "text/plain"})
    check(r.status == 422 and r.json()["detail"][0]["type"] == "model_attributes_type", r.body)
    r = SHARED.post("/generate", quick(width=100, num_inference_steps=0, scheduler="magic"))
    types = [e["type"] for e in r.json()["detail"]]
    check(types == ["greater_than_equal", "multiple_of", "literal_error"], types)
    # Lax mode as in pydantic: numeric strings are numbers; unknown fields ignored.
    r = SHARED.post("/generate", quick(num_inference_steps="4", guidance_scale="7.5",
                                       something_else=[1, 2]))
    check(r.status == 202, r.body)


def test_body_too_large_413():
    # Routes without images: --max-body (64 KiB by default).
    r = SHARED.post("/sdapi/v1/txt2img", {"prompt": "x" * (70 * 1024)})
    check(r.status == 413, r.status)
    check("too large" in r.json()["detail"], r.body)
    # Routes taking images: --max-upload (2 MiB on this server).
    r = SHARED.post("/generate", {"prompt": "x", "init_image": "A" * (3 << 20)})
    check(r.status == 413 and "2097152" in r.json()["detail"], (r.status, r.body[:200]))
    r = SHARED.post("/v1/images/generations", {"prompt": "x" * (70 * 1024)})
    check(r.status == 413 and "too large" in r.json()["error"]["message"], (r.status, r.body[:200]))
    # A client that writes its whole body before reading (urllib) still
    # gets the 413, not a broken pipe: the excess is read and dropped.
    import urllib.request
    import urllib.error
    req = urllib.request.Request("http://127.0.0.1:%d/generate" % SHARED.port, data=b"x" * (12 << 20),
                                 headers={"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(req, timeout=30)
        check(False, "no error")
    except urllib.error.HTTPError as e:
        check(e.code == 413, e.code)
    # A body declared far beyond any bound is refused before it is read.
    conn = http.client.HTTPConnection("127.0.0.1", SHARED.port, timeout=10)
    conn.putrequest("POST", "/generate")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(1 << 30))
    conn.endheaders()
    resp = conn.getresponse()
    check(resp.status == 413, resp.status)
    conn.close()


def test_model_unavailable_503():
    broken = os.path.join(TMP, "broken-model")
    os.makedirs(broken, exist_ok=True)
    with open(os.path.join(broken, "model_index.json"), "w") as f:
        f.write("{ this is not a model")
    s = new_server("broken", model=broken)
    try:
        s.wait_log("model unavailable")
        h = s.get("/health").json()
        check(h["status"] == "ok" and h["model_status"] == "unavailable", h)
        r = s.post("/generate", quick())
        check(r.status == 503, r.status)
        check(r.json() == {"detail": "Model is not available or failed to load."}, r.body)
        r = s.post("/generate", {"num_inference_steps": 4})   # validation comes first
        check(r.status == 422, r.status)
    finally:
        check(s.stop() == 0, "clean exit")


# ---------------------------------------------------------------------------
# Beyond the seed


def test_result_fields_and_image_states():
    tid = SHARED.submit(LONG)
    res = SHARED.result(tid)
    check(res["status"] in ("pending", "processing"), res)
    check(isinstance(res["seed"], int) and res["params"]["num_inference_steps"] ==
          LONG["num_inference_steps"], res)
    r = SHARED.get("/results/%s/image" % tid)
    check(r.status == 409 and "not completed" in r.json()["detail"], (r.status, r.body))
    run = wait_running(SHARED, tid)
    check(run["started_at"] and run["finished_at"] is None and run["queue_position"] is None, run)
    check(0 < run["progress"]["step"] <= run["progress"]["total_steps"], run)
    check(SHARED.request("DELETE", "/results/" + tid).status == 202, "cancel")
    SHARED.wait_status(tid, "cancelled")


def test_random_seed_is_reported():
    tid = SHARED.submit(quick(seed=None))
    res = SHARED.wait_status(tid, "completed")
    check(isinstance(res["seed"], int) and 0 <= res["seed"] < 2 ** 32, res["seed"])
    check(res["params"]["seed"] == res["seed"], res["params"])


def test_cancel_queued_and_running():
    running = SHARED.submit(LONG)
    queued = SHARED.submit(quick("queued behind"))
    check(SHARED.result(queued)["queue_position"] >= 1, "queued task has a position")
    wait_running(SHARED, running)
    r = SHARED.request("DELETE", "/results/" + queued)
    check(r.status == 200 and r.json()["status"] == "cancelled", (r.status, r.body))
    check(SHARED.result(queued)["status"] == "cancelled", "queued task cancelled at once")
    ev = SHARED.events(queued)
    check(ev[-1][0] == "cancelled", ev)
    r = SHARED.post("/results/%s/cancel" % running)
    check(r.status == 202, (r.status, r.body))
    res = SHARED.wait_status(running, ("cancelled", "completed"), timeout=60)
    check(res["status"] == "cancelled", res["status"])
    check(res["progress"]["step"] < res["progress"]["total_steps"], res["progress"])
    r = SHARED.request("DELETE", "/results/" + running)
    check(r.status == 409, (r.status, r.body))
    r = SHARED.get("/results/%s/image" % running)
    check(r.status == 409, r.status)


def test_event_stream():
    blocker = SHARED.submit(LONG)
    tid = SHARED.submit(quick("streamed", num_inference_steps=5))
    got = []
    reader = threading.Thread(target=lambda: got.extend(SHARED.events(tid)))
    reader.start()
    wait_running(SHARED, blocker)
    SHARED.request("DELETE", "/results/" + blocker)
    reader.join(120)
    check(not reader.is_alive(), "stream ended")
    names = [e for e, _ in got]
    check(names[0] == "queued" and got[0][1]["queue_position"] >= 1, got[:2])
    check("started" in names and names[-1] == "completed", names)
    steps = [d["step"] for e, d in got if e == "step"]
    total = [d["total_steps"] for e, d in got if e == "step"][-1]
    check(steps == list(range(1, total + 1)), "one event per step: %s" % steps)
    check(names.index("started") < names.index("step"), names)
    check(got[-1][1]["image_url"] == "/results/%s/image" % tid, got[-1])
    # A stream opened after the end tells the same story and closes.
    again = [e for e, _ in SHARED.events(tid)]
    check(again[0] == "started" and again[-1] == "completed" and again.count("step") == total,
          again)


def test_queue_full_503():
    s = new_server("queuefull", ["--queue-capacity", "2", "--rate-limit", "0"])
    try:
        first = s.submit(LONG)
        wait_running(s, first)
        s.submit(quick())
        s.submit(quick())
        r = s.post("/generate", quick())
        check(r.status == 503 and int(r.header("Retry-After")) >= 1, (r.status, r.headers))
        check("Queue is full" in r.json()["detail"], r.body)
    finally:
        s.stop()


def test_rate_limit_429():
    s = new_server("ratelimit", ["--rate-limit", "6", "--rate-burst", "2"])
    try:
        s.submit(quick())
        s.submit(quick())
        r = s.post("/generate", quick())
        check(r.status == 429, r.status)
        ra = int(r.header("Retry-After"))
        check(1 <= ra <= 10, "Retry-After %d" % ra)
        check("Rate limit" in r.json()["detail"], r.body)
        check(s.get("/health").status == 200, "other endpoints are not limited")
        m = s.get("/metrics").body.decode()
        check("diffusiond_rate_limited_total 1" in m, "metric counts the refusal")
    finally:
        s.stop()


def test_plan_size():
    """--plan-size plans the engine for one size at start-up; other sizes
    still run, and every image is the one `diffusiond generate` makes."""
    s = new_server("plansize", ["--plan-size", "32"])
    try:
        for side in (32, 64):
            body = quick(width=side, height=side)
            res = s.wait_status(s.submit(body), ("completed", "failed"))
            check(res["status"] == "completed", res)
            w, h, ch, pixels = png_decode(base64.b64decode(res["image_base64"]))
            check((w, h) == (side, side), "image %dx%d" % (w, h))
            compare_with_cli(body, pixels)
    finally:
        s.stop()
    p = subprocess.run([ARGS.binary, "serve", "--plan-size", "30"], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=60)
    check(p.returncode == 2 and b"multiple of 8" in p.stdout, p.stdout[-300:])


def test_api_keys_401():
    keys = os.path.join(TMP, "keys.txt")
    with open(keys, "w") as f:
        f.write("# test keys\nsecret-key-1\n\nsecret-key-2\n")
    s = new_server("apikeys", ["--api-keys", keys])
    try:
        check(s.get("/health").status == 200, "health stays open")
        r = s.post("/generate", quick())
        check(r.status == 401 and r.header("WWW-Authenticate") == "Bearer", r.status)
        check(r.json() == {"detail": "Not authenticated"}, r.body)
        r = s.post("/generate", quick(), headers={"Authorization": "Bearer wrong"})
        check(r.status == 401 and r.json() == {"detail": "Invalid API key."}, r.body)
        good = {"Authorization": "Bearer secret-key-2"}
        tid = s.submit(quick(), headers=good)
        check(s.get("/results/" + tid).status == 401, "results need the key too")
        s.wait_status(tid, "completed", headers=good)
        check(s.get("/metrics").status == 401, "metrics need the key")
        # SIGHUP reloads the file: the new key works, the removed one stops working.
        with open(keys, "w") as f:
            f.write("rotated-key\n")
        s.proc.send_signal(signal.SIGHUP)
        s.wait_log("SIGHUP: 1 API key loaded")
        check(s.get("/results/" + tid, headers=good).status == 401, "old key revoked")
        check(s.get("/results/" + tid, headers={"Authorization": "Bearer rotated-key"}).status == 200,
              "new key accepted")
        with open(keys, "w") as f:
            f.write("bad key with spaces\n")
        s.proc.send_signal(signal.SIGHUP)
        s.wait_log("keeping the old API keys")
        check(s.get("/results/" + tid, headers={"Authorization": "Bearer rotated-key"}).status == 200,
              "a bad file keeps the keys")
    finally:
        s.stop()


def test_expiry_410():
    s = new_server("expiry", ["--result-ttl", "2"])
    try:
        tid = s.submit(quick())
        s.wait_status(tid, "completed")
        wait_until(lambda: s.get("/results/" + tid).status == 410, 15, "expiry")
        r = s.get("/results/" + tid)
        check(r.json() == {"detail": "Task result has expired."}, r.body)
        check(s.get("/results/%s/image" % tid).status == 410, "image expired too")
        s.wait_log("expired")  # the janitor removed it from the store
        if s.redis_port:
            check(redis_cmd(s.redis_port, "EXISTS", "dfd:img:%s:0" % tid) == 0, "image gone")
        else:
            check(not os.path.exists(os.path.join(s.data_dir, "images", tid + ".png")), "file gone")
        check(s.get("/results/123e4567-e89b-42d3-a456-426614174000").status == 404, "never seen")
    finally:
        s.stop()


def test_restart_with_pending_tasks():
    s = new_server("restart")
    done = s.submit(quick("done before restart"))
    s.wait_status(done, "completed")
    running = s.submit(LONG)
    pending = [s.submit(quick("pending %d" % i)) for i in range(2)]
    wait_running(s, running)
    check(s.stop() == 0, "SIGTERM exits 0")
    check("back in the queue" in s.log_text(), "the running task was handed back")
    s2 = Server(ARGS.binary, s.data_dir, ARGS.model).start()
    try:
        check(s2.result(done)["status"] == "completed", "old result still served")
        for tid in [running] + pending:
            check(s2.wait_status(tid, ("completed", "failed"), timeout=300)["status"] ==
                  "completed", tid)
    finally:
        s2.stop()


def test_kill9_mid_generation():
    s = new_server("kill9")
    done = s.submit(quick("done before the crash"))
    s.wait_status(done, "completed")
    victim = s.submit(LONG)
    after = s.submit(quick("queued behind the victim"))
    wait_running(s, victim, min_step=2)
    s.kill9()
    s2 = Server(ARGS.binary, s.data_dir, ARGS.model).start()
    try:
        # SQLite: the restart takes the task back; Redis: its lease runs out.
        s2.wait_log("interrupted task back in the queue|with an expired lease requeued")
        check(s2.result(done)["status"] == "completed", "completed result survives")
        res = s2.wait_status(victim, ("completed", "failed"), timeout=300)
        check(res["status"] == "completed", res["status"])
        check(s2.wait_status(after, ("completed", "failed"))["status"] == "completed", after)
    finally:
        s2.stop()


def test_polling_under_load():
    """50 clients poll /results and /health while a generation runs."""
    # ~4x LONG: the steps are capped at 150, so the image side doubles
    # too (a machine that speeds up after calibrating must not finish it
    # within the 2 s of polling).
    longer = dict(LONG, num_inference_steps=min(150, LONG["num_inference_steps"] * 4),
                  width=min(1024, LONG["width"] * 2), height=min(1024, LONG["height"] * 2))
    tid = SHARED.submit(longer)
    wait_running(SHARED, tid)
    lat = {"results": [], "health": []}
    errors = []
    stop = time.monotonic() + 2.0
    lock = threading.Lock()

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", SHARED.port, timeout=30)
        try:
            while time.monotonic() < stop:
                for kind, path in (("results", "/results/" + tid), ("health", "/health")):
                    t0 = time.monotonic()
                    conn.request("GET", path)
                    r = conn.getresponse()
                    r.read()
                    dt = time.monotonic() - t0
                    with lock:
                        lat[kind].append(dt)
                        if r.status != 200:
                            errors.append(r.status)
        except Exception as e:  # connection problems count as failures
            with lock:
                errors.append(repr(e))
        finally:
            conn.close()

    threads = [threading.Thread(target=client) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    still = SHARED.result(tid)["status"]
    SHARED.request("DELETE", "/results/" + tid)
    check(not errors, "errors: %s" % errors[:5])
    for kind, v in lat.items():
        v.sort()
        p50, p99 = v[len(v) // 2], v[int(len(v) * 0.99)]
        print("# %-7s %5d requests while generating: p50 %.1f ms, p99 %.1f ms, max %.1f ms"
              % (kind, len(v), p50 * 1e3, p99 * 1e3, v[-1] * 1e3), flush=True)
        check(p99 < 0.5, "%s p99 %.0f ms" % (kind, p99 * 1e3))
    check(still == "processing", "the generation was running throughout (%s)" % still)


def test_metrics_and_openapi():
    m = SHARED.get("/metrics")
    check(m.status == 200 and m.header("Content-Type").startswith("text/plain"), m.status)
    text = m.body.decode()
    for name in ("diffusiond_queue_depth", 'diffusiond_tasks{status="completed"}',
                 "diffusiond_generation_seconds_bucket", "diffusiond_step_seconds_count",
                 "diffusiond_http_requests_total", "diffusiond_model_loaded 1"):
        check(name in text, "metrics has %s" % name)
    doc = SHARED.get("/openapi.json").json()
    check(doc["openapi"].startswith("3."), doc["openapi"])
    want = {"/", "/health", "/openapi.json", "/metrics", "/generate", "/results/{task_id}",
            "/results/{task_id}/image", "/results/{task_id}/events",
            "/results/{task_id}/cancel", "/models", "/sdapi/v1/txt2img", "/sdapi/v1/img2img",
            "/sdapi/v1/options", "/sdapi/v1/sd-models", "/sdapi/v1/samplers",
            "/sdapi/v1/schedulers", "/sdapi/v1/upscalers", "/sdapi/v1/latent-upscale-modes",
            "/sdapi/v1/sd-vae", "/sdapi/v1/loras", "/sdapi/v1/scripts", "/sdapi/v1/progress",
            "/sdapi/v1/interrupt", "/v1/images/generations", "/v1/images/edits",
            "/v1/images/files/{task_id}", "/v1/models"}
    check(want == set(doc["paths"]), sorted(doc["paths"]))
    page = SHARED.get("/")
    check(page.status == 200 and b"<form" in page.body, page.status)
    check(page.header("Content-Type").startswith("text/html"), page.headers)


def test_models_sdxl_single_file_loras():
    """An SDXL single-file checkpoint served with its configs, a LoRA folder:
    /health and /models describe it, requests name LoRAs (field or prompt
    tag), SDXL's guidance default and micro-conditioning apply, a LoRA that
    does not exist is a 422 at submission."""
    loras = os.path.join(REPO, "tests", "data", "lora")
    s = new_server("sdxl", ["--config", os.path.join(REPO, "tests", "data", "tiny-sdxl"),
                            "--lora-dir", loras, "--rate-limit", "0"],
                   model=os.path.join(REPO, "tests", "data", "single", "tiny-sdxl.safetensors"))
    try:
        h = s.get("/health").json()
        info = h["model_info"]
        check(info["family"] == "SDXL" and info["format"] == "single-file" and info["name"] == "tiny-sdxl", h)
        check(info["prediction_type"] == "epsilon" and info["default_guidance"] == 5.0, info)
        check(info["default_width"] == 128 and "kernels" in h["cpu"], h)
        m = s.get("/models").json()
        check([x["family"] for x in m["models"]] == ["SDXL"], m)
        check("tiny-sdxl-style" in m["loras"] and "tiny-sd1-detail" in m["loras"], m["loras"])
        base = {"prompt": "a lighthouse", "num_inference_steps": 2, "seed": 5, "width": 64, "height": 64}
        t0 = s.submit(base)
        r0 = s.wait_status(t0, "completed")
        check(r0["params"]["guidance_scale"] == 5.0, r0["params"])   # the SDXL default
        t1 = s.submit(dict(base, loras=[{"name": "tiny-sdxl-style", "weight": 0.8}]))
        t2 = s.submit(dict(base, prompt="<lora:tiny-sdxl-style:0.8>a lighthouse"))
        t3 = s.submit(dict(base, original_width=512, original_height=512, crop_top=32))
        r1, r2, r3 = (s.wait_status(t, "completed") for t in (t1, t2, t3))
        check(r1["params"]["loras"] == [{"name": "tiny-sdxl-style", "weight": 0.8}], r1["params"])
        px = [png_decode(base64.b64decode(r["image_base64"]))[3] for r in (r0, r1, r2, r3)]
        check(px[1] != px[0] and px[1] == px[2], "LoRA field and prompt tag give the same image")
        check(px[3] != px[0], "micro-conditioning changes the image")
        for bad, what in (([{"name": "nope"}], "not found"), ([{"name": "../x"}], "not valid"),
                          ([{"name": "tiny-sd1-detail"}], "another model")):
            r = s.post("/generate", dict(base, loras=bad))
            if r.status == 202:  # a LoRA for another model is found out when it is merged
                res = s.wait_status(r.json()["task_id"], ("failed", "completed"))
                check(res["status"] == "failed" and what in res["error_message"], res)
            else:
                check(r.status == 422 and what in json.dumps(r.json()), (r.status, r.body))
        r = s.post("/generate", dict(base, loras=[{"name": "tiny-sdxl-style", "weight": 99}]))
        check(r.status == 422, r.status)
        r = s.post("/generate", dict(base, loras="tiny-sdxl-style"))
        check(r.status == 422 and r.json()["detail"][0]["loc"] == ["body", "loras"], r.body)
    finally:
        s.stop()


def test_access_log():
    SHARED.get("/health")
    SHARED.wait_log(r'127\.0\.0\.1 "GET /health HTTP/1\.1" 200 \d+ [\d.]+ms')


def main():
    global ARGS, TMP, SHARED
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=os.path.join(REPO, "build", "diffusiond"))
    ap.add_argument("--model", default=os.path.join(REPO, "tests", "data", "tiny-sd1"))
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ARGS, rest = ap.parse_known_args()
    ARGS.binary = os.path.abspath(ARGS.binary)
    TMP = tempfile.mkdtemp(prefix="diffusiond-http-")
    SHARED = Server(ARGS.binary, data_dir("shared"), ARGS.model, ["--max-upload", str(2 << 20)])
    runner = Runner(rest)
    try:
        SHARED.start()
        calibrate()
        tests = [(n[5:], f) for n, f in globals().items() if n.startswith("test_")]
        rc = runner.run(tests)
        SHARED.stop()
    except TestFailure as e:
        print("FAILED (shared server): %s" % e)
        rc = 1
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
