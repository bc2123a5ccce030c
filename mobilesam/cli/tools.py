"""The commands around the model: `mobilesam ui` (the browser app), `mobilesam bench` (one
table of timings) and `mobilesam weights` (the published checkpoints' cache)."""

from __future__ import annotations

import argparse

from .common import MODEL_TYPE_HELP, add_img_size


def add_parsers(sub: argparse._SubParsersAction) -> None:
    ui = sub.add_parser("ui", help="point at objects in a browser: segment a photo or label a folder")
    ui.add_argument("source", nargs="?", help="an image or a folder of images (none: upload in the page)")
    ui.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
    ui.add_argument(
        "--port", type=int, default=8000, help="port to serve on (default 8000; 0: a free one, printed)"
    )
    ui.add_argument("--out", help="annotations folder (default: SOURCE/.mobilesam, or ./mobilesam-ui)")
    ui.add_argument(
        "-r",
        "--recursive",
        action="store_true",
        help="the folder's subfolders' images too, each known by its path (cam1/0001.jpg)",
    )
    ui.add_argument(
        "--import",
        dest="import_from",
        metavar="COCO.json|LABELS_DIR|EXPORT.json",
        help="seed the images nobody has labelled yet with this file's masks (everything's, "
        "boxes-to-masks', another tool's), or a folder of YOLO, VOC or LabelMe label files' "
        "regions, or a Label Studio JSON export's, to review and correct; boxes without masks "
        "(a detector's) are segmented",
    )
    ui.add_argument(
        "--classes",
        metavar="FILE",
        help="class names (classes.txt / obj.names, one per line, or a YOLO dataset YAML): the "
        "labels the page offers, numbered in this order by the exports",
    )
    ui.add_argument("--open", action="store_true", help="open the page in the default browser")
    ui.add_argument("--checkpoint", help="checkpoint path (default: the published weights, cached)")
    ui.add_argument("--model-type", help=MODEL_TYPE_HELP)
    add_img_size(ui)
    ui.add_argument("--device", help="cpu, cuda or mps (default: best available)")
    ui.add_argument("--threads", type=int, help="CPU threads (default: PyTorch's)")
    ui.set_defaults(func=_ui)

    ben = sub.add_parser("bench", help="time every stage and backend, print one table")
    ben.add_argument("--image", help="photo to time (default: the sample truck.jpg of a checkout)")
    ben.add_argument("--checkpoint", help="checkpoint path (default: the published weights, cached)")
    add_img_size(ben)
    ben.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    ben.add_argument(
        "--repeats", type=int, default=5, help="timed runs per row; the median is shown (default 5)"
    )
    ben.add_argument("--no-onnx", action="store_true", help="skip the onnxruntime rows")
    ben.add_argument("--no-everything", action="store_true", help="skip segment everything")
    ben.add_argument(
        "--executorch",
        action="store_true",
        help="add the ExecuTorch rows (float32 and int8; exports for minutes)",
    )
    ben.set_defaults(func=_bench)

    wts = sub.add_parser("weights", help="list, download or locate published checkpoints")
    wts.add_argument(
        "action",
        choices=["list", "download", "path"],
        help="list: every published checkpoint and whether it is cached; download: fetch one; "
        "path: where it is cached",
    )
    wts.add_argument("model_type", nargs="?", default="vit_t", help="vit_t (default), vit_b, vit_l, vit_h")
    wts.add_argument("--verify", action="store_true", help="list: check each cached file's SHA-256 too")
    wts.set_defaults(func=_weights)


def _ui(args: argparse.Namespace) -> int:
    from ..ui import serve

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    serve(
        args.source,
        host=args.host,
        port=args.port,
        out=args.out,
        open_browser=args.open,
        recursive=args.recursive,
        import_from=args.import_from,
        classes=args.classes,
        checkpoint=args.checkpoint,
        model_type=args.model_type,
        device=args.device,
        img_size=args.img_size,
    )
    return 0


def _bench(args: argparse.Namespace) -> int:
    import torch

    from .. import bench, weights
    from ..build import build_sam
    from ..image_io import load_image
    from ..runtime import tune_allocator

    torch.set_num_threads(args.threads)
    tune_allocator()
    path = bench.default_image(args.image)
    sam = build_sam("vit_t", args.checkpoint or weights.ensure_weights("vit_t"), args.img_size)
    rows = bench.run(
        sam,
        load_image(path),
        args.repeats,
        onnx=not args.no_onnx,
        everything=not args.no_everything,
        executorch=args.executorch,
    )
    print(bench.table(rows, path.name))
    return 0


def _weights(args: argparse.Namespace) -> int:
    from .. import weights

    if args.action == "list":
        for w in weights.WEIGHTS.values():
            cached = weights.cached_path(w.model_type)
            if not cached.is_file():
                state = "not cached"
            elif cached.stat().st_size != w.size:
                state = f"DAMAGED ({cached.stat().st_size:,} bytes of {w.size:,}; download again)"
            elif args.verify:
                problem = weights.verify(cached, w)
                state = "verified" if problem is None else f"DAMAGED ({problem}; download again)"
            else:
                state = "cached"
            print(f"{w.model_type:6} {w.filename:22} {w.size / 1e6:8.1f} MB  {state:10}  {w.description}")
        print(f"cache: {weights.cache_dir()}")
        return 0
    if args.action == "path":
        print(weights.cached_path(args.model_type))
        return 0
    print(weights.ensure_weights(args.model_type))
    return 0
