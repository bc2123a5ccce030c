"""`mobilesam` command line: parse arguments, call the library, print or save."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import numpy as np

from .errors import MobileSAMError, PromptError
from .prompts import as_number_array


def _boxes_arg(values: list[str] | None) -> np.ndarray | None:
    """--box x0,y0,x1,y1 (repeatable) or --box '[[...], [...]]' -> Nx4 (checked later)."""
    if not values:
        return None
    arrays = [np.atleast_2d(as_number_array(v, "input_box (--box)")) for v in values]
    if any(a.ndim != 2 or a.shape[1] != 4 for a in arrays):
        raise PromptError(f"input_box (--box) {values}: each box must be x0,y0,x1,y1")
    return np.concatenate(arrays)


def _points_arg(values: list[str] | None) -> tuple[list | None, list | None]:
    """--point x,y[,label] (repeatable) -> (points, labels); label defaults to 1."""
    if not values:
        return None, None
    points, labels = [], []
    for v in values:
        parts = [p.strip() for p in v.split(",")]
        if len(parts) not in (2, 3):
            raise PromptError(f"--point {v!r}: expected x,y or x,y,label")
        try:
            points.append([float(parts[0]), float(parts[1])])
            labels.append(float(parts[2]) if len(parts) == 3 else 1)
        except ValueError:
            raise PromptError(f"--point {v!r}: x, y and label must be numbers") from None
    return points, labels


def _segment(args: argparse.Namespace) -> int:
    from .api import MobileSAM

    points, labels = _points_arg(args.point)
    boxes = _boxes_arg(args.box)
    sam = MobileSAM(args.checkpoint, args.model_type, args.device)
    result = sam.segment(
        args.image,
        input_box=boxes,
        input_point=points,
        input_point_label=labels,
        mask_id=args.mask_id,
        input_size_percent=args.input_size_percent,
    )
    for i, (score, box) in enumerate(zip(result.scores, result.boxes)):
        print(f"mask {i}: score {score:.3f} area {int(result.masks[i].sum())} box {box.tolist()}")
    if args.output:
        print(f"overlay: {result.save_overlay(args.output)}")
    if args.masks_dir:
        print(f"masks: {len(result.save_masks(args.masks_dir))} PNG files in {args.masks_dir}")
    if args.json:
        print(f"json: {result.save_json(args.json)}")
    return 0


def _weights(args: argparse.Namespace) -> int:
    from . import weights

    if args.action == "list":
        for w in weights.WEIGHTS.values():
            cached = weights.cached_path(w.model_type)
            state = "cached" if cached.is_file() else "not cached"
            print(f"{w.model_type:6} {w.filename:22} {w.size / 1e6:8.1f} MB  {state:10}  {w.description}")
        print(f"cache: {weights.cache_dir()}")
        return 0
    if args.action == "path":
        print(weights.cached_path(args.model_type))
        return 0
    print(weights.ensure_weights(args.model_type))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mobilesam", description="MobileSAM: fast Segment Anything.")
    sub = parser.add_subparsers(dest="command", required=True)

    seg = sub.add_parser("segment", help="segment an image from box and/or point prompts")
    seg.add_argument("image", help="image path or http(s) URL")
    seg.add_argument("--box", action="append", help="x0,y0,x1,y1 (repeat for more) or a JSON list of boxes")
    seg.add_argument(
        "--point", action="append", help="x,y[,label]: label 1 foreground (default), 0 background"
    )
    seg.add_argument("--mask-id", help="1-3: which of SAM's three candidate masks (mask-token order)")
    seg.add_argument("--input-size-percent", default=100, help="1-100: shrink before encoding (default 100)")
    seg.add_argument("--checkpoint", help="checkpoint path (default: the published weights, cached)")
    seg.add_argument("--model-type", default="vit_t", help="vit_t (default), vit_b, vit_l, vit_h")
    seg.add_argument("--device", help="cpu, cuda or mps (default: best available)")
    seg.add_argument("-o", "--output", help="overlay PNG to write")
    seg.add_argument("--masks-dir", help="folder for one PNG per mask")
    seg.add_argument("--json", help="COCO-style JSON with RLE masks")
    seg.set_defaults(func=_segment)

    wts = sub.add_parser("weights", help="list, download or locate published checkpoints")
    wts.add_argument("action", choices=["list", "download", "path"])
    wts.add_argument("model_type", nargs="?", default="vit_t", help="vit_t (default), vit_b, vit_l, vit_h")
    wts.set_defaults(func=_weights)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (MobileSAMError, ValueError) as exc:
        print(f"mobilesam: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mobilesam: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
