"""Time masks to polygons (`mask_to_polygons`, what `convert --to coco-polygon / yolo /
labelme` and the polygon exports run): tracing, simplification one loop at a time against
all loops at once, and the whole call at tolerance 0 and 1.

    python benchmarks/bench_polygons.py [--size 1800x1200] [--repeats 3] [--coco FILE --count N]

Masks: a smooth blob (one outline, as most objects are), and blobs with thousands of
specks and holes (what segment everything gives on textures, and with synthetic weights);
or the first N masks of a COCO file with RLE masks (`--coco`). Prints milliseconds
(median of the repeats) per mask.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mobilesam.bench import timed
from mobilesam.utils import rle
from mobilesam.utils.polygons import _loops, mask_to_polygons, simplify_loop, simplify_loops


def blob(width: int, height: int, cell: int, noise: float, seed: int) -> np.ndarray:
    """A random field smoothed over `cell` pixels (bilinear upsampling), thresholded; `noise`:
    the fraction of pixels flipped (specks and pinholes)."""
    rng = np.random.default_rng(seed)
    low = rng.random((max(2, height // cell), max(2, width // cell))).astype(np.float32)
    field = np.asarray(Image.fromarray(low).resize((width, height), Image.BILINEAR))
    return (field > 0.5) ^ (rng.random((height, width)) < noise)


def coco_masks(path: Path, count: int) -> list[tuple[str, np.ndarray]]:
    coco = json.loads(path.read_text())
    anns = [a for a in coco["annotations"] if isinstance(a.get("segmentation"), dict)][:count]
    return [(f"{path.name} #{a['id']}", rle.decode(a["segmentation"])) for a in anns]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", default="1800x1200", help="WxH of the generated masks")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--coco", type=Path, help="time the RLE masks of this COCO file instead")
    parser.add_argument("--count", type=int, default=8, help="masks taken from --coco")
    args = parser.parse_args()
    if args.coco:
        masks = coco_masks(args.coco, args.count)
    else:
        width, height = (int(v) for v in args.size.split("x"))
        masks = [
            ("smooth blob", blob(width, height, max(width, height) // 3, 0.0, 0)),
            ("blobs, specks", blob(width, height, 24, 0.002, 1)),
            ("fine blobs, specks", blob(width, height, 6, 0.01, 2)),
        ]
    print(f"# {platform.processor() or platform.machine()}, numpy {np.__version__}")
    print(
        "| mask | loops | corners | trace | simplify 1 px, one by one | all at once | polygons, tol 0 | tol 1 |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, mask in masks:
        loops = _loops(mask)
        rows = [
            lambda m=mask: _loops(m),
            lambda ls=loops: [simplify_loop(loop, 1.0) for loop in ls],
            lambda ls=loops: simplify_loops(ls, 1.0),
            lambda m=mask: mask_to_polygons(m, 0.0),
            lambda m=mask: mask_to_polygons(m, 1.0),
        ]
        ms = [statistics.median(timed(fn, args.repeats)) for fn in rows]
        cells = " | ".join(f"{v:.1f}" for v in ms)
        print(f"| {name} | {len(loops)} | {sum(map(len, loops))} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
