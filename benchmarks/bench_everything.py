"""Time and peak memory of "segment everything" (SamAutomaticMaskGenerator) on one image.

    python benchmarks/bench_everything.py [--image truck.jpg] [--threads 2] [--points-per-side 32]
        [--pred-iou-thresh 0.88] [--stability-score-thresh 0.95] [--official DIR]

Synthetic weights (speed does not depend on the values; the parity fixture's recipe
puts predicted IoUs near the default filter, so many masks survive it). Peak memory is
the process's maximum resident set size. Run one implementation per process
(`--official DIR` runs only the official one) so the peaks do not mix.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
from mobilesam import build_sam, tune_allocator  # noqa: E402
from mobilesam.automatic_mask_generator import SamAutomaticMaskGenerator  # noqa: E402

sys.path.insert(0, str(HERE))
from _synthetic import synthetic_weights  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shared", default=str(ROOT.parent / "shared"))
    parser.add_argument("--image", default=None, help="default: shared/images/truck.jpg")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--points-per-side", type=int, default=32)
    parser.add_argument("--points-per-batch", type=int, default=64)
    parser.add_argument("--pred-iou-thresh", type=float, default=0.88)
    parser.add_argument("--stability-score-thresh", type=float, default=0.95)
    parser.add_argument("--official", help="folder containing the official `mobile_sam` package")
    parser.add_argument("--no-tune-allocator", action="store_true", help="keep glibc's default malloc")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    shared = Path(args.shared)
    image_path = Path(args.image) if args.image else shared / "images" / "truck.jpg"
    image = np.asarray(Image.open(image_path).convert("RGB"))
    kwargs = dict(
        points_per_side=args.points_per_side,
        points_per_batch=args.points_per_batch,
        pred_iou_thresh=args.pred_iou_thresh,
        stability_score_thresh=args.stability_score_thresh,
        output_mode="coco_rle" if not args.official else "binary_mask",
    )
    sam = build_sam("vit_t")
    synthetic_weights(sam, shared)
    if args.official:
        sys.path.insert(0, str(HERE))
        from _official import import_official

        official = import_official(args.official)
        ref = official.sam_model_registry["vit_t"]()
        ref.load_state_dict(sam.state_dict())
        generator = official.SamAutomaticMaskGenerator(ref.eval(), **kwargs)
        name = "official"
    else:
        if not args.no_tune_allocator:
            tune_allocator()
        generator = SamAutomaticMaskGenerator(sam, **kwargs)
        name = "mobilesam"
    t0 = time.perf_counter()
    anns = generator.generate(image)
    seconds = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{name}: {image_path.name} {image.shape[1]}x{image.shape[0]}, {args.points_per_side}x"
        f"{args.points_per_side} points, iou>{args.pred_iou_thresh}, stability>={args.stability_score_thresh}, "
        f"{torch.get_num_threads()} threads: {len(anns)} masks in {seconds:.1f} s, peak RSS {peak_mb:.0f} MB"
    )


if __name__ == "__main__":
    main()
