"""`mobilesam segment` (box and point prompts) and `mobilesam everything` (no prompt: an
image, or every image of a folder)."""

from __future__ import annotations

import argparse
import json
import math
from typing import TYPE_CHECKING

import numpy as np

from ..errors import OutputError, PromptError
from ..prompts import as_number_array
from .common import (
    add_backend_args,
    add_model_args,
    add_ray_args,
    backend,
    ray_model,
    ray_options,
    report,
    uses_ray,
)

if TYPE_CHECKING:  # the CLI imports the model code only when a command needs it
    from ..api import SegmentationResult


def add_parsers(sub: argparse._SubParsersAction) -> None:
    from ..options import DECODER_PRECISIONS, EVERYTHING

    seg = sub.add_parser("segment", help="segment an image from box and/or point prompts", allow_abbrev=False)
    seg.add_argument("image", help="image path or http(s) URL")
    seg.add_argument("--box", action="append", help="x0,y0,x1,y1 (repeat for more) or a JSON list of boxes")
    seg.add_argument(
        "--point",
        action="append",
        help="x,y[,label] (repeat for more) or a JSON list of [x, y, label]: label 1 foreground (default), 0 background",
    )
    seg.add_argument("--mask-id", help="1-3: which of SAM's three candidate masks (mask-token order)")
    seg.add_argument("--input-size-percent", default=100, help="1-100: shrink before encoding (default 100)")
    add_model_args(seg)
    seg.add_argument("-o", "--output", help="overlay PNG to write")
    add_backend_args(seg)
    seg.add_argument("--masks-dir", help="folder for one PNG per mask")
    seg.add_argument(
        "--cutouts-dir", help="folder for one RGBA PNG per object: its pixels, cropped, on transparency"
    )
    seg.add_argument("--label-map", help="label map PNG: 0 background, i for mask i")
    seg.add_argument("--json", help="COCO-style JSON with RLE masks")
    seg.add_argument("--svg", help="SVG file: the masks as vector paths (outlines within 1 px)")
    seg.add_argument(
        "--logits", help=".npy file for the masks' low-res logits (Nx256x256), a later --mask-input"
    )
    seg.add_argument(
        "--mask-input",
        help=".npy low-res logits (256x256, or Nx256x256: one per box) as a mask prompt, "
        "as --logits wrote for this image: refines that result with the prompts given",
    )
    seg.add_argument(
        "--cutout",
        help="PNG (or .webp, .tif): the masks' pixels on a transparent background, cropped to them",
    )
    seg.add_argument(
        "--dilate",
        type=float,
        default=0.0,
        help="grow the masks of --masks-dir, --cutout and --cutouts-dir by this many pixels (inpainting's margin; default 0)",
    )
    seg.add_argument(
        "--feather",
        type=float,
        default=0.0,
        help="--cutout with a soft edge: its alpha blurred by a Gaussian of this many pixels (default 0)",
    )
    seg.add_argument(
        "--soft",
        action="store_true",
        help="--cutout, --cutouts-dir and --masks-dir with the model's own soft edge (its logits' sigmoid on the outline)",
    )
    seg.set_defaults(func=_segment)

    eve = sub.add_parser(
        "everything", help="segment everything in an image, or in every image of a folder", allow_abbrev=False
    )
    eve.add_argument(
        "input", metavar="SOURCE", help="image path or URL, a folder of images, or a .txt list of image paths"
    )
    for option in EVERYTHING:
        default = round(option.default, 4) if option.kind is float else option.default
        # segment-anything's scripts/amg.py spells four of them as the generator does
        upstream = "--" + option.generator.replace("_", "-")
        flags = [option.flag] + ([upstream] if upstream != option.flag else [])
        eve.add_argument(
            *flags, dest=option.name, type=option.kind, help=f"{option.help} (default {default})"
        )
    eve.add_argument("--input-size-percent", type=float, help="1-100: shrink before encoding (default 100)")
    eve.add_argument(
        "--decoder-precision",
        choices=DECODER_PRECISIONS,
        default="float32",
        help="bf16: an approximate bfloat16 mask decoder, faster on CPUs with AVX512-BF16 (PyTorch backend)",
    )
    add_model_args(eve)
    add_backend_args(eve)
    eve.add_argument("-o", "--output", help="overlay PNG for an image; the output folder for a folder")
    eve.add_argument(
        "--masks-dir", help="folder for one PNG per mask (a folder of images: DIR/<image>/ for each)"
    )
    eve.add_argument(
        "--cutouts-dir",
        help="folder for one RGBA PNG per object: its pixels, cropped, on transparency "
        "(a folder of images: DIR/<image>/ for each)",
    )
    eve.add_argument("--label-map", help="(one image) label map PNG: 0 background, i for mask i")
    eve.add_argument("--json", help="(one image) COCO-style JSON with RLE masks")
    eve.add_argument("--svg", help="(one image) SVG file: the masks as vector paths (outlines within 1 px)")
    eve.add_argument(
        "--dilate",
        type=float,
        default=0.0,
        help="grow the masks of --masks-dir and --cutouts-dir by this many pixels",
    )
    eve.add_argument(
        "--soft",
        action="store_true",
        help="--cutouts-dir and --masks-dir with the model's own soft edge (keeps each mask's logits)",
    )
    eve.add_argument("--overlays", action="store_true", help="(folder) also write an overlay per image")
    eve.add_argument(
        "-r",
        "--recursive",
        action="store_true",
        help="(folder) the subfolders' images too, each known by its path (cam1/0001.jpg)",
    )
    add_ray_args(eve, batch_size=True)
    eve.add_argument(
        "--overwrite",
        action="store_true",
        help="(folder) OUT holds results made with other options: redo every image with these",
    )
    eve.set_defaults(func=_everything)


def _boxes_arg(values: list[str] | None) -> np.ndarray | None:
    """--box x0,y0,x1,y1 (repeatable) or --box '[[...], [...]]' -> Nx4 (checked later)."""
    if not values:
        return None
    arrays = [np.atleast_2d(as_number_array(v, "input_box (--box)")) for v in values]
    arrays = [a.reshape(0, 4) if a.shape == (1, 0) else a for a in arrays]  # --box '[]': no box
    if any(a.ndim != 2 or a.shape[1] != 4 for a in arrays):
        raise PromptError(f"input_box (--box) {values}: each box must be x0,y0,x1,y1")
    return np.concatenate(arrays)


def _points_arg(values: list[str] | None) -> tuple[list | None, list | None]:
    """--point x,y[,label] (repeatable) or --point '[[x, y, label], [x, y], ...]' (JSON, as
    --box takes) -> (points, labels); label defaults to 1; no point at all -> (None, None)."""
    if not values:
        return None, None
    points, labels = [], []
    for v in values:
        rows = [v]
        if v.strip().startswith("["):
            try:
                rows = json.loads(v)
            except ValueError:
                raise PromptError(f"--point {v!r} is not valid JSON") from None
            if isinstance(rows, list) and not any(isinstance(r, list) for r in rows) and rows:
                rows = [rows]  # one point: [x, y] or [x, y, label]
            if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
                raise PromptError(f"--point {v!r}: expected [x, y, label] or a list of them")
        for row in rows:
            point = as_number_array(row, f"--point {v!r}")
            if point.ndim != 1 or len(point) not in (2, 3):
                raise PromptError(f"--point {v!r}: expected x,y or x,y,label for each point")
            points.append(point[:2].tolist())
            labels.append(float(point[2]) if len(point) == 3 else 1)
    return (points, labels) if points else (None, None)  # --point '[]': no point, as --box '[]'


def _segment(args: argparse.Namespace) -> int:
    from ..result import load_logits

    points, labels = _points_arg(args.point)
    boxes = _boxes_arg(args.box)
    if points is None and boxes is None:
        raise PromptError("no prompt given: pass --box and/or --point (or run `mobilesam everything IMAGE`)")
    _check_outputs(args, (args.cutout, args.logits))
    _check_segment_outputs(args)
    mask_input = None if args.mask_input is None else load_logits(args.mask_input)
    result = backend(args).segment(
        args.image,
        input_box=boxes,
        input_point=points,
        input_point_label=labels,
        mask_id=args.mask_id,
        input_size_percent=args.input_size_percent,
        mask_input=mask_input,
    )
    for i, (score, box) in enumerate(zip(result.scores, result.boxes)):
        print(f"mask {i}: score {score:.3f} area {int(result.areas[i])} box {box.tolist()}")
    _save_outputs(result, args, soft=args.soft)
    if args.logits:
        print(f"logits: {result.save_logits(args.logits)}")
    if args.cutout:  # last: empty masks are an error (nothing to cut out)
        cutout = result.save_cutout(args.cutout, dilate=args.dilate, feather=args.feather, soft=args.soft)
        print(f"cutout: {cutout}")
    return 0


def _check_outputs(args: argparse.Namespace, files: tuple = ()) -> None:
    """Fail before any compute if an output path (the shared ones, and `files`) cannot
    be written."""
    from ..result import label_map_format
    from ..utils.files import check_output_dir, check_output_file

    for path in (args.output, args.label_map, args.json, args.svg, *files):
        if path:
            check_output_file(path)
    if args.label_map:
        label_map_format(args.label_map)
    if not 0 <= args.dilate < math.inf:
        raise OutputError(f"--dilate must be a number of pixels >= 0, got {args.dilate}")
    for folder in (args.masks_dir, args.cutouts_dir):
        if folder:
            check_output_dir(folder)


def _check_segment_outputs(args: argparse.Namespace) -> None:
    """segment's own output options: --cutout's format, --feather, --soft."""
    from ..result import cutout_format

    if args.cutout:
        cutout_format(args.cutout)
    if not 0 <= args.feather <= 256:
        raise OutputError(f"--feather must be a number of pixels in [0, 256], got {args.feather}")
    if args.feather and not args.cutout:
        raise OutputError("--feather blurs the edge of --cutout: give --cutout")
    _check_soft(args, ("--cutout", args.cutout))
    _check_dilate(args, ("--cutout", args.cutout))


def _check_dilate(args: argparse.Namespace, *more: tuple[str, object]) -> None:
    """--dilate needs masks it grows (--masks-dir, --cutouts-dir, and `more`): not ignored."""
    outputs = [("--masks-dir", args.masks_dir), ("--cutouts-dir", args.cutouts_dir), *more]
    if args.dilate and not any(value for _, value in outputs):
        raise OutputError(f"--dilate grows the masks of {', '.join(n for n, _ in outputs)}: give one of them")


def _check_soft(args: argparse.Namespace, *more: tuple[str, object]) -> None:
    """--soft needs an output it shapes (--masks-dir, --cutouts-dir, and `more`) and no --dilate."""
    if not args.soft:
        return
    outputs = [("--cutouts-dir", args.cutouts_dir), ("--masks-dir", args.masks_dir), *more]
    if not any(value for _, value in outputs):
        names = ", ".join(name for name, _ in outputs)
        raise OutputError(f"--soft shapes the edges of {names}: give one of them")
    if args.dilate:
        raise OutputError("--soft follows the model's outline and --dilate grows past it: use one of them")


def _save_outputs(result: SegmentationResult, args: argparse.Namespace, soft: bool = False) -> None:
    """Write the files asked for with -o, --masks-dir and --cutouts-dir (`soft`: the
    model's soft edges), --label-map, --json and --svg."""
    if args.output:
        print(f"overlay: {result.save_overlay(args.output)}")
    if args.masks_dir:
        n = len(result.save_masks(args.masks_dir, dilate=args.dilate, soft=soft))
        print(f"masks: {n} PNG files in {args.masks_dir}")
    if args.cutouts_dir:
        n = len(result.save_cutouts(args.cutouts_dir, dilate=args.dilate, soft=soft))
        print(f"cutouts: {n} PNG files in {args.cutouts_dir} (one per non-empty mask)")
    if args.label_map:
        print(f"label map: {result.save_label_map(args.label_map)}")
    if args.json:
        print(f"json: {result.save_json(args.json)}")
    if args.svg:
        print(f"svg: {result.save_svg(args.svg)}")


def _everything(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..batch import FolderJob, ImageFiles
    from ..options import EVERYTHING

    options = {o.name: getattr(args, o.name) for o in EVERYTHING if getattr(args, o.name) is not None}
    if args.input_size_percent is not None:
        options["input_size_percent"] = args.input_size_percent
    if args.decoder_precision != "float32":
        options["decoder_precision"] = args.decoder_precision
    source, on_ray = Path(args.input), uses_ray(args)
    if source.is_dir() or on_ray or source.suffix == ".txt":
        if not args.output:
            raise PromptError("-o/--output: the output folder is required for a folder of images")
        single = [
            f for f, v in (("--json", args.json), ("--label-map", args.label_map), ("--svg", args.svg)) if v
        ]
        if single:
            raise PromptError(
                f"{', '.join(single)}: one-image outputs; a folder writes OUT/annotations.json "
                "(and --overlays, --masks-dir, --cutouts-dir: a folder of PNGs per image)"
            )
        _check_soft(args)
        _check_dilate(args)
        files = ImageFiles(args.masks_dir, args.cutouts_dir, args.dilate, args.soft)
        job = FolderJob(
            args.input,
            args.output,
            options,
            overlays=args.overlays,
            overwrite=args.overwrite,
            recursive=args.recursive,
            files=files,
        )
        if on_ray:
            from ..ray_engine import segment_everything_on_ray

            summary = segment_everything_on_ray(job, ray_model(args), ray_options(args))
        else:
            summary = job.run(backend(args))  # the lock, options and output checks come first
        return report(summary)
    if args.overwrite or args.overlays or args.recursive:
        raise PromptError("--overwrite, --overlays and --recursive are for a folder of images")
    _check_outputs(args)
    _check_soft(args)
    _check_dilate(args)
    result = backend(args).segment_everything(args.input, keep_logits=args.soft, **options)
    print(f"{len(result)} masks")
    _save_outputs(result, args, soft=args.soft)
    return 0
