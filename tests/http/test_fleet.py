#!/usr/bin/env python3
"""test_fleet.py - several processes over one Redis: API nodes and workers.

    python3 tests/http/test_fleet.py --binary build/diffusiond [name-prefix ...]

Starts a real redis-server (AOF on, appendfsync everysec) on a free
loopback port, API nodes (`diffusiond serve --store redis://... --workers
0`) and `diffusiond worker` processes with the tiny model, and checks the
guarantees of the Redis store: a killed worker's task is finished by
another (attempts 2, one result); a worker paused past its lease changes
nothing when it wakes; a Redis crash and restart loses no accepted task;
Redis down means 503 (never a 202 for a task not stored) and everyone
reconnects; a task that kills its worker every time fails after 3
deliveries; 2 API nodes and 2 workers take 200 tasks from 20 clients.
Skips when redis-server is not installed (tools/install-deps.sh installs
it), unless DIFFUSIOND_REQUIRE_REDIS=1.
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (REPO, Runner, Server, TestFailure, check, free_port,  # noqa: E402
                     redis_cmd, redis_ping, wait_until)

ARGS = None
TMP = None
LEASE = "2"  # seconds: a lost worker's task comes back quickly


class Redis:
    def __init__(self, name):
        self.dir = os.path.join(TMP, name)
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
             "--save", "", "--appendonly", "yes", "--appendfsync", "everysec", "--daemonize", "no",
             "--logfile", os.path.join(self.dir, "log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: redis_ping(self.port), 10, "redis-server")
        return self

    def kill9(self):
        self.proc.kill()
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    @property
    def url(self):
        return "redis://127.0.0.1:%d" % self.port

    def cmd(self, *a):
        return redis_cmd(self.port, *a)

    def task(self, tid):
        """The task's hash as a dict of str."""
        flat = self.cmd("HGETALL", "dfd:task:" + tid)
        return {flat[i].decode(): flat[i + 1].decode() for i in range(0, len(flat), 2)}


class Worker:
    """A `diffusiond worker` process; its log is kept."""

    def __init__(self, redis, env=None, args=()):
        self.redis, self.env, self.args = redis, env or {}, list(args)
        self.proc, self.log, self.lock = None, [], threading.Lock()

    def start(self):
        env = dict(os.environ)
        env.update(self.env)
        self.proc = subprocess.Popen([ARGS.binary, "worker", "--store", self.redis.url, "--lease", LEASE,
                                      "--model", ARGS.model] + self.args,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()
        wait_until(lambda: "worker serving" in self.log_text() or self.proc.poll() is not None, 30,
                   "the worker to start")
        check(self.proc.poll() is None, "worker exited:\n" + self.log_text())
        return self

    def _read(self, proc):
        for line in proc.stderr:
            with self.lock:
                self.log.append(line.decode("utf-8", "replace"))

    def log_text(self):
        with self.lock:
            return "".join(self.log)

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def api_node(redis, name, args=()):
    return Server(ARGS.binary, os.path.join(TMP, name), ARGS.model,
                  ["--store", redis.url, "--workers", "0", "--lease", LEASE] + list(args)).start()


def quick(prompt="a red circle", **kw):
    body = {"prompt": prompt, "num_inference_steps": 3, "seed": 1, "width": 64, "height": 64}
    body.update(kw)
    return body


def long_task(prompt):
    """A task that runs for several seconds on the tiny model."""
    return {"prompt": prompt, "num_inference_steps": 150, "seed": 2, "width": 256, "height": 256}


def running_on(redis, tid, timeout=60):
    """Wait until tid is processing with a step done; its worker's name."""
    def ok():
        t = redis.task(tid)
        return t.get("status") == "processing" and int(t.get("step", "0")) >= 1 and t["worker"]
    return wait_until(ok, timeout, "task %s to run" % tid)


def pid_of(worker_name):
    return int(worker_name.split(":")[1])


class Fleet:
    def __init__(self, name, workers=2, worker_env=None, api_args=()):
        self.redis = Redis(name + "-redis").start()
        self.api = api_node(self.redis, name + "-api", api_args)
        self.workers = [Worker(self.redis, worker_env).start() for _ in range(workers)]

    def by_pid(self, pid):
        return next(w for w in self.workers if w.proc.pid == pid)

    def close(self):
        for w in self.workers:
            w.stop()
        self.api.stop()
        self.redis.stop()


# ---------------------------------------------------------------------------


def test_fleet_basic():
    f = Fleet("basic", workers=1)
    try:
        tid = f.api.submit(quick())
        res = f.api.wait_status(tid, "completed", timeout=60)
        check(res["image_base64"] and res["params"]["model"] == "tiny-sd1", res["params"])
        h = f.api.get("/health").json()
        check(h["store"] == "redis" and h["workers"] == 1 and h["model_status"] == "available", h)
        m = f.api.get("/models").json()["models"]
        check(m[0]["name"] == "tiny-sd1" and m[0]["workers"] == 1, m)
        check('diffusiond_workers_alive{model="tiny-sd1"} 1' in f.api.get("/metrics").body.decode(),
              "metrics")
        # Another model name: 422 naming the ones there are.
        r = f.api.post("/generate", quick(model="sdxl"))
        check(r.status == 422 and "tiny-sd1" in r.body.decode(), r.body)
        # Progress events come through Redis from the worker's process.
        tid = f.api.submit(quick(num_inference_steps=8))
        ev = f.api.events(tid, timeout=60)
        kinds = [e for e, _ in ev]
        check(kinds[-1] == "completed" and kinds.count("step") >= 8, kinds)
        # Cancelling a task that runs in another process stops it within
        # seconds (the worker's lease renewal brings the request).
        tid = f.api.submit(long_task("cancel me"))
        running_on(f.redis, tid)
        t0 = time.monotonic()
        r = f.api.request("DELETE", "/results/" + tid)
        check(r.status == 202, (r.status, r.body))
        f.api.wait_status(tid, "cancelled", timeout=30)
        check(time.monotonic() - t0 < 5, "stopped in %.1f s" % (time.monotonic() - t0))
        # A worker that stops leaves the fleet at once.
        f.workers[0].stop()
        h = wait_until(lambda: f.api.get("/health").json()["workers"] == 0 and
                       f.api.get("/health").json(), 10, "worker gone")
        check(h["model_status"] == "unavailable", h)
        tid = f.api.submit(quick("waits for a worker"))
        time.sleep(1)
        check(f.api.result(tid)["status"] == "pending", "queued while none is alive")
        f.workers.append(Worker(f.redis).start())
        f.api.wait_status(tid, "completed", timeout=60)
    finally:
        f.close()


def test_fleet_kill9_worker_mid_generation():
    f = Fleet("kill9")
    try:
        tid = f.api.submit(long_task("the victim"))
        victim = running_on(f.redis, tid)
        f.by_pid(pid_of(victim)).proc.kill()
        res = f.api.wait_status(tid, ("completed", "failed"), timeout=180)
        check(res["status"] == "completed", res)
        t = f.redis.task(tid)
        check(t["attempts"] == "2" and t["worker"] != victim and t["n_images"] == "1", t)
        check(f.redis.cmd("ZCARD", "dfd:running") == 0 and f.redis.cmd("ZCARD", "dfd:pending") == 0,
              "nothing left in flight")
    finally:
        f.close()


def test_fleet_paused_worker_changes_nothing():
    f = Fleet("sigstop")
    try:
        tid = f.api.submit(long_task("paused"))
        first = running_on(f.redis, tid)
        w1 = f.by_pid(pid_of(first))
        w1.signal(signal.SIGSTOP)
        # Past its lease the task goes to the other worker...
        second = wait_until(lambda: (f.redis.task(tid).get("worker") not in ("", first) and
                                     f.redis.task(tid)["worker"]), 60, "the other worker to take it")
        w1.signal(signal.SIGCONT)
        res = f.api.wait_status(tid, ("completed", "failed"), timeout=180)
        check(res["status"] == "completed", res)
        t = f.redis.task(tid)
        check(t["worker"] == second and t["attempts"] == "2", t)
        # ... and the one that woke up noticed and dropped its work.
        wait_until(lambda: "lease was lost" in w1.log_text() or "result dropped" in w1.log_text(), 60,
                   "the paused worker to give up")
        check("completed" not in [ln.split()[-1] for ln in w1.log_text().splitlines()
                                  if tid in ln and "completed in" in ln], w1.log_text())
    finally:
        f.close()


def test_fleet_redis_crash_and_outage():
    f = Fleet("crash")
    try:
        ids = [f.api.submit(quick("before %d" % i, num_inference_steps=20)) for i in range(10)]
        wait_until(lambda: any(f.redis.task(t).get("status") == "completed" for t in ids), 60,
                   "some progress")
        f.redis.kill9()
        # Down: no 202 for a task that could not be stored; reads say 503.
        r = f.api.post("/generate", quick("during the outage"))
        check(r.status == 503 and r.header("Retry-After"), (r.status, r.body))
        check(f.api.get("/results/" + ids[0]).status == 503, "results 503")
        check(f.api.get("/health").status == 200, "health still answers")
        time.sleep(1.5)  # workers and API nodes keep failing calls, and stay up
        f.redis.start()
        # Clients retry a 503 (it carries Retry-After) until the nodes have
        # redialled; then everything that got a 202 completes, once.
        def settled(t):
            r = f.api.get("/results/" + t)
            if r.status == 503 and r.header("Retry-After"):
                return None  # still redialling: retry, as a client would
            check(r.status == 200, (r.status, r.body))
            res = r.json()
            return res if res["status"] in ("completed", "failed") else None
        for t in ids:
            res = wait_until(lambda: settled(t), 180, "task %s to finish" % t)
            check(res["status"] == "completed", (t, res))
        after = f.api.submit(quick("after the restart"))
        f.api.wait_status(after, "completed", timeout=60)
        for w in f.workers:
            check(w.proc.poll() is None, "worker alive")
        done = sum(ln.count("completed in") for w in f.workers for ln in w.log_text().splitlines()
                   if any(t in ln for t in ids))
        check(done == len(ids), "each ran to completion once (%d)" % done)
    finally:
        f.close()


def test_fleet_poison_task():
    f = Fleet("poison", workers=2, worker_env={"DIFFUSIOND_TEST_ABORT_PROMPT": "poison"})
    stop = threading.Event()

    def supervise():  # restart dead workers, as systemd would
        while not stop.is_set():
            for i, w in enumerate(f.workers):
                if w.proc.poll() is not None:
                    f.workers[i] = Worker(f.redis, {"DIFFUSIOND_TEST_ABORT_PROMPT": "poison"}).start()
            time.sleep(0.1)
    th = threading.Thread(target=supervise, daemon=True)
    th.start()
    try:
        bad = f.api.submit(quick("poison"))
        good = [f.api.submit(quick("fine %d" % i)) for i in range(3)]
        res = f.api.wait_status(bad, ("completed", "failed"), timeout=120)
        check(res["status"] == "failed" and "stopped 3 times" in res["error_message"], res)
        for t in good:
            check(f.api.wait_status(t, ("completed", "failed"), timeout=120)["status"] == "completed", t)
    finally:
        stop.set()
        th.join()
        f.close()


def test_fleet_load_two_nodes_two_workers():
    f = Fleet("load", api_args=["--queue-capacity", "1000"])
    api2 = api_node(f.redis, "load-api2", ["--queue-capacity", "1000"])
    try:
        nodes = [f.api, api2]
        ids, lock, lat = [], threading.Lock(), []

        def client(k):
            for i in range(10):
                tid = nodes[(k + i) % 2].submit({"prompt": "load %d %d" % (k, i), "num_inference_steps": 1,
                                                 "width": 8, "height": 8, "seed": k * 100 + i})
                with lock:
                    ids.append(tid)
        ths = [threading.Thread(target=client, args=(k,)) for k in range(20)]
        for t in ths:
            t.start()
        for t in ths:
            t.join()
        check(len(set(ids)) == 200, len(set(ids)))
        # Poll while the workers drain the queue.
        pending = set(ids)
        while pending:
            tid = next(iter(pending))
            t0 = time.monotonic()
            r = nodes[len(lat) % 2].result(tid)
            lat.append(time.monotonic() - t0)
            if r["status"] in ("completed", "failed"):
                check(r["status"] == "completed", r)
                pending.discard(tid)
            check(len(lat) < 100000, "draining takes too long")
        lat.sort()
        p99 = lat[int(len(lat) * 0.99)]
        print("# 200 tasks, %d polls: p50 %.1f ms, p99 %.1f ms" % (len(lat), lat[len(lat) // 2] * 1e3,
                                                                  p99 * 1e3), flush=True)
        check(p99 < 0.050, "p99 of GET /results %.1f ms" % (p99 * 1e3))
        for t in ids:
            h = f.redis.task(t)
            check(h["status"] == "completed" and h["attempts"] == "1", (t, h))
        check(f.redis.cmd("HGET", "dfd:counts", "completed") == b"200", "200 completed, once each")
    finally:
        api2.stop()
        f.close()


def moto():
    """(moto_server, a python with boto3) from the tools/install-deps.sh
    virtual environment, or from PATH; None when missing."""
    venv = os.environ.get("DIFFUSIOND_MOTO_VENV",
                          os.path.expanduser("~/.cache/diffusiond/moto-venv"))
    server = os.path.join(venv, "bin", "moto_server")
    if os.access(server, os.X_OK):
        return server, os.path.join(venv, "bin", "python3")
    server = shutil.which("moto_server")
    return (server, sys.executable) if server else None


def test_fleet_s3_images():
    m = moto()
    if not m:
        if os.environ.get("DIFFUSIOND_REQUIRE_REDIS") == "1":
            raise TestFailure("moto_server is required (tools/install-deps.sh sets it up)")
        print("  (skipped: no moto_server)")
        return
    port = free_port()
    srv = subprocess.Popen([m[0], "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    endpoint = "http://127.0.0.1:%d" % port

    def boto(code):
        prog = ("import boto3, sys\ns3 = boto3.client('s3', endpoint_url=%r, aws_access_key_id='AKIDTEST', "
                "aws_secret_access_key='secret', region_name='eu-west-1')\n" % endpoint) + code
        return subprocess.run([m[1], "-c", prog], capture_output=True, text=True, timeout=60)

    wait_until(lambda: boto("s3.list_buckets()").returncode == 0, 30, "moto_server")
    check(boto("s3.create_bucket(Bucket='images', CreateBucketConfiguration="
               "{'LocationConstraint': 'eu-west-1'})").returncode == 0, "bucket")
    env = {"AWS_ACCESS_KEY_ID": "AKIDTEST", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_REGION": "eu-west-1"}
    redis = Redis("s3-redis").start()
    s3args = ["--images", "s3://images/fleet", "--s3-endpoint", endpoint]
    api = Server(ARGS.binary, os.path.join(TMP, "s3-api"), ARGS.model,
                 ["--store", redis.url, "--workers", "0", "--result-ttl", "30"] + s3args, env=env).start()
    w = Worker(redis, env, s3args).start()
    bad = None
    try:
        tid = api.submit(quick("to the bucket", num_images=2))
        res = api.wait_status(tid, "completed", timeout=60)
        check(len(res["images_base64"]) == 2, "two images")
        listing = boto("print(sorted(o['Key'] for o in s3.list_objects_v2(Bucket='images')['Contents']))")
        check("fleet/%s.png" % tid in listing.stdout and "fleet/%s.1.png" % tid in listing.stdout,
              listing.stdout + listing.stderr)
        check(redis.cmd("GET", "dfd:img:%s:0" % tid).startswith(b"s3:"), "Redis keeps a reference")
        # Read back checked by sha256: a replaced object is an error.
        boto("s3.put_object(Bucket='images', Key='fleet/%s.png', Body=b'not the image')" % tid)
        r = api.get("/results/%s/image" % tid)
        check(r.status == 500, (r.status, r.body))
        api.wait_log("not the image stored", 10)  # the log reader may be a moment behind the reply
        # S3 refusing (no such bucket): the task fails, saying why.
        bad = Worker(redis, env, ["--images", "s3://no-such-bucket", "--s3-endpoint", endpoint])
        w.stop()
        bad.start()
        tid2 = api.submit(quick("refused"))
        res = api.wait_status(tid2, ("completed", "failed"), timeout=60)
        check(res["status"] == "failed" and "NoSuchBucket" in res["error_message"], res)
        # S3 down: the task fails with the reason; nothing crashes.
        srv.kill()
        srv.wait()
        tid3 = api.submit(quick("s3 is down"))
        res = api.wait_status(tid3, ("completed", "failed"), timeout=60)
        check(res["status"] == "failed" and "s3: PUT" in res["error_message"], res)
        check(bad.proc.poll() is None and api.proc.poll() is None, "still running")
    finally:
        if bad:
            bad.stop()
        w.stop()
        api.stop()
        redis.stop()
        if srv.poll() is None:
            srv.kill()
            srv.wait()


def main():
    global ARGS, TMP
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=os.path.join(REPO, "build", "diffusiond"))
    ap.add_argument("--model", default=os.path.join(REPO, "tests", "data", "tiny-sd1"))
    ap.add_argument("--keep", action="store_true")
    ARGS, rest = ap.parse_known_args()
    ARGS.binary = os.path.abspath(ARGS.binary)
    if not shutil.which("redis-server"):
        if os.environ.get("DIFFUSIOND_REQUIRE_REDIS") == "1":
            print("FAILED: redis-server is required")
            return 1
        print("skipped: the fleet tests need redis-server (tools/install-deps.sh installs it)")
        return 0
    TMP = tempfile.mkdtemp(prefix="diffusiond-fleet-")
    try:
        tests = [(n[5:], f) for n, f in globals().items() if n.startswith("test_")]
        return Runner(rest).run(tests)
    finally:
        if not ARGS.keep:
            shutil.rmtree(TMP, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
