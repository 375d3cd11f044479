#!/usr/bin/python3
"""test_page.py - the web page at / in a real browser (headless Chromium).

    /usr/bin/python3 tests/http/test_page.py --binary build/diffusiond

Starts diffusiond with the tiny model and drives Debian's chromium through
Selenium (python3-selenium, chromium-driver): a text-to-image task with two
images, the gallery of recent tasks kept across a reload and re-run with a
click, image-to-image with an uploaded init image and mask, and an upload
that is not an image (the error is shown). Runs with Debian's python3, which
is where python3-selenium installs. Skips (exit 0, "skipped") when Selenium
or chromedriver is missing, unless DIFFUSIOND_REQUIRE_CHROMIUM=1.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import REPO, Runner, Server, check, png_encode, wait_until  # noqa: E402

ARGS = None
TMP = None
SERVER = None
DRIVER = None


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1200,1600"):
        opts.add_argument(a)
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)


def by_id(i):
    from selenium.webdriver.common.by import By
    return DRIVER.find_element(By.ID, i)


def set_value(i, v):
    DRIVER.execute_script("document.getElementById(arguments[0]).value = arguments[1];", i, str(v))


def loaded_images(selector):
    """naturalWidth of every loaded <img> matching selector."""
    return DRIVER.execute_script(
        "return [...document.querySelectorAll(arguments[0])].filter(i => i.complete && "
        "i.naturalWidth > 0).map(i => i.naturalWidth);", selector)


def status():
    return by_id("status").text


def gallery_ids():
    return DRIVER.execute_script(
        "return [...document.querySelectorAll('#gallery .entry')].map(e => e.dataset.task);")


def fill(prompt, steps=4, side=64, count=1, seed=""):
    by_id("prompt").clear()
    by_id("prompt").send_keys(prompt)
    set_value("steps", steps)
    set_value("width", side)
    set_value("height", side)
    set_value("count", count)
    set_value("seed", seed)


def test_page_text_to_image_two_images():
    DRIVER.get("http://127.0.0.1:%d/" % SERVER.port)
    wait_until(lambda: "tiny-sd1" in by_id("health").text, 30, "health line")
    fill("a red circle", count=2, seed=7)
    by_id("go").click()
    wait_until(lambda: len(loaded_images("#images img")) == 2 or "error" in by_id("status").get_attribute("class"),
               120, "two images")
    check(loaded_images("#images img") == [64, 64], (status(), loaded_images("#images img")))
    check(status() == "completed", status())
    check("seed 7" in by_id("meta").text, by_id("meta").text)


def test_page_gallery_survives_reload_and_reruns():
    ids = gallery_ids()
    check(len(ids) == 1, ids)
    DRIVER.refresh()
    wait_until(lambda: gallery_ids() == ids, 30, "gallery after reload")
    wait_until(lambda: len(loaded_images("#gallery img")) == 1, 30, "thumbnail")
    first = DRIVER.execute_script("return document.querySelector('#gallery .entry p').textContent;")
    check(first == "a red circle", first)
    DRIVER.execute_script("document.querySelector('#gallery .rerun').click();")
    wait_until(lambda: len(gallery_ids()) == 2, 120, "a second gallery entry")
    wait_until(lambda: len(loaded_images("#images img")) == 2, 60, "re-run images")
    new = gallery_ids()[0]
    check(new != ids[0], gallery_ids())
    task = SERVER.result(new)
    check(task["params"]["seed"] == 7 and task["params"]["num_images"] == 2, task["params"])


def test_page_image_to_image_with_mask():
    init = os.path.join(TMP, "init.png")
    mask = os.path.join(TMP, "mask.png")
    with open(init, "wb") as f:
        f.write(png_encode(40, 24, 3, bytes(range(256)) * 11 + bytes(40 * 24 * 3 - 2816)))
    with open(mask, "wb") as f:
        f.write(png_encode(40, 24, 1, bytes([255] * 20 + [0] * 20) * 24))
    fill("a blue square")
    by_id("init").send_keys(init)
    by_id("mask").send_keys(mask)
    wait_until(lambda: by_id("mask-preview").is_displayed(), 10, "mask preview")
    set_value("strength", 0.6)
    by_id("go").click()
    wait_until(lambda: status() == "completed" or "error" in by_id("status").get_attribute("class"),
               120, "img2img done")
    check(status() == "completed", status())
    check(loaded_images("#images img") == [64], loaded_images("#images img"))
    task = SERVER.result(gallery_ids()[0])
    p = task["params"]
    check(p["init_image"] is True and p["mask"] is True and abs(p["strength"] - 0.6) < 1e-9, p)
    stored = DRIVER.execute_script("return localStorage.getItem('diffusiond-gallery');")
    check("data:image" not in stored and json.loads(stored)[0]["img2img"], "images not kept in the browser")


def test_page_shows_errors():
    bad = os.path.join(TMP, "notes.png")
    with open(bad, "wb") as f:
        f.write(b"this is not an image")
    by_id("clear-images").click()
    fill("x")
    by_id("init").send_keys(bad)
    wait_until(lambda: DRIVER.execute_script("return document.getElementById('init').files.length") == 1,
               10, "file chosen")
    wait_until(lambda: by_id("init-preview").get_attribute("src"), 10, "file read")
    by_id("go").click()
    wait_until(lambda: "error" in by_id("status").get_attribute("class"), 30, "an error")
    check("init_image" in status() and "PNG or JPEG" in status(), status())


def main():
    global ARGS, TMP, SERVER, DRIVER
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=os.path.join(REPO, "build", "diffusiond"))
    ARGS, rest = ap.parse_known_args()
    try:
        import selenium  # noqa: F401
        have = shutil.which("chromedriver") and (shutil.which("chromium") or os.path.exists("/usr/bin/chromium"))
    except ImportError:
        have = False
    if not have:
        if os.environ.get("DIFFUSIOND_REQUIRE_CHROMIUM") == "1":
            print("FAILED: python3-selenium, chromium and chromium-driver are required")
            return 1
        print("skipped: the page test needs python3-selenium, chromium and chromium-driver")
        return 0
    TMP = tempfile.mkdtemp(prefix="diffusiond-page-")
    SERVER = Server(os.path.abspath(ARGS.binary), os.path.join(TMP, "data"))
    rc = 1
    try:
        SERVER.start()
        DRIVER = browser()
        tests = [(n[5:], f) for n, f in globals().items() if n.startswith("test_")]
        rc = Runner(rest).run(tests)
        SERVER.stop()
    finally:
        if DRIVER:
            DRIVER.quit()
        if SERVER.proc and SERVER.proc.poll() is None:
            SERVER.kill9()
        if rc:
            print("--- server log (tail) ---\n" + SERVER.log_text()[-3000:])
        shutil.rmtree(TMP, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
