"""Peak memory (and time) of the high-level API on the cases users hit: many boxes, a huge photo.

    python benchmarks/bench_memory.py [--boxes 100 500 1000] [--megapixels 108] [--points-per-side 8]
        [--threads 2] [--repo DIR]

Each case runs in a fresh process (peak resident set size is per process). `--repo`
runs another checkout of this package instead (a baseline: e.g. `git worktree add
/tmp/old <commit>`), so both are measured in one run on one machine. Synthetic weights
(memory and speed do not depend on the values). Also reports the resident size left
after the call: with `tune_allocator()` on, freed memory must still go back.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

CHILD = r"""
import json, sys, time
sys.path[:0] = [{repo!r}, {bench!r}]
import numpy as np, torch
from PIL import Image
from _synthetic import synthetic_weights
from mobilesam import MobileSAM, build_sam

torch.set_num_threads({threads})
def status_mb(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
def rss_mb():
    return status_mb("VmRSS")
def reset_peak():  # the peak of the call itself, not of loading or an earlier encoder run
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
model = build_sam("vit_t")
synthetic_weights(model, {shared!r})
torch.save(model.state_dict(), "/tmp/_bench_memory.pt")
del model
sam = MobileSAM("/tmp/_bench_memory.pt", device="cpu")
truck = np.asarray(Image.open({shared!r} + "/images/truck.jpg").convert("RGB"))
case, n = {case!r}, {n}
if case == "boxes":
    rng = np.random.default_rng(0)
    x0, y0 = rng.integers(0, 1500, n), rng.integers(0, 900, n)
    boxes = np.stack([x0, y0, x0 + rng.integers(20, 300, n), y0 + rng.integers(20, 300, n)], 1)
    sam.segment(truck, input_box=boxes[:1])  # the embedding, outside the measurement
    reset_peak()
    before = rss_mb()
    t = time.perf_counter()
    result = sam.segment(truck, input_box=boxes)
    seconds = time.perf_counter() - t
    detail = f"{{n}} boxes on truck.jpg"
else:
    side = int(round((n * 1e6 / 6) ** 0.5))
    image = np.asarray(Image.fromarray(truck).resize((3 * side, 2 * side)))
    reset_peak()
    before = rss_mb()
    t = time.perf_counter()
    result = sam.segment_everything(image, points_per_side={pps}, iou_thres=0.0, stability_score_thres=0.0)
    seconds = time.perf_counter() - t
    detail = f"everything {{image.shape[1]}}x{{image.shape[0]}} ({{image.size / 3e6:.0f}} MP), {pps}x{pps} points"
    if len(result):
        t = time.perf_counter()
        result.save_overlay("/tmp/_bench_memory_overlay.png")
        detail += f", overlay {{time.perf_counter() - t:.1f}} s"
masks = len(result)
del result
import gc; gc.collect()
print(json.dumps({{"detail": detail, "masks": masks, "seconds": seconds, "before_mb": before,
    "peak_mb": status_mb("VmHWM"), "after_mb": rss_mb()}}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shared", default=str(ROOT.parent / "shared"))
    parser.add_argument("--repo", default=str(ROOT), help="checkout to measure (default: this one)")
    parser.add_argument("--boxes", type=int, nargs="*", default=[100, 500, 1000])
    parser.add_argument("--megapixels", type=float, nargs="*", default=[108])
    parser.add_argument("--points-per-side", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    cases = [("boxes", n) for n in args.boxes] + [("everything", mp) for mp in args.megapixels]
    print(f"{'case':58} {'masks':>6} {'time s':>8} {'peak GB':>8} {'kept after GB':>13}")
    print(f"(peak: the process's resident peak during the call, model and image included; {args.repo})")
    for case, n in cases:
        code = CHILD.format(
            repo=args.repo, bench=str(HERE), shared=args.shared, case=case, n=n,
            pps=args.points_per_side, threads=args.threads,
        )  # fmt: skip
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if proc.returncode:
            print(f"{case} {n}: FAILED ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        kept = (r["after_mb"] - r["before_mb"]) / 1024
        print(f"{r['detail']:58} {r['masks']:6d} {r['seconds']:8.1f} {r['peak_mb'] / 1024:8.2f} {kept:13.2f}")


if __name__ == "__main__":
    main()
