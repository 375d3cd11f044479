#!/usr/bin/env python3
"""test_page.py - the web page at / in a real browser (headless Chromium).

    python3 tests/http/test_page.py --binary build/diffusiond

Starts diffusiond with the tiny model, opens http://127.0.0.1:PORT/ in
Debian's chromium, fills in the form, clicks Generate, and waits until the
generated image has loaded in the page. Chromium is driven through the
DevTools protocol over a WebSocket, with a minimal client written on the
standard library. Skips (exit 0, "skipped") when chromium is not installed,
unless DIFFUSIOND_REQUIRE_CHROMIUM=1.
"""
import argparse
import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import REPO, Runner, Server, TestFailure, check, wait_until  # noqa: E402


class WebSocket:
    """Just enough of RFC 6455 for the DevTools protocol (text frames)."""

    def __init__(self, url, timeout=30):
        rest = url[len("ws://"):]
        hostport, path = rest.split("/", 1)
        host, port = hostport.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(("GET /%s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n"
                           "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n" % (path, hostport, key)).encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            check(chunk, "websocket handshake: connection closed")
            head += chunk
        check(head.split(b" ")[1] == b"101", "websocket handshake: %r" % head[:80])

    def _recv_exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            check(chunk, "websocket closed")
            buf += chunk
        return buf

    def send(self, text):
        data = text.encode()
        head = bytearray([0x81])  # FIN + text
        n = len(data)
        if n < 126:
            head.append(0x80 | n)
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)
        head += mask
        self.sock.sendall(bytes(head) + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def recv(self):
        message = b""
        while True:
            b0, b1 = self._recv_exact(2)
            op, n = b0 & 0x0F, b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._recv_exact(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._recv_exact(8))[0]
            payload = self._recv_exact(n)
            if op == 8:
                raise TestFailure("websocket closed by the browser")
            if op == 9:  # ping: answer and go on
                continue
            message += payload
            if b0 & 0x80:
                return message.decode()

    def close(self):
        self.sock.close()


class DevTools:
    def __init__(self, ws_url):
        self.ws = WebSocket(ws_url)
        self.next_id = 0
        self.events = []

    def call(self, method, **params):
        self.next_id += 1
        my_id = self.next_id
        self.ws.send(json.dumps({"id": my_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == my_id:
                check("error" not in msg, "%s: %s" % (method, msg.get("error")))
                return msg.get("result", {})
            self.events.append(msg)

    def evaluate(self, expr):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True,
                      awaitPromise=True)
        check("exceptionDetails" not in r, "page error: %s" % r.get("exceptionDetails"))
        return r["result"].get("value")

    def wait_event(self, name, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in self.events:
                if e.get("method") == name:
                    return e
            msg = json.loads(self.ws.recv())
            self.events.append(msg)
        raise TestFailure("no %s within %d s" % (name, timeout))


def start_chromium(profile):
    cmd = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--disable-extensions", "--remote-debugging-port=0", "--remote-allow-origins=*",
           "--user-data-dir=" + profile, "about:blank"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    port_file = os.path.join(profile, "DevToolsActivePort")
    wait_until(lambda: os.path.exists(port_file) and open(port_file).read().count("\n") >= 1,
               60, "chromium's DevTools port")
    port = int(open(port_file).read().split("\n")[0])

    def page_target():
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/json/list" % port, timeout=5) as r:
                targets = json.load(r)
        except OSError:
            return None
        pages = [t for t in targets if t.get("type") == "page"]
        return pages[0]["webSocketDebuggerUrl"] if pages else None
    return proc, wait_until(page_target, 30, "a page target")


def test_page_generates_an_image():
    tmp = tempfile.mkdtemp(prefix="diffusiond-page-")
    server = Server(ARGS.binary, os.path.join(tmp, "data"), ARGS.model)
    browser = None
    try:
        server.start()
        browser, ws_url = start_chromium(os.path.join(tmp, "profile"))
        dt = DevTools(ws_url)
        dt.call("Page.enable")
        dt.call("Page.navigate", url="http://127.0.0.1:%d/" % server.port)
        dt.wait_event("Page.loadEventFired", 60)
        wait_until(lambda: "model" in (dt.evaluate("document.getElementById('health')"
                                                    ".textContent") or ""), 30, "health line")
        dt.evaluate("""(() => {
            const set = (id, v) => { document.getElementById(id).value = v; };
            set('prompt', 'a small red square'); set('steps', '4'); set('width', '64');
            set('height', '64'); set('seed', '7');
            document.getElementById('go').click();
            return true; })()""")

        def image_loaded():
            st = dt.evaluate("""(() => { const i = document.getElementById('image');
                return {status: document.getElementById('status').textContent,
                        width: i.naturalWidth, height: i.naturalHeight,
                        meta: document.getElementById('meta').textContent}; })()""")
            check("failed" not in st["status"] and "error" not in st["status"], st["status"])
            return st if st["width"] > 0 else None
        st = wait_until(image_loaded, 180, "the image to appear in the page", interval=0.2)
        check((st["width"], st["height"]) == (64, 64), st)
        check(st["status"] == "completed", st)
        task_id = st["meta"].split("task ")[-1].strip()
        res = server.result(task_id)
        check(res["status"] == "completed" and res["prompt"] == "a small red square", res)
        check(res["seed"] == 7 and res["params"]["num_inference_steps"] == 4, res["params"])
        dt.ws.close()
    finally:
        if browser:
            browser.terminate()
            try:
                browser.wait(20)
            except subprocess.TimeoutExpired:
                browser.kill()
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    global ARGS, CHROMIUM
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=os.path.join(REPO, "build", "diffusiond"))
    ap.add_argument("--model", default=os.path.join(REPO, "tests", "data", "tiny-sd1"))
    ARGS, rest = ap.parse_known_args()
    ARGS.binary = os.path.abspath(ARGS.binary)
    CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
    if not CHROMIUM:
        if os.environ.get("DIFFUSIOND_REQUIRE_CHROMIUM") == "1":
            print("chromium not found")
            return 1
        print("skipped: chromium not installed (apt-get install chromium)")
        print("0 passed, 0 failed, 1 skipped")
        return 0
    return Runner(rest).run([("page_generates_an_image", test_page_generates_an_image)])


if __name__ == "__main__":
    sys.exit(main())
