"""The README's table: backend x precision x stage with GFLOP/s, on synthetic weights.

    python benchmarks/bench_table.py [--image truck.jpg] [--threads 2] [--repeats 5]

`mobilesam bench` prints the same table for the published weights.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from mobilesam import bench, build_sam, tune_allocator  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from _synthetic import synthetic_weights  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shared", default=str(ROOT.parent / "shared"))
    parser.add_argument("--image")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--executorch", action="store_true", help="add the ExecuTorch rows")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tune_allocator()
    sam = build_sam("vit_t")
    synthetic_weights(sam, Path(args.shared))
    path = Path(args.image) if args.image else Path(args.shared) / "images" / "truck.jpg"
    image = np.asarray(Image.open(path).convert("RGB"))
    print(bench.table(bench.run(sam, image, args.repeats, executorch=args.executorch), path.name))


if __name__ == "__main__":
    main()
