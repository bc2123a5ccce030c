"""The README's table: backend x precision x stage with GFLOP/s, on synthetic weights.

    python benchmarks/bench_table.py [--image truck.jpg] [--threads 2] [--repeats 5]
        [--executorch] [--official DIR_CONTAINING_mobile_sam]

`mobilesam bench` prints the same table for the published weights. --executorch adds
the phone runtime's rows (XNNPACK float32 and int8); --official times the official
PyTorch encoder in the same process, before and after the other rows (this machine's
speed drifts), and prints each encoder's time as a fraction of it (#14's target for
the int8 encoder: at most 0.2x). Speed does not depend on the weights' values; mask
agreement does (docs/executorch.md).
"""

from __future__ import annotations

import argparse
import statistics
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
    parser.add_argument("--official", help="folder containing the official `mobile_sam` package")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tune_allocator()
    sam = build_sam("vit_t")
    synthetic_weights(sam, Path(args.shared))
    path = Path(args.image) if args.image else Path(args.shared) / "images" / "truck.jpg"
    image = np.asarray(Image.open(path).convert("RGB"))
    time_official = _official_encoder(args.official, sam, args.repeats) if args.official else None
    official_ms = time_official() if time_official else []
    rows = bench.run(sam, image, args.repeats, executorch=args.executorch)
    if time_official:
        rows.append(bench.Row("official", "float32", "encoder", official_ms + time_official()))
    print(bench.table(rows, path.name))
    if time_official:
        base = statistics.median(rows[-1].times_ms)
        print(f"\nencoder time / official encoder time ({base:.0f} ms):")
        for r in rows[:-1]:
            if r.stage == "encoder":
                print(f"  {r.backend} {r.precision}: {statistics.median(r.times_ms) / base:.3f}")


def _official_encoder(folder: str, sam, repeats: int):
    """A function timing the official encoder (same weights) `repeats` times, in ms."""
    from _official import import_official

    official = import_official(folder).sam_model_registry["vit_t"]()
    official.load_state_dict(sam.state_dict())
    x = torch.randn(1, 3, 1024, 1024)

    def time_it() -> list[float]:
        with torch.inference_mode():
            return bench.timed(lambda: official.image_encoder(x), repeats)

    return time_it


if __name__ == "__main__":
    main()
