"""Time the cutout of one object (`SegmentationResult.cutout`): hard, feathered, and with the
model's soft edge (`soft_mask`), on photos of a few sizes.

    python benchmarks/bench_cutout.py [--sizes 1800x1200,6000x4000] [--repeats 5]

The object is a disc a quarter of the image's height across, its logits as steep as
`--slope` logits per low-res cell (speed does not depend on the model: the same work for
any logits). Prints milliseconds (median, min-max) per row.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mobilesam import SegmentationResult
from mobilesam.bench import timed
from mobilesam.transforms import ResizeLongestSide
from mobilesam.utils.matte import upscale_logits


def disc_result(width: int, height: int, slope: float) -> SegmentationResult:
    """A photo-sized result holding one disc-shaped prompt mask and its logits."""
    input_size = ResizeLongestSide.get_preprocess_shape(height, width, 1024)
    cy, cx = input_size[0] / 8, input_size[1] / 8  # the image's centre, in low-res cells
    yy, xx = np.mgrid[:256, :256] + 0.5
    radius = input_size[0] / 4 / 8
    low = np.clip((radius - np.hypot(yy - cy, xx - cx)) * slope, -20, 20).astype(np.float32)
    mask = upscale_logits(low, input_size, (height, width)) > 0
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return SegmentationResult(
        image, mask[None], np.ones(1), np.ones(1, int), low[None], logits_input_size=input_size
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1800x1200,6000x4000", help="WxH of the photos, comma-separated")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--slope", type=float, default=10.0, help="logits per low-res cell at the outline")
    args = parser.parse_args()
    print(f"# {platform.processor() or platform.machine()}, numpy {np.__version__}")
    print("| photo | object px | cutout | ms (median) | min-max |")
    print("| --- | --- | --- | --- | --- |")
    for size in args.sizes.split(","):
        width, height = (int(v) for v in size.split("x"))
        result = disc_result(width, height, args.slope)
        rows = {
            "hard": lambda r=result: r.cutout(0),
            "feather 3 px": lambda r=result: r.cutout(0, feather=3),
            "soft (model's edge)": lambda r=result: r.cutout(0, soft=True),
            "soft_mask alone": lambda r=result: r.soft_mask(0),
        }
        for name, fn in rows.items():
            t = timed(fn, args.repeats)
            print(
                f"| {width}x{height} | {int(result.areas[0])} | {name} | {statistics.median(t):.1f} "
                f"| {min(t):.1f}-{max(t):.1f} |"
            )


if __name__ == "__main__":
    main()
