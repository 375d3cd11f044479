"""harness.py - start the real diffusiond and talk HTTP to it (stdlib only).

Used by test_http.py and test_page.py. A Server runs `diffusiond serve` on a
free loopback port (--port 0; the port is read from the "listening on" log
line) with a temporary data directory, collects its stderr, and offers
small request helpers. Nothing here sleeps for a fixed time: waits poll a
condition with a deadline.
"""
import http.client
import json
import os
import re
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


class TestFailure(Exception):
    pass


def check(cond, msg="check failed"):
    if not cond:
        raise TestFailure(msg)


def wait_until(fn, timeout, what, interval=0.02):
    """Call fn() until it returns a truthy value; fail after timeout s."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TestFailure("timed out after %.0f s waiting for %s" % (timeout, what))
        time.sleep(interval)


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)

    def header(self, name):
        return self.headers.get(name.lower())


# DIFFUSIOND_TEST_STORE=redis runs every Server on the Redis store: each
# data directory gets its own redis-server (AOF on, on a free loopback
# port), kept across restarts of servers on that directory, so tests stay
# isolated and a restart finds its tasks, as with SQLite.
REDIS = {}


def redis_for(data_dir):
    """(port, process) of the redis-server of data_dir, started if needed."""
    if data_dir in REDIS and REDIS[data_dir][1].poll() is None:
        return REDIS[data_dir]
    port = REDIS[data_dir][0] if data_dir in REDIS else free_port()
    d = os.path.join(data_dir, "redis")
    os.makedirs(d, exist_ok=True)
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", d,
                             "--save", "", "--appendonly", "yes", "--appendfsync", "everysec",
                             "--daemonize", "no", "--logfile", os.path.join(d, "log")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: redis_ping(port), 10, "redis-server on port %d" % port)
    REDIS[data_dir] = (port, proc)
    return REDIS[data_dir]


def stop_redis_all():
    for port, proc in REDIS.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    REDIS.clear()


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_cmd(port, *args, timeout=5):
    """One command in RESP over a new connection; the reply, decoded simply
    (bytes, int, None, list); an error reply raises."""
    import socket
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        s.sendall(out)
        f = s.makefile("rb")

        def read():
            line = f.readline()
            t, rest = line[:1], line[1:-2]
            if t == b"+":
                return rest
            if t == b"-":
                raise TestFailure("redis: " + rest.decode())
            if t == b":":
                return int(rest)
            if t == b"$":
                n = int(rest)
                if n < 0:
                    return None
                data = f.read(n + 2)[:-2]
                return data
            if t == b"*":
                n = int(rest)
                return None if n < 0 else [read() for _ in range(n)]
            raise TestFailure("redis: bad reply %r" % line)
        return read()


def redis_ping(port):
    try:
        return redis_cmd(port, "PING", timeout=1) == b"PONG"
    except (OSError, TestFailure):
        return False


class Server:
    def __init__(self, binary, data_dir, model=None, args=(), env=None):
        self.binary = binary
        self.data_dir = data_dir
        self.model = model
        self.args = list(args)
        self.env = env
        self.proc = None
        self.port = None
        self.log = []
        self.lock = threading.Lock()

    # -- process -----------------------------------------------------------
    def start(self, timeout=60):
        cmd = [self.binary, "serve", "--port", "0", "--data-dir", self.data_dir]
        if self.model:
            cmd += ["--model", self.model]
        self.redis_port = None
        if os.environ.get("DIFFUSIOND_TEST_STORE") == "redis" and "--store" not in self.args:
            self.redis_port = redis_for(self.data_dir)[0]
            cmd += ["--store", "redis://127.0.0.1:%d" % self.redis_port]
            if "--lease" not in self.args:
                cmd += ["--lease", "5"]  # a killed worker's task is requeued in seconds
        cmd += self.args
        env = dict(os.environ)
        env.update(self.env or {})
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     env=env)
        threading.Thread(target=self._read_log, daemon=True).start()

        def listening():
            if self.proc.poll() is not None:
                raise TestFailure("server exited with %s:\n%s" % (self.proc.returncode,
                                                                  self.log_text()))
            m = re.search(r"listening on http://[^ ]*:(\d+)", self.log_text())
            return m and int(m.group(1))
        self.port = wait_until(listening, timeout, "the server to listen")
        return self

    def _read_log(self):
        for line in self.proc.stderr:
            with self.lock:
                self.log.append(line.decode("utf-8", "replace"))

    def log_text(self):
        with self.lock:
            return "".join(self.log)

    def wait_log(self, pattern, timeout=30):
        return wait_until(lambda: re.search(pattern, self.log_text()), timeout,
                          "log line /%s/" % pattern)

    def stop(self, sig=signal.SIGTERM, timeout=60):
        """Send sig, wait for the exit and require a clean one (exit 0: a
        sanitizer finding at exit also fails here); returns the code."""
        if not self.proc or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise TestFailure("server did not exit within %d s of signal %d" % (timeout, sig))
        if code != 0:
            raise TestFailure("server exited with %d:\n%s" % (code, self.log_text()[-3000:]))
        return code

    def kill9(self):
        self.proc.kill()
        self.proc.wait()

    # -- HTTP --------------------------------------------------------------
    def request(self, method, path, body=None, headers=None, timeout=30):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            h = dict(headers or {})
            if isinstance(body, (dict, list)):
                body = json.dumps(body).encode()
                h.setdefault("Content-Type", "application/json")
            elif isinstance(body, str):
                body = body.encode()
            conn.request(method, path, body=body, headers=h)
            r = conn.getresponse()
            data = r.read()
            return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, data)
        finally:
            conn.close()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body, **kw)

    def submit(self, body, headers=None):
        r = self.post("/generate", body, headers=headers)
        check(r.status == 202, "POST /generate: %d %s" % (r.status, r.body[:300]))
        return r.json()["task_id"]

    def result(self, task_id, headers=None):
        r = self.get("/results/" + task_id, headers=headers)
        check(r.status == 200, "GET /results: %d %s" % (r.status, r.body[:300]))
        return r.json()

    def wait_status(self, task_id, statuses, timeout=120, headers=None):
        if isinstance(statuses, str):
            statuses = (statuses,)

        def done():
            res = self.result(task_id, headers)
            return res if res["status"] in statuses else None
        return wait_until(done, timeout, "task %s to be %s" % (task_id, "/".join(statuses)))

    def events(self, task_id, timeout=120, headers=None):
        """Read the whole SSE stream of a task: [(event, data), ...]."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("GET", "/results/%s/events" % task_id, headers=headers or {})
            r = conn.getresponse()
            check(r.status == 200, "events: %d" % r.status)
            check(r.getheader("Content-Type") == "text/event-stream", "events content type")
            out, event, data = [], None, ""
            for raw in r:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    data += line[6:]
                elif line == "" and event:
                    out.append((event, json.loads(data)))
                    event, data = None, ""
            return out
        finally:
            conn.close()


def png_encode(w, h, ch, pixels):
    """An 8-bit PNG of w x h pixels with ch channels (1 gray, 3 RGB, 4 RGBA)."""
    ctype = {1: 0, 3: 2, 4: 6}[ch]
    raw = b"".join(b"\0" + pixels[y * w * ch:(y + 1) * w * ch] for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, ctype, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def png_decode(data):
    """(width, height, channels, pixel bytes) of an 8-bit RGB/RGBA/gray PNG."""
    check(data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG")
    pos, idat, w = 8, b"", None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + n]
        check(zlib.crc32(kind + chunk) == struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])[0],
              "PNG chunk CRC")
        if kind == b"IHDR":
            w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", chunk)
            check(depth == 8 and interlace == 0, "PNG: only 8-bit non-interlaced")
            ch = {0: 1, 2: 3, 4: 2, 6: 4}[ctype]
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + n
    raw = zlib.decompress(idat)
    stride = w * ch
    out = bytearray()
    prev = bytearray(stride)
    for y in range(h):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - ch] if i >= ch else 0
            b = prev[i]
            c = prev[i - ch] if i >= ch else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 255
        out += line
        prev = line
    return w, h, ch, bytes(out)


class Runner:
    """Runs test functions, prints one line each and a closing summary."""

    def __init__(self, argv):
        self.only = [a for a in argv if not a.startswith("-")]
        self.results = []

    def run(self, tests):
        for name, fn in tests:
            if self.only and not any(name.startswith(o) or o in name for o in self.only):
                continue
            t0 = time.monotonic()
            try:
                fn()
                status, msg = "OK", ""
            except TestFailure as e:
                status, msg = "NOT OK", str(e)
            except Exception as e:  # a crash in the test is a failure too
                status, msg = "NOT OK", "%s: %s" % (type(e).__name__, e)
            ms = (time.monotonic() - t0) * 1e3
            print("%-8s %-48s %8.1f ms" % (status, name, ms), flush=True)
            if msg:
                print("  " + msg.replace("\n", "\n  "), flush=True)
            self.results.append(status == "OK")
        passed = sum(self.results)
        failed = len(self.results) - passed
        print("%d passed, %d failed" % (passed, failed))
        return 1 if failed or not self.results else 0
