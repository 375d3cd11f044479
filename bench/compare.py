#!/usr/bin/env python3
"""Side-by-side speed of diffusiond, diffusers and stable-diffusion.cpp on the same weights.

    python3 bench/compare.py [--models sd15,sd21base] [--sizes 256,512] [--steps 20]
        [--precisions fp32,bf16] [--repeat 3] [--images 3] [--threads N]
        [--skip-diffusers] [--skip-sdcpp] [--sdcpp PATH] [--out docs/perf-results.json]
        [--md FILE]

For each model (full-size SD 1.5 / SD 2.1-base architectures with random
weights, built by tools/make_fullsize.py under ~/.cache/diffusiond when
missing), size and precision, one stack after another, never concurrently:

  diffusiond   `build/sdbench time` for the phases (text encoder x2, one UNet
               step with batch 2, VAE decode: best of --repeat after a warm-up)
               and --images runs of `build/diffusiond generate` (Euler, guidance
               7.5) for the whole image; the engine's own seconds, load excluded.
  diffusers    bench/diffusers_bench.py in its own process: the same phases and
               the same whole-image runs through StableDiffusionPipeline.
  sd.cpp       --images runs of its CLI on the same diffusers folder (--type f32
               for fp32, bf16 for bf16), phases read from its log: condition
               (prompt + negative), sampling / steps, decode, generate_image.

Every stack runs as child processes; peak RSS is the ru_maxrss of that one
process (os.wait4), so numbers never mix. Whole-image seconds are the median of
--images runs; phases are the best of --repeat (sdbench reports best-of) for
diffusiond and diffusers, the median over the --images runs for sd.cpp (it
has no phase benchmark). A stack that fails is reported as failed and the run
goes on. Needs `make` (build/sdbench, build/diffusiond), gcc for bench/peak.c,
and torch + diffusers for the diffusers column.
"""
import argparse
import datetime
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import flops  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPT = "a photo of an astronaut riding a horse on mars"
SEED = 42
GUIDANCE = 7.5
# Models whose pipeline settings differ from SD's (Euler at GUIDANCE, --steps):
# SDXL at its default guidance with its own scheduler (Euler), SDXL-Turbo at
# 4 steps without guidance (EulerAncestral, "trailing").
MODEL_SETTINGS = {"sdxl": {"guidance": 5.0, "scheduler": None},
                  "sdxl-turbo": {"guidance": 0.0, "steps": 4, "scheduler": None}}


def settings(model, a):
    """(guidance, steps, diffusiond scheduler or None) for a model folder."""
    s = MODEL_SETTINGS.get(os.path.basename(model.rstrip("/")), {})
    return s.get("guidance", GUIDANCE), s.get("steps", a.steps), s.get("scheduler", "euler")
# FLOP counts quoted in the issue (GFLOP per image); ours are counted from the
# configs by bench/flops.py and are the ones used for GFLOP/s.
ISSUE_GFLOP = {256: {"unet": 189, "vae": 626}, 512: {"unet": 935, "vae": 2555}}
SDCPP_TYPE = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- child processes

class Child:
    """Result of one child process: rc, output, wall seconds, peak RSS in bytes,
    and the CPU seconds that everything else on the machine used meanwhile."""

    def __init__(self, rc, out, err, wall, rss, others=0.0):
        self.rc, self.out, self.err, self.wall, self.rss, self.others = rc, out, err, wall, rss, others

    def error(self):
        """One line saying why it failed (the last non-empty stderr/stdout line)."""
        lines = [ln.strip() for ln in (self.err + "\n" + self.out).splitlines() if ln.strip()]
        why = lines[-1] if lines else "no output"
        return f"exit {self.rc}: {why}"[:300]


def cpu_busy_s():
    """CPU seconds the whole machine has spent busy since boot (steal included:
    on a VM, time the hypervisor gave to others is lost to us too)."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = v
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def wait_idle(max_wait, threshold=0.25):
    """Waits (up to max_wait s) until other processes use under `threshold`
    cores over 5 s, so that a stack does not start in someone else's run."""
    t_end = time.time() + max_wait
    while True:
        b0 = cpu_busy_s()
        time.sleep(5)
        load = (cpu_busy_s() - b0) / 5
        if load < threshold:
            return load
        if time.time() > t_end:
            log(f"  machine still busy ({load:.2f} cores used by others); going on")
            return load
        log(f"  waiting: {load:.2f} cores busy with other processes")


# CPU seconds used by other processes during our children, and their wall time
# (reset for each stack; reported as "other load" = average cores taken).
LOAD = {"others": 0.0, "wall": 0.0}


def run_child(cmd, env=None, timeout=3600):
    """Runs cmd, waits with wait4 to get this process's own ru_maxrss."""
    with tempfile.TemporaryFile("w+") as fo, tempfile.TemporaryFile("w+") as fe:
        busy0 = cpu_busy_s()
        t0 = time.perf_counter()
        try:
            p = subprocess.Popen(cmd, stdout=fo, stderr=fe, env=env, start_new_session=True)
        except OSError as e:
            return Child(127, "", str(e), 0.0, 0)
        rc = None
        while rc is None:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                rc = os.waitstatus_to_exitcode(status)
                p.returncode = rc  # reaped here; keep Popen from waiting again
                break
            if time.perf_counter() - t0 > timeout:
                os.killpg(p.pid, signal.SIGKILL)
                _, status, ru = os.wait4(p.pid, 0)
                p.returncode = rc = 124
                fe.write(f"\ntimed out after {timeout} s")
                break
            time.sleep(0.05)
        wall = time.perf_counter() - t0
        others = max(0.0, cpu_busy_s() - busy0 - ru.ru_utime - ru.ru_stime)
        LOAD["others"] += others
        LOAD["wall"] += wall
        fo.seek(0), fe.seek(0)
        return Child(rc, fo.read(), fe.read(), wall, ru.ru_maxrss * 1024, others)


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def grab(pattern, text, last=True):
    """The float captured by pattern in text (last match), or None."""
    m = re.findall(pattern, text, re.M)
    return float(m[-1] if last else m[0]) if m else None


# ---------------------------------------------------------------- machine, peak

def machine_info(threads):
    info = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
            "kernel": platform.release(), "python": platform.python_version(), "threads": threads,
            "cpus": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            cpu = f.read()
        info["cpu"] = re.search(r"model name\s*:\s*(.*)", cpu).group(1)
        flags = re.search(r"flags\s*:\s*(.*)", cpu).group(1).split()
        info["isa"] = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16")
                       if f in flags]
        with open("/proc/meminfo") as f:
            info["mem_gb"] = round(int(f.readline().split()[1]) / 2**20, 1)
    except (OSError, AttributeError):
        pass
    try:
        info["diffusiond_commit"] = subprocess.run(
            ["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        info["diffusiond_dirty"] = bool(subprocess.run(
            ["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True).stdout.strip())
        info["gcc"] = subprocess.run(["gcc", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
        # the binaries may be older or newer than HEAD: say when they were built
        info["diffusiond_built"] = datetime.datetime.fromtimestamp(
            os.path.getmtime(os.path.join(REPO, "build", "diffusiond"))).isoformat(timespec="seconds")
    except (OSError, IndexError):
        pass
    return info


def measure_peak(threads, tries=3, level=None):
    """Builds and runs bench/peak.c; GFLOP/s ceilings (best of `tries` runs,
    as any other load only lowers them), or {} if that fails. level "avx2":
    the ceiling of 256-bit FMAs (what that level's kernels can reach)."""
    arch = "-march=x86-64-v3" if level == "avx2" else "-march=native"
    exe = os.path.join(REPO, "build", "peak-avx2" if level == "avx2" else "peak")
    src = os.path.join(REPO, "bench", "peak.c")
    if not os.path.exists(exe) or os.path.getmtime(exe) < os.path.getmtime(src):
        os.makedirs(os.path.dirname(exe), exist_ok=True)
        c = run_child(["gcc", "-O3", arch, "-fopenmp", src, "-o", exe])
        if c.rc:
            log(f"peak.c: build failed: {c.error()}")
            return {}
    best = {}
    for _ in range(tries):
        c = run_child([exe, "0.5"], env=dict(os.environ, OMP_NUM_THREADS=str(threads)))
        m = re.search(r"^peak (.*)$", c.out, re.M)
        if c.rc or not m:
            log(f"peak: failed: {c.error()}")
            return {}
        for k, v in (kv.split("=") for kv in m.group(1).split()):
            best[k] = max(best.get(k, 0.0), float(v))
    log("FMA ceiling (bench/peak.c, best of %d): fp32 %.0f GFLOP/s (1 thread %.0f), bf16 %.0f (1 thread %.0f)"
        % (tries, best["fp32"], best["fp32_1t"], best["bf16"], best["bf16_1t"]))
    return best


# ---------------------------------------------------------------- the three stacks

# --cpu-level: every stack limited to the same instruction set, to
# reproduce a smaller CPU on this one. diffusiond: its own variable (which
# caps its oneDNN too); PyTorch: ATen's kernels and its oneDNN.
LEVEL_ENV = {
    "avx2": ({"DIFFUSIOND_CPU": "avx2"}, {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}),
    "avx512": ({"DIFFUSIOND_CPU": "avx512"},
               {"ATEN_CPU_CAPABILITY": "avx512", "ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}),
    "avx512bf16": ({"DIFFUSIOND_CPU": "avx512bf16"}, {}),
}


def level_env(a, which):
    return dict(LEVEL_ENV[a.cpu_level][which]) if a.cpu_level else {}


def run_diffusiond(model, size, prec, a):
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), **level_env(a, 0))
    pflag = [] if prec == "fp32" else ["--precision", prec]
    r = {"stack": "diffusiond"}
    c = run_child([os.path.join(REPO, "build", "sdbench"), "time", "--model", model, "--size", str(size),
                   "--repeat", str(a.repeat)] + pflag, env=env, timeout=a.timeout)
    if c.rc:
        return dict(r, error="sdbench: " + c.error())
    r.update(text_s=grab(r"^text encoder x2\s+([\d.]+) s", c.out),
             unet_step_s=grab(r"^unet step \(B=2\)\s+([\d.]+) s", c.out),
             vae_s=grab(r"^vae decode\s+([\d.]+) s", c.out),
             load_s=grab(r"^load\s+([\d.]+) s", c.out), phases_rss=c.rss)
    imgs, walls, rss = [], [], 0
    guidance, steps, sched = settings(model, a)
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(a.images):
            c = run_child([os.path.join(REPO, "build", "diffusiond"), "generate", "--model", model,
                           "--prompt", PROMPT, "--width", str(size), "--height", str(size),
                           "--steps", str(steps), "--guidance", str(guidance), "--seed", str(SEED + i),
                           "--threads", str(a.threads), "--output", os.path.join(tmp, "out.png")] +
                          (["--scheduler", sched] if sched else []) + pflag, env=env, timeout=a.timeout)
            if c.rc:
                return dict(r, error="generate: " + c.error())
            sec = grab(r", ([\d.]+) s$", c.err)  # its summary line: "...seed S, 12.34 s"
            if sec is None:  # summary format changed: fall back to the process's wall time
                sec, r["image_is_wall"] = c.wall, True
            imgs.append(sec), walls.append(c.wall)
            rss = max(rss, c.rss)
            log(f"    diffusiond image {i}: {imgs[-1]} s (wall {c.wall:.1f} s, {c.rss / 1e9:.2f} GB)")
    return dict(r, image_s=med(imgs), image_all=imgs, image_wall_s=med(walls), rss=rss)


def run_diffusers(model, size, prec, a):
    guidance, steps, _ = settings(model, a)
    c = run_child([sys.executable, os.path.join(REPO, "bench", "diffusers_bench.py"), "--model", model,
                   "--size", str(size), "--steps", str(steps), "--guidance", str(guidance), "--repeat", str(a.repeat),
                   "--images", str(a.images), "--precision", prec, "--threads", str(a.threads),
                   "--seed", str(SEED)], env=dict(os.environ, **level_env(a, 1)), timeout=a.timeout)
    if c.rc:
        return {"stack": "diffusers", "error": c.error()}
    d = json.loads(c.out.strip().splitlines()[-1])
    for ln in c.err.splitlines():
        if ln.startswith("  image"):
            log("    diffusers" + ln[1:])
    return {"stack": "diffusers", "text_s": d["text_s"]["min"], "unet_step_s": d["unet_step_s"]["min"],
            "vae_s": d["vae_s"]["min"], "image_s": d["image_s"]["median"], "image_all": d["image_s"]["all"],
            "phases_median": {k: d[k]["median"] for k in ("text_s", "unet_step_s", "vae_s")},
            "load_s": d["load_s"], "image_wall_s": None, "rss": c.rss, "versions": d["versions"]}


def sdcpp_parse(text, steps):
    """Phase seconds from an sd.cpp log. Weights that it loads lazily inside a
    phase ("loading tensors completed, taking X s") are subtracted from that
    phase and from the image, so all stacks compare compute without loading
    (compare.py passes --eager-load, which should make these zero)."""
    phase, loads = None, {"text": 0.0, "unet": 0.0, "vae": 0.0}
    for ln in text.splitlines():
        if re.search(r"generate_image \d+x\d+", ln):
            phase = "text"
        elif "get_learned_condition completed" in ln:
            phase = "unet"
        elif "sampling completed" in ln:
            phase = "vae"
        elif "decode_first_stage completed" in ln:
            phase = None
        m = re.search(r"loading tensors completed, taking ([\d.]+)s", ln)
        if m and phase:
            loads[phase] += float(m.group(1))
    text_s = grab(r"get_learned_condition completed, taking ([\d.]+)s", text)
    samp = grab(r"sampling completed, taking ([\d.]+)s", text)
    vae = grab(r"decode_first_stage completed, taking ([\d.]+)s", text)
    img = grab(r"generate_image completed in ([\d.]+)s", text)
    sub = lambda x, k: None if x is None else x - loads[k]  # noqa: E731
    return {"text_s": sub(text_s, "text"),
            "unet_step_s": None if samp is None else (samp - loads["unet"]) / steps,
            "vae_s": sub(vae, "vae"), "image_s": None if img is None else img - sum(loads.values()),
            "lazy_load_s": sum(loads.values())}


def run_sdcpp(model, size, prec, a):
    r = {"stack": "sd.cpp"}
    if os.path.basename(model.rstrip("/")) in MODEL_SETTINGS:
        return dict(r, error="not run for SDXL models here")
    if prec not in SDCPP_TYPE:
        return dict(r, error=f"no sd.cpp weight type for {prec}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(a.images):
            c = run_child([a.sdcpp, "-m", model, "-p", PROMPT, "-W", str(size), "-H", str(size),
                           "--steps", str(a.steps), "--cfg-scale", str(GUIDANCE), "--seed", str(SEED + i),
                           "--sampling-method", "euler", "--scheduler", "discrete", "-t", str(a.threads),
                           "--type", SDCPP_TYPE[prec], "--prediction", "eps", "--eager-load",
                           "-o", os.path.join(tmp, "out.png")] + a.sdcpp_args, timeout=a.timeout)
            x = sdcpp_parse(re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", c.out + "\n" + c.err), a.steps)
            if c.rc or x["image_s"] is None:
                return dict(r, error=c.error())
            x.update(wall=c.wall, rss=c.rss)
            rows.append(x)
            log(f"    sd.cpp image {i}: {x['image_s']:.2f} s (lazy loads {x['lazy_load_s']:.2f} s, "
                f"wall {c.wall:.1f} s, {c.rss / 1e9:.2f} GB)")
    return dict(r, **{k: med([x[k] for x in rows]) for k in ("text_s", "unet_step_s", "vae_s", "image_s")},
                image_all=[x["image_s"] for x in rows], image_wall_s=med([x["wall"] for x in rows]),
                lazy_load_s=med([x["lazy_load_s"] for x in rows]), rss=max(x["rss"] for x in rows))


# ---------------------------------------------------------------- report

def add_rates(r, fl, peak):
    """Effective GFLOP/s of the UNet step (batch 2) and the VAE; % of the FMA ceiling."""
    if r.get("unet_step_s"):
        r["unet_gflops"] = 2 * fl["unet"] / r["unet_step_s"]
        ceiling = peak.get(r["precision"]) or peak.get("fp32")
        if ceiling:
            r["unet_pct_peak"] = 100 * r["unet_gflops"] / ceiling
    if r.get("vae_s"):
        r["vae_gflops"] = fl["vae"] / r["vae_s"]


def image_time(results, model, stack, size, prec):
    """That stack's image seconds at the same precision, else at fp32 (flagged)."""
    for p, flag in ((prec, ""), ("fp32", "*")):
        for r in results:
            if (r["model"], r["stack"], r["size"], r["precision"]) == (model, stack, size, p) and r.get("image_s"):
                return r["image_s"], flag
    return None, ""


def fmt(x, spec):
    return format(x, spec) if isinstance(x, (int, float)) else "-"


def markdown(results, models):
    out = []
    for model in models:
        rows = [r for r in results if r["model"] == model]
        if not rows:
            continue
        out += [f"### {model}", "",
                "| stack | precision | size | text enc (s) | UNet/step (s) | VAE (s) | image (s) "
                "| UNet GFLOP/s | % peak | VAE GFLOP/s | peak RSS (GB) | vs diffusers | vs sd.cpp | other load |",
                "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
        for r in rows:
            if r.get("error"):
                out.append(f"| {r['stack']} | {r['precision']} | {r['size']} | failed: "
                           f"{r['error'].replace('|', '/')} ||||||||||")
                continue
            ratios = []
            for other in ("diffusers", "sd.cpp"):
                t, flag = image_time(results, model, other, r["size"], r["precision"])
                ratios.append(f"{t / r['image_s']:.2f}x{flag}" if t and r.get("image_s") else "-")
            out.append(f"| {r['stack']} | {r['precision']} | {r['size']} | {fmt(r.get('text_s'), '.3f')} "
                       f"| {fmt(r.get('unet_step_s'), '.3f')} | {fmt(r.get('vae_s'), '.2f')} "
                       f"| {fmt(r.get('image_s'), '.2f')} | {fmt(r.get('unet_gflops'), '.0f')} "
                       f"| {fmt(r.get('unet_pct_peak'), '.0f')} | {fmt(r.get('vae_gflops'), '.0f')} "
                       f"| {fmt(r['rss'] / 1e9 if r.get('rss') else None, '.2f')} | {ratios[0]} | {ratios[1]} "
                       f"| {fmt(r.get('other_load'), '.2f')} |")
        out.append("")
    out.append("Ratios: the other stack's seconds per image divided by this row's (> 1: this row is faster); "
               "`*`: against that stack's fp32 row. Text enc: prompt + empty negative prompt. UNet/step: one "
               "guided step (batch 2). GFLOP/s from the FLOPs counted by bench/flops.py. Other load: average "
               "cores used by other processes (and the hypervisor) while this row ran; above ~0.1 the row is "
               "disturbed and should be rerun.")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    csv = lambda s: [x for x in s.split(",") if x]  # noqa: E731
    ap.add_argument("--models", type=csv, default=["sd15", "sd21base"])
    ap.add_argument("--sizes", type=lambda s: [int(x) for x in csv(s)], default=[256, 512])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--precisions", type=csv, default=["fp32"])
    ap.add_argument("--repeat", type=int, default=3, help="timed rounds of each phase (after a warm-up)")
    ap.add_argument("--images", type=int, default=3, help="whole images per stack (median reported)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--stacks", type=csv, default=["diffusiond", "diffusers", "sd.cpp"])
    ap.add_argument("--skip-diffusers", action="store_true")
    ap.add_argument("--skip-sdcpp", action="store_true")
    ap.add_argument("--sdcpp", default=os.path.expanduser("~/sdcpp/build/bin/sd-cli"),
                    help="stable-diffusion.cpp CLI binary (sd-cli, or sd in older trees)")
    ap.add_argument("--sdcpp-args", type=lambda s: s.split(), default=[],
                    help="extra sd.cpp arguments, e.g. '--diffusion-fa'")
    ap.add_argument("--cache", default=os.path.expanduser("~/.cache/diffusiond"))
    ap.add_argument("--timeout", type=int, default=7200, help="seconds per child process")
    ap.add_argument("--wait-idle", type=int, default=300,
                    help="before each stack, wait up to this many seconds for other processes to go idle")
    ap.add_argument("--out", default=os.path.join(REPO, "docs", "perf-results.json"))
    ap.add_argument("--md", help="also write the markdown tables to this file")
    ap.add_argument("--cpu-level", choices=sorted(LEVEL_ENV),
                    help="limit every stack to this instruction set level (reproduces a smaller CPU)")
    ap.add_argument("--resume", action="store_true",
                    help="keep the rows already in --out (same model, size, precision and stack, not failed) "
                         "and run only the missing ones; --out is rewritten after every row either way")
    a = ap.parse_args()

    stacks = [s for s in a.stacks if not (s == "diffusers" and a.skip_diffusers)
              and not (s == "sd.cpp" and a.skip_sdcpp)]
    if "sd.cpp" in stacks and not os.access(a.sdcpp, os.X_OK):
        alt = os.path.join(os.path.dirname(a.sdcpp), "sd")
        if os.access(alt, os.X_OK):
            a.sdcpp = alt
        else:
            log(f"sd.cpp: no binary at {a.sdcpp}; skipped (build it: bench/sdcpp.md)")
            stacks.remove("sd.cpp")
    for exe in ("sdbench", "diffusiond"):
        if "diffusiond" in stacks and not os.access(os.path.join(REPO, "build", exe), os.X_OK):
            sys.exit(f"build/{exe} missing: run make first")

    for m in a.models:
        if not os.path.exists(os.path.join(a.cache, m, "model_index.json")):
            log(f"{m}: building the random-weight model (tools/make_fullsize.py)")
            subprocess.run([sys.executable, os.path.join(REPO, "tools", "make_fullsize.py"),
                            "--out", a.cache, m], check=True)

    info = machine_info(a.threads)
    if "sd.cpp" in stacks:
        info["sdcpp_binary"] = a.sdcpp
        for d in (os.path.dirname(a.sdcpp), os.path.dirname(os.path.dirname(os.path.dirname(a.sdcpp)))):
            if os.path.exists(os.path.join(d, "BUILD_INFO")):
                with open(os.path.join(d, "BUILD_INFO")) as f:
                    info["sdcpp_build"] = f.read().strip()
                break
    log(f"machine: {info.get('cpu')}, {info['cpus']} CPUs, {info.get('mem_gb')} GB; {a.threads} threads")
    if a.wait_idle:
        wait_idle(a.wait_idle)
    peak = measure_peak(a.threads, level=a.cpu_level)

    fl = {}
    for m in a.models:
        for s in a.sizes:
            fl[(m, s)] = flops.model_flops(os.path.join(a.cache, m), s)
            iss = ISSUE_GFLOP.get(s, {})
            log(f"FLOPs {m} {s}x{s}: UNet {fl[(m, s)]['unet']:.1f} GFLOP/forward/image "
                f"(issue: {iss.get('unet', '-')}), VAE decode {fl[(m, s)]['vae']:.1f} "
                f"(issue: {iss.get('vae', '-')}), text encoder {fl[(m, s)]['text']:.1f} per prompt")

    results = []
    if a.resume and a.out and os.path.exists(a.out):
        with open(a.out) as f:
            results = [r for r in json.load(f).get("results", []) if not r.get("error")]
        log(f"resuming: {len(results)} rows kept from {a.out}")

    def save():
        if not a.out:
            return
        doc = {"machine": info, "peak_gflops": peak, "args": {k: v for k, v in vars(a).items()},
               "flops_gflop": {f"{m}/{s}": v for (m, s), v in fl.items()}, "issue_gflop": ISSUE_GFLOP,
               "results": results}
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out + ".tmp", "w") as f:
            json.dump(doc, f, indent=1)
        os.replace(a.out + ".tmp", a.out)

    def have(m, s, prec, st):
        return any(r["model"] == m and r["size"] == s and r["precision"] == prec and r["stack"] == st
                   for r in results)

    runners = {"diffusiond": run_diffusiond, "diffusers": run_diffusers, "sd.cpp": run_sdcpp}
    for m in a.models:
        model = os.path.join(a.cache, m)
        for s in a.sizes:
            for prec in a.precisions:
                for st in stacks:
                    if have(m, s, prec, st):
                        log(f"{m} {s}x{s} {prec} {st}: kept from {a.out}")
                        continue
                    log(f"{m} {s}x{s} {prec} {st} ...")
                    if a.wait_idle:
                        wait_idle(a.wait_idle)
                    LOAD.update(others=0.0, wall=0.0)
                    t0 = time.time()
                    try:
                        r = runners[st](model, s, prec, a)
                    except Exception as e:  # a broken stack must not end the run
                        r = {"stack": st, "error": f"{type(e).__name__}: {e}"}
                    r.update(model=m, size=s, precision=prec, steps=settings(model, a)[1],
                             commit=info.get("diffusiond_commit"), date=time.strftime("%Y-%m-%dT%H:%M:%S"),
                             other_load=LOAD["others"] / LOAD["wall"] if LOAD["wall"] else None)
                    add_rates(r, fl[(m, s)], peak)
                    results.append(r)
                    save()
                    log(f"  {st}: " + (f"FAILED {r['error']}" if r.get("error") else
                                       f"image {fmt(r.get('image_s'), '.2f')} s, UNet step "
                                       f"{fmt(r.get('unet_step_s'), '.3f')} s, {time.time() - t0:.0f} s spent"))

    results.sort(key=lambda r: (a.models.index(r["model"]) if r["model"] in a.models else 99, r["size"],
                                a.precisions.index(r["precision"]) if r["precision"] in a.precisions else 9,
                                stacks.index(r["stack"]) if r["stack"] in stacks else 9))
    save()
    md = markdown(results, a.models)
    ceil = (f"FMA ceiling ({a.threads} threads, bench/peak.c): fp32 {peak.get('fp32', 0):.0f} GFLOP/s, "
            f"bf16 {peak.get('bf16', 0):.0f} GFLOP/s" if peak else "FMA ceiling: not measured")
    print(f"\n{info.get('cpu')}, {a.threads} threads, {a.steps} steps Euler, guidance {GUIDANCE}\n{ceil}\n")
    print(md)
    if a.out:
        log(f"wrote {a.out}")
    if a.md:
        with open(a.md, "w") as f:
            f.write(f"{info.get('cpu')}, {a.threads} threads, {a.steps} steps Euler, guidance {GUIDANCE}; "
                    f"{ceil}\n\n{md}\n")
        log(f"wrote {a.md}")


if __name__ == "__main__":
    main()
