"""What several commands share: the model and backend options, the backend they pick, Ray's
options and a batch job's report."""

from __future__ import annotations

import argparse
import sys

from ..errors import PromptError

MODEL_TYPE_HELP = "vit_t, vit_b, vit_l, vit_h or tiny_vit_*; default: the one --checkpoint fits, else vit_t"

IMG_SIZE_HELP = "the model's input side, a multiple of 16 (default 1024; a student's distillation size)"


def add_label_source(parser: argparse.ArgumentParser, help_: str) -> None:
    """A dataset's labels, as `convert ... --to coco` reads them: the positional source (a
    COCO file, a folder of label files, a Label Studio export), --images and --classes."""
    parser.add_argument("source", metavar="COCO.json|LABELS_DIR|EXPORT.json", help=help_)
    parser.add_argument(
        "--images", required=True, help="the folder the COCO file_names (or label files' images) are in"
    )
    parser.add_argument("--classes", help="label files: the class names, as `convert --classes`")


def add_img_size(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--img-size", type=int, default=1024, help=IMG_SIZE_HELP)


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", help="checkpoint path (default: the published weights, cached)")
    parser.add_argument("--model-type", help=MODEL_TYPE_HELP)
    add_img_size(parser)
    parser.add_argument("--device", help="cpu, cuda or mps (default: best available)")
    parser.add_argument(
        "--precision",
        choices=["float32", "bf16"],
        default="float32",
        help="bf16: faster encoder, close results",
    )
    parser.add_argument(
        "--threads", type=int, help="CPU threads (default: PyTorch's, one per core); 1 on a loaded machine"
    )
    parser.add_argument(
        "--no-fast-paths",
        action="store_true",
        help="run the plain PyTorch reference path (no oneDNN kernels, no few-token decoder attention)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the encoder and decoder (on CUDA: inside the CUDA graphs; slow to start)",
    )


def add_backend_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend",
        choices=["torch", "onnx", "executorch"],
        default="torch",
        help="torch (default), onnx (onnxruntime) or executorch (XNNPACK, as on a phone)",
    )
    parser.add_argument("--onnx", help="with --backend onnx: the folder `mobilesam export onnx` wrote")
    parser.add_argument(
        "--pte", help="with --backend executorch: the folder `mobilesam export executorch` wrote"
    )
    parser.add_argument(
        "--int8", action="store_true", help="with --backend onnx or executorch: the int8 encoder"
    )


def backend(args: argparse.Namespace):
    """The high-level API (`highlevel.Segmenter`) on the backend --backend names."""
    if args.threads is not None and args.threads < 1:
        raise PromptError(f"--threads must be >= 1, got {args.threads}")
    _refuse_other_backends_options(args)
    if args.backend == "onnx":
        from ..onnx_predictor import OnnxPredictor

        if not args.onnx:
            raise PromptError(
                "--onnx DIR (the folder `mobilesam export onnx` wrote) is needed with --backend onnx"
            )
        return OnnxPredictor(args.onnx, threads=args.threads, int8=args.int8).segmenter
    if args.backend == "executorch":
        from ..executorch_predictor import ExecuTorchPredictor

        if not args.pte:
            raise PromptError(
                "--pte DIR (the folder `mobilesam export executorch` wrote) is needed with --backend executorch"
            )
        return ExecuTorchPredictor(args.pte, threads=args.threads, int8=args.int8).segmenter
    import torch

    from ..api import MobileSAM

    if args.threads:
        torch.set_num_threads(args.threads)
    fast = False if args.no_fast_paths else None
    return MobileSAM(
        args.checkpoint,
        args.model_type,
        args.device,
        args.precision,
        fast_paths=fast,
        compile=args.compile,
        img_size=args.img_size,
    )


def _refuse_other_backends_options(args: argparse.Namespace) -> None:
    """An option the chosen --backend does not use is an error, not silently ignored."""
    options = [  # (option, given, the backends that use it)
        ("--checkpoint", args.checkpoint, ("torch",)),
        ("--model-type", args.model_type, ("torch",)),
        ("--device", args.device, ("torch",)),
        ("--precision bf16", args.precision == "bf16", ("torch",)),
        ("--no-fast-paths", args.no_fast_paths, ("torch",)),
        ("--compile", args.compile, ("torch",)),
        ("--img-size", args.img_size != 1024, ("torch",)),
        ("--onnx", args.onnx, ("onnx",)),
        ("--pte", args.pte, ("executorch",)),
        ("--int8", args.int8, ("onnx", "executorch")),
    ]
    unused = [name for name, given, backends in options if given and args.backend not in backends]
    if unused:
        raise PromptError(f"{', '.join(unused)}: not used by --backend {args.backend}")


def given(args: argparse.Namespace, *names: str) -> list[str]:
    """The options among `names` (argparse dests) that were given, as --flags."""
    return [f"--{name.replace('_', '-')}" for name in names if getattr(args, name) is not None]


def add_ray_args(parser: argparse.ArgumentParser, batch_size: bool) -> None:
    parser.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="ray: a Ray Data actor pool (the ray extra)",
    )
    parser.add_argument(
        "--address", help="with --engine ray: auto or HOST:PORT of a cluster (default: local)"
    )
    parser.add_argument("--num-workers", type=int, help="with --engine ray: models at once (default 1)")
    parser.add_argument("--gpus-per-worker", type=float, help="with --engine ray (default 0: CPU)")
    parser.add_argument("--cpus-per-worker", type=float, help="with --engine ray (default 1)")
    if batch_size:
        parser.add_argument(
            "--batch-size",
            dest="ray_batch_size",
            type=int,
            help="with --engine ray: images per worker call (default 4)",
        )


RAY_OPTIONS = ("address", "num_workers", "gpus_per_worker", "cpus_per_worker", "ray_batch_size")


def uses_ray(args: argparse.Namespace) -> bool:
    """Whether the command runs on Ray (`--engine ray`); the Ray options given without it
    are refused, not ignored."""
    if args.engine == "ray":
        return True
    ray_only = given(args, *(name for name in RAY_OPTIONS if hasattr(args, name)))
    if ray_only:
        ray_only = [f if f != "--ray-batch-size" else "--batch-size" for f in ray_only]
        raise PromptError(f"{', '.join(ray_only)}: options of --engine ray (this run is one process)")
    return False


def ray_options(args: argparse.Namespace):
    from ..ray_engine import RayOptions

    if getattr(args, "backend", "torch") != "torch":
        raise PromptError("--engine ray runs the torch backend")
    values = {
        "address": args.address,
        "num_workers": args.num_workers,
        "gpus_per_worker": args.gpus_per_worker,
        "cpus_per_worker": args.cpus_per_worker,
        "batch_size": getattr(args, "ray_batch_size", None) or getattr(args, "batch_size", None),
    }
    return RayOptions(**{k: v for k, v in values.items() if v is not None})  # else RayOptions' defaults


def ray_model(args: argparse.Namespace) -> dict:
    """The workers' `MobileSAM` keyword arguments; the options of one process refused."""
    _refuse_other_backends_options(args)
    local = given(args, "device", "threads")
    if local:
        raise PromptError(
            f"{', '.join(local)}: with --engine ray, --gpus-per-worker picks each worker's "
            "device and --cpus-per-worker its threads"
        )
    from ..build import resolve_model_type

    return {
        "checkpoint": args.checkpoint,
        "model_type": resolve_model_type(args.model_type, args.checkpoint, args.img_size),  # read once, here
        "precision": args.precision,
        "fast_paths": False if args.no_fast_paths else None,
        "compile": args.compile,
        "img_size": args.img_size,
    }


def report(summary) -> int:
    """A batch job's summary and failures; the exit code: 130 interrupted, 1 if a file failed."""
    print(f"{summary.line()}; annotations: {summary.annotations_path}")
    for name, error in summary.failed.items():
        print(f"failed: {name}: {error}")
    if summary.interrupted:
        print("mobilesam: interrupted; run the same command again to go on", file=sys.stderr)
        return 130
    return 1 if summary.failed else 0
