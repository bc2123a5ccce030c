"""`mobilesam export onnx | executorch | coreml`: the model for deployment."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import PromptError
from .common import MODEL_TYPE_HELP, add_img_size


def add_parsers(sub: argparse._SubParsersAction) -> None:
    exp = sub.add_parser("export", help="export the model for deployment")
    exp.add_argument(
        "format", choices=["onnx", "executorch", "coreml"], help="onnx, executorch (.pte, XNNPACK) or coreml"
    )
    exp.add_argument("--checkpoint", help="checkpoint path (default: the published weights, cached)")
    exp.add_argument("--model-type", help=MODEL_TYPE_HELP)
    add_img_size(exp)
    exp.add_argument("--out", required=True, help="output folder")
    exp.add_argument("--opset", type=int, help="ONNX opset (17 or newer; default 18)")
    exp.add_argument(
        "--quantize",
        choices=["int8"],
        help="also write int8 copies (onnx: dynamic; executorch: the encoder, static)",
    )
    exp.add_argument(
        "--calibration",
        nargs="+",
        metavar="PATH",
        help="executorch int8: images or folders to calibrate on (default: generated images; real photos are better)",
    )
    exp.add_argument(
        "--raw-image-encoder",
        nargs="?",
        const="uint8",
        choices=["uint8", "float32"],
        help="encoder takes an HxWx3 image of any size: uint8 (default) or float32 0-255 (samexporter's clients)",
    )
    exp.add_argument("--return-single-mask", action="store_true", help="decoder returns the best mask only")
    exp.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    from .. import weights
    from ..build import build_sam, resolve_model_type
    from ..utils.files import check_output_dir

    check_output_dir(args.out)  # before downloading or exporting anything
    if args.calibration and (args.format != "executorch" or not args.quantize):
        raise PromptError("--calibration is for `export executorch --quantize int8`")
    # One parser for the three formats: another format's option is refused, not ignored.
    onnx_only = {
        "--opset": args.opset is not None,
        "--raw-image-encoder": args.raw_image_encoder is not None,
        "--return-single-mask": args.return_single_mask,
    }
    unused = [flag for flag, given in onnx_only.items() if given and args.format != "onnx"]
    if args.quantize and args.format == "coreml":  # float16 weights; int8 is onnx's and executorch's
        unused.append("--quantize")
    if unused:
        raise PromptError(f"{', '.join(unused)}: not an option of `export {args.format}`")
    calibration = _calibration_images(args.calibration) if args.calibration else None
    model_type = resolve_model_type(args.model_type, args.checkpoint, args.img_size)
    checkpoint = args.checkpoint or weights.ensure_weights(model_type)
    sam = build_sam(model_type, checkpoint, args.img_size)
    if args.format == "executorch":
        from ..export.executorch import export_executorch

        meta = export_executorch(
            sam, args.out, args.quantize, calibration, checkpoint=checkpoint, model_type=model_type
        )
        for name in meta["files_sha256"]:
            print(f"{name}: {Path(args.out) / name}")
        print(f"checked in ExecuTorch against PyTorch: {len(meta['checks'])} outputs")
        return 0
    if args.format == "coreml":
        from ..export.coreml import export_coreml

        for name, path in export_coreml(sam, args.out, checkpoint=checkpoint, model_type=model_type).items():
            print(f"{name}: {path}")
        return 0
    from ..export.onnx import export_onnx

    report = export_onnx(
        sam,
        args.out,
        opset=18 if args.opset is None else args.opset,
        raw_image_encoder=args.raw_image_encoder or False,
        return_single_mask=args.return_single_mask,
        quantize=args.quantize,
        checkpoint=checkpoint,
        model_type=model_type,
    )
    for name, path in report.files.items():
        print(f"{name}: {path}")
    worst = max(report.checks.values())
    print(f"checked in onnxruntime against PyTorch: {len(report.checks)} outputs, max difference {worst:.2e}")
    return 0


def _calibration_images(paths: list[str]) -> list[Path]:
    """--calibration: image files, or folders whose images are all used."""
    from ..image_io import IMAGE_SUFFIXES, visible_files

    images: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            images += [f for f in visible_files(p) if f.suffix.lower() in IMAGE_SUFFIXES]
        elif p.is_file():
            images.append(p)
        else:
            raise PromptError(f"--calibration {p}: no such file or folder")
    if not images:
        raise PromptError(f"--calibration {' '.join(paths)}: no images found")
    return images
