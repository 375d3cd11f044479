#!/usr/bin/env python3
"""queue_bench.py - what the task queue itself costs: throughput, latency, Redis commands.

    python3 bench/queue_bench.py [--tasks 300] [--workers 1,2,4] [--clients 20]

The engine is made nearly free (the tiny model at 8x8, 1 step: a few ms a
task), so what is measured is the store and the processes around it:

  sqlite     one `diffusiond serve` (SQLite store, its one embedded worker)
  redis N    one API node (--workers 0) and N `diffusiond worker` processes
             over a fresh redis-server (AOF, appendfsync everysec)

For each: --tasks submissions from --clients concurrent clients, then wait
for all; tasks per second from the first submission to the last
completion; submit-to-start latency (started_at - created_at, p50 / p99);
for Redis, commands per task (INFO stats total_commands_processed over the
run, every process's calls included: submissions, claims, heartbeats,
progress, polling by the clients). Prints a markdown table.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "http"))
from harness import REPO, Server, free_port, redis_cmd, redis_ping, wait_until  # noqa: E402

TINY = os.path.join(REPO, "tests", "data", "tiny-sd1")
BODY = {"num_inference_steps": 1, "width": 8, "height": 8, "guidance_scale": 0}


def parse_time(s):
    import datetime
    return datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def completed(api):
    m = api.get("/metrics").body.decode()
    for line in m.splitlines():
        if line.startswith('diffusiond_tasks{status="completed"}'):
            return int(float(line.split()[-1]))
    return 0


def idle_latency(api, n=50):
    """Submit-to-start of one task at a time on an idle queue."""
    lat = []
    for i in range(n):
        tid = api.submit(dict(BODY, prompt="idle %d" % i, seed=i))
        r = api.wait_status(tid, "completed", timeout=60)
        lat.append(parse_time(r["started_at"]) - parse_time(r["created_at"]))
    return sorted(lat)


def run_load(api, tasks, clients, count_commands=None):
    """Throughput with the queue full: submit everything, wait on /metrics
    (one request every 50 ms, so the clients' own polling is not what is
    counted), then read the results. Returns (seconds, latencies, failed,
    store commands during the run or None)."""
    base = completed(api)
    c0 = count_commands() if count_commands else 0
    ids, lock = [], threading.Lock()

    def client(k):
        for i in range(k, tasks, clients):
            tid = api.submit(dict(BODY, prompt="queue bench %d" % i, seed=i))
            with lock:
                ids.append(tid)
    t0 = time.monotonic()
    th = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in th:
        t.start()
    for t in th:
        t.join()
    while completed(api) - base < tasks:
        time.sleep(0.05)
    elapsed = time.monotonic() - t0
    cmds = count_commands() - c0 if count_commands else None
    results = {tid: api.result(tid) for tid in ids}
    lat = sorted(parse_time(r["started_at"]) - parse_time(r["created_at"]) for r in results.values())
    failed = sum(r["status"] != "completed" for r in results.values())
    return elapsed, lat, failed, cmds


def pct(v, p):
    return v[min(len(v) - 1, int(len(v) * p))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=os.path.join(REPO, "build", "diffusiond"))
    ap.add_argument("--tasks", type=int, default=300)
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--workers", default="1,2,4")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="diffusiond-queue-bench-")
    rows = []

    s = Server(a.binary, os.path.join(tmp, "sqlite"), TINY, ["--queue-capacity", "100000",
                                                              "--access-log", "off"]).start()
    try:
        idle = idle_latency(s)
        elapsed, lat, failed, _ = run_load(s, a.tasks, a.clients)
        rows.append(("sqlite, 1 process", elapsed, lat, failed, None, idle))
    finally:
        s.stop()

    for n in [int(x) for x in a.workers.split(",")]:
        d = os.path.join(tmp, "redis%d" % n)
        os.makedirs(d)
        port = free_port()
        rs = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", d,
                               "--save", "", "--appendonly", "yes", "--appendfsync", "everysec",
                               "--daemonize", "no", "--logfile", os.path.join(d, "log")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: redis_ping(port), 10, "redis")
        url = "redis://127.0.0.1:%d" % port
        api = Server(a.binary, os.path.join(d, "api"), TINY, ["--store", url, "--workers", "0",
                                                              "--queue-capacity", "100000",
                                                              "--access-log", "off"]).start()
        workers = [subprocess.Popen([a.binary, "worker", "--store", url, "--model", TINY],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                   for _ in range(n)]
        try:
            wait_until(lambda: api.get("/health").json().get("workers") == n, 30, "workers")
            idle = idle_latency(api)

            def count():
                info = redis_cmd(port, "INFO", "stats")
                return int(info.split(b"total_commands_processed:")[1].split()[0])
            elapsed, lat, failed, cmds = run_load(api, a.tasks, a.clients, count)
            rows.append(("redis, %d worker%s" % (n, "" if n == 1 else "s"), elapsed, lat, failed,
                         cmds / a.tasks, idle))
        finally:
            for w in workers:
                w.terminate()
                w.wait()
            api.stop()
            rs.kill()
            rs.wait()

    cpu = subprocess.run("grep -m1 'model name' /proc/cpuinfo", shell=True, capture_output=True,
                         text=True).stdout.split(":")[-1].strip()
    print("\n%d tasks (tiny model, 8x8, 1 step) from %d clients; %s, %d CPUs\n" % (
        a.tasks, a.clients, cpu, os.cpu_count()))
    print("| setup | tasks/s (queue full) | submit-to-start, idle queue: p50 / p99 | "
          "queue full: p50 / p99 | Redis commands per task | failed |")
    print("|---|--:|--:|--:|--:|--:|")
    for name, elapsed, lat, failed, cmds, idle in rows:
        print("| %s | %.1f | %.1f / %.1f ms | %.0f / %.0f ms | %s | %d |" % (
            name, a.tasks / elapsed, statistics.median(idle) * 1e3, pct(idle, 0.99) * 1e3,
            statistics.median(lat) * 1e3, pct(lat, 0.99) * 1e3,
            "%.1f" % cmds if cmds is not None else "-", failed))


if __name__ == "__main__":
    main()
