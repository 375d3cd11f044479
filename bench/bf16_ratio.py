#!/usr/bin/env python3
"""bf16_ratio.py - how much faster --precision bf16 is than fp32, per image,
measured so that the machine's drift cancels.

On a shared VM the speed of the same code drifts by 5-10% over minutes
(another tenant on the host), so a bf16 row measured ten minutes after its
fp32 row can be off by that much. This runs whole images with
`build/diffusiond generate` alternately in fp32 and bf16 (fp32, bf16,
fp32, bf16, ...), takes the ratio of each adjacent pair and reports the
median, per model and size. Same settings as bench/compare.py (Euler, 20
steps, guidance 7.5, one seed per pair).

  python3 bench/bf16_ratio.py --sizes 512 --pairs 3 --out docs/bf16-ratio.json
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import GUIDANCE, PROMPT, REPO, grab, med  # noqa: E402  same settings as the table


def image_seconds(model, size, prec, seed, steps, threads, out):
    cmd = [os.path.join(REPO, "build", "diffusiond"), "generate", "--model", model, "--prompt", PROMPT,
           "--width", str(size), "--height", str(size), "--steps", str(steps), "--guidance", str(GUIDANCE),
           "--seed", str(seed), "--scheduler", "euler", "--threads", str(threads),
           "--precision", prec, "--output", out]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode:
        sys.exit(f"generate failed ({prec}): {p.stderr.strip()}")
    sec = grab(r", ([\d.]+) s$", p.stderr)  # generate's summary line
    if sec is None:
        sys.exit(f"no timing in generate's output: {p.stderr.strip()}")
    return sec


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="sd15,sd21base")
    ap.add_argument("--sizes", default="256,512")
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--cache", default=os.path.expanduser("~/.cache/diffusiond"))
    ap.add_argument("--out", help="write the results as JSON here")
    a = ap.parse_args()
    commit = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out.png")
        for m in a.models.split(","):
            model = os.path.join(a.cache, m)
            if not os.path.exists(os.path.join(model, "model_index.json")):
                sys.exit(f"{model}: missing (bench/compare.py builds it)")
            for size in [int(s) for s in a.sizes.split(",")]:
                fp32, bf16 = [], []
                for i in range(a.pairs):
                    fp32.append(image_seconds(model, size, "fp32", 1000 + i, a.steps, a.threads, out))
                    bf16.append(image_seconds(model, size, "bf16", 1000 + i, a.steps, a.threads, out))
                    print(f"{m} {size}x{size} pair {i}: fp32 {fp32[-1]:.2f} s, bf16 {bf16[-1]:.2f} s, "
                          f"{fp32[-1] / bf16[-1]:.2f}x", flush=True)
                ratios = [f / b for f, b in zip(fp32, bf16)]
                r = {"model": m, "size": size, "fp32_s": fp32, "bf16_s": bf16, "ratios": ratios,
                     "median_ratio": med(ratios), "ratio_of_medians": med(fp32) / med(bf16),
                     "commit": commit, "time": time.strftime("%Y-%m-%d %H:%M:%S")}
                results.append(r)
                print(f"{m} {size}x{size}: bf16 {r['median_ratio']:.2f}x faster than fp32 (median of "
                      f"{a.pairs} pairs; ratio of medians {r['ratio_of_medians']:.2f}x)", flush=True)
                if a.out:
                    with open(a.out, "w") as f:
                        json.dump({"args": vars(a), "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
