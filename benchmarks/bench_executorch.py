"""The phone runtimes against PyTorch and onnxruntime, and the official encoder, in one run.

    python benchmarks/bench_executorch.py [--image truck.jpg] [--threads 2] [--repeats 5]
        [--official DIR_CONTAINING_mobile_sam] [--no-onnx]

Prints `mobilesam bench`'s table with the ExecuTorch rows (XNNPACK float32 and int8:
latency, file size, memory, mask agreement with float32 PyTorch on the fixture's truck
prompts), then the official PyTorch encoder timed in the same process (before and
after the rest) and each encoder's time as a fraction of it (the issue's target: int8 at most 0.2x). Synthetic
weights (speed does not depend on the values; agreement does, see docs/executorch.md).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
from mobilesam import bench, build_sam, tune_allocator  # noqa: E402

sys.path.insert(0, str(HERE))
from _synthetic import synthetic_weights  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shared", default=str(ROOT.parent / "shared"))
    parser.add_argument("--image")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--official", help="folder containing the official `mobile_sam` package")
    parser.add_argument("--no-onnx", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tune_allocator()
    sam = build_sam("vit_t")
    synthetic_weights(sam, Path(args.shared))
    path = Path(args.image) if args.image else Path(args.shared) / "images" / "truck.jpg"
    image = np.asarray(Image.open(path).convert("RGB"))
    rows = bench.run(sam, image, args.repeats, onnx=not args.no_onnx, everything=False, executorch=True)
    if args.official:
        from _official import import_official

        official = import_official(args.official).sam_model_registry["vit_t"]()
        official.load_state_dict(sam.state_dict())
        x = torch.randn(1, 3, 1024, 1024)
        with torch.inference_mode():
            rows.append(
                bench.Row(
                    "official",
                    "float32",
                    "encoder",
                    bench.timed(lambda: official.image_encoder(x), args.repeats),
                )
            )
    print(bench.table(rows, path.name))
    if args.official:
        base = statistics.median(rows[-1].times_ms)
        print(f"\nencoder time / official encoder time ({base:.0f} ms):")
        for r in rows:
            if r.stage == "encoder" and r.backend != "official":
                print(f"  {r.backend} {r.precision}: {statistics.median(r.times_ms) / base:.3f}")


if __name__ == "__main__":
    main()
