"""`mobilesam` command line: parse arguments, call the library, print or save."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import MobileSAMError, OutputError, PromptError
from .prompts import as_number_array

if TYPE_CHECKING:  # the CLI imports the model code only when a command needs it
    from .api import SegmentationResult


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


def _backend(args: argparse.Namespace):
    """The high-level API (`highlevel.Segmenter`) on the backend --backend names."""
    if args.threads is not None and args.threads < 1:
        raise PromptError(f"--threads must be >= 1, got {args.threads}")
    _refuse_other_backends_options(args)
    if args.backend == "onnx":
        from .onnx_predictor import OnnxPredictor

        if not args.onnx:
            raise PromptError(
                "--onnx DIR (the folder `mobilesam export onnx` wrote) is needed with --backend onnx"
            )
        return OnnxPredictor(args.onnx, threads=args.threads, int8=args.int8).segmenter
    if args.backend == "executorch":
        from .executorch_predictor import ExecuTorchPredictor

        if not args.pte:
            raise PromptError(
                "--pte DIR (the folder `mobilesam export executorch` wrote) is needed with --backend executorch"
            )
        return ExecuTorchPredictor(args.pte, threads=args.threads, int8=args.int8).segmenter
    import torch

    from .api import MobileSAM

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


def _segment(args: argparse.Namespace) -> int:
    from .result import load_logits

    points, labels = _points_arg(args.point)
    boxes = _boxes_arg(args.box)
    if points is None and boxes is None:
        raise PromptError("no prompt given: pass --box and/or --point (or run `mobilesam everything IMAGE`)")
    _check_outputs(args, (args.cutout, args.logits))
    _check_segment_outputs(args)
    mask_input = None if args.mask_input is None else load_logits(args.mask_input)
    result = _backend(args).segment(
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
    from .result import label_map_format
    from .utils.files import check_output_dir, check_output_file

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
    from .result import cutout_format

    if args.cutout:
        cutout_format(args.cutout)
    if not 0 <= args.feather <= 256:
        raise OutputError(f"--feather must be a number of pixels in [0, 256], got {args.feather}")
    _check_soft(args, ("--cutout", args.cutout))


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


def _given(args: argparse.Namespace, *names: str) -> list[str]:
    """The options among `names` (argparse dests) that were given, as --flags."""
    return [f"--{name.replace('_', '-')}" for name in names if getattr(args, name) is not None]


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


def _ray_options(args: argparse.Namespace):
    from .ray_engine import RayOptions

    if getattr(args, "backend", "torch") != "torch":
        raise PromptError("--engine ray runs the torch backend")
    batch = getattr(args, "ray_batch_size", None) or getattr(args, "batch_size", None) or 4
    return RayOptions(args.address, args.num_workers, args.gpus_per_worker, args.cpus_per_worker, batch)


def _ray_model(args: argparse.Namespace) -> dict:
    """The workers' `MobileSAM` keyword arguments; the options of one process refused."""
    _refuse_other_backends_options(args)
    local = _given(args, "device", "threads")
    if local:
        raise PromptError(
            f"{', '.join(local)}: with --engine ray, --gpus-per-worker picks each worker's "
            "device and --cpus-per-worker its threads"
        )
    from .build import resolve_model_type

    return {
        "checkpoint": args.checkpoint,
        "model_type": resolve_model_type(args.model_type, args.checkpoint, args.img_size),  # read once, here
        "precision": args.precision,
        "fast_paths": False if args.no_fast_paths else None,
        "compile": args.compile,
        "img_size": args.img_size,
    }


def _add_ray_args(parser: argparse.ArgumentParser, batch_size: bool) -> None:
    parser.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="ray: a Ray Data actor pool (the ray extra)",
    )
    parser.add_argument(
        "--address", help="with --engine ray: auto or HOST:PORT of a cluster (default: local)"
    )
    parser.add_argument(
        "--num-workers", type=int, default=1, help="with --engine ray: models at once (default 1)"
    )
    parser.add_argument(
        "--gpus-per-worker", type=float, default=0.0, help="with --engine ray (default 0: CPU)"
    )
    parser.add_argument("--cpus-per-worker", type=float, default=1.0, help="with --engine ray (default 1)")
    if batch_size:
        parser.add_argument(
            "--batch-size",
            dest="ray_batch_size",
            type=int,
            help="with --engine ray: images per worker call (default 4)",
        )


def _everything(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .batch import FolderJob, ImageFiles
    from .options import EVERYTHING

    options = {o.name: getattr(args, o.name) for o in EVERYTHING if getattr(args, o.name) is not None}
    if args.input_size_percent is not None:
        options["input_size_percent"] = args.input_size_percent
    if args.decoder_precision != "float32":
        options["decoder_precision"] = args.decoder_precision
    source = Path(args.input)
    if source.is_dir() or args.engine == "ray" or source.suffix == ".txt":
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
        if args.dilate and not (args.masks_dir or args.cutouts_dir):
            raise OutputError("--dilate grows the masks of --masks-dir and --cutouts-dir: give one of them")
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
        if args.engine == "ray":
            from .ray_engine import segment_everything_on_ray

            summary = segment_everything_on_ray(job, _ray_model(args), _ray_options(args))
        else:
            summary = job.run(_backend(args))  # the lock, options and output checks come first
        return _report(summary)
    if args.overwrite or args.overlays or args.recursive:
        raise PromptError("--overwrite, --overlays and --recursive are for a folder of images")
    _check_outputs(args)
    _check_soft(args)
    result = _backend(args).segment_everything(args.input, keep_logits=args.soft, **options)
    print(f"{len(result)} masks")
    _save_outputs(result, args, soft=args.soft)
    return 0


def _export(args: argparse.Namespace) -> int:
    from . import weights
    from .build import build_sam, resolve_model_type
    from .utils.files import check_output_dir

    check_output_dir(args.out)  # before downloading or exporting anything
    if args.calibration and (args.format != "executorch" or not args.quantize):
        raise PromptError("--calibration is for `export executorch --quantize int8`")
    calibration = _calibration_images(args.calibration) if args.calibration else None
    model_type = resolve_model_type(args.model_type, args.checkpoint, args.img_size)
    checkpoint = args.checkpoint or weights.ensure_weights(model_type)
    sam = build_sam(model_type, checkpoint, args.img_size)
    if args.format == "executorch":
        from .export.executorch import export_executorch

        meta = export_executorch(
            sam, args.out, args.quantize, calibration, checkpoint=checkpoint, model_type=model_type
        )
        for name in meta["files_sha256"]:
            print(f"{name}: {Path(args.out) / name}")
        print(f"checked in ExecuTorch against PyTorch: {len(meta['checks'])} outputs")
        return 0
    if args.format == "coreml":
        from .export.coreml import export_coreml

        for name, path in export_coreml(sam, args.out, checkpoint=checkpoint, model_type=model_type).items():
            print(f"{name}: {path}")
        return 0
    from .export.onnx import export_onnx

    report = export_onnx(
        sam,
        args.out,
        opset=args.opset,
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
    from .image_io import IMAGE_SUFFIXES, visible_files

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


def _boxes_to_masks(args: argparse.Namespace) -> int:
    from .box_job import BoxJob

    options = {"mask_id": args.mask_id, "input_size_percent": args.input_size_percent}
    job = BoxJob(  # input checked here
        args.source, args.images, args.output, options, overlays=args.overlays, classes=args.classes
    )
    if args.engine == "ray":
        from .ray_engine import boxes_to_masks_on_ray

        return _report(boxes_to_masks_on_ray(job, _ray_model(args), _ray_options(args)))
    return _report(job.run(_backend(args)))


def _report(summary) -> int:
    """A batch job's summary and failures; the exit code: 130 interrupted, 1 if a file failed."""
    print(f"{summary.line()}; annotations: {summary.annotations_path}")
    for name, error in summary.failed.items():
        print(f"failed: {name}: {error}")
    if summary.interrupted:
        print("mobilesam: interrupted; run the same command again to go on", file=sys.stderr)
        return 130
    return 1 if summary.failed else 0


def _convert(args: argparse.Namespace) -> int:
    from .convert import convert

    if args.overwrite and args.to not in ("label-maps", "instance-maps"):
        raise MobileSAMError(
            f"--overwrite replaces label maps (--to label-maps, instance-maps), not --to {args.to}"
        )
    if args.to == "coco":
        if args.tolerance is not None:
            raise MobileSAMError(
                "--tolerance simplifies traced masks; label files' polygons are taken as they are"
            )
        done = convert(
            args.source,
            args.to,
            args.out,
            images=args.images,
            classes=args.classes,
            image_root=args.image_root,
        )
        named = "named by number" if done.source == "yolo" else "named in the files"
        notes = [f"class names from {done.classes}" if done.classes else f"classes {named}"]
        if done.left_out:
            kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(done.left_out.items()))
            what = "left out" if done.source == "label-studio" else "shapes left out, not regions"
            notes.append(f"{sum(done.left_out.values())} {what}: {kinds}")
        kind = {
            "yolo": "YOLO labels",
            "voc": "Pascal VOC labels",
            "labelme": "LabelMe labels",
            "label-studio": "a Label Studio export",
        }
        print(
            f"coco: {done.annotations} objects of {done.images} images in {args.out} "
            f"(from {kind[done.source]}; {'; '.join(notes)})"
        )
        return 0
    if args.to in ("masks", "label-maps", "instance-maps", "label-studio") and args.tolerance is not None:
        raise MobileSAMError(
            f"--tolerance simplifies traced outlines; --to {args.to} writes the masks as they are"
        )
    tolerance = 1.0 if args.tolerance is None else args.tolerance
    done = convert(
        args.source,
        args.to,
        args.out,
        tolerance,
        images=args.images,
        classes=args.classes,
        overwrite=args.overwrite,
        image_root=args.image_root,
        as_annotations=args.as_annotations,
    )
    why = "no pixel to draw" if args.to == "label-studio" else "no polygon"
    notes = [f"{done.empty} empty masks left out: {why}"] if done.empty else []
    if done.crowd:
        kept = {
            "coco-polygon": "kept as RLE",
            "labelme": "drawn as polygons",
            "masks": "written as masks",
            "label-maps": "painted with their class",
            "instance-maps": "painted as instances",
            "label-studio": "drawn as brush masks",
        }.get(args.to, "left out")
        notes.append(f"{done.crowd} crowd regions {kept}")
    note = f" ({'; '.join(notes)})" if notes else ""
    print(
        f"{args.to}: {done.annotations} masks of {done.images} images, {len(done.files)} files in {args.out}{note}"
    )
    return 0


def _ui(args: argparse.Namespace) -> int:
    from .ui import serve

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

    from . import bench, weights
    from .build import build_sam
    from .image_io import load_image
    from .runtime import tune_allocator

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


def _distill_cache(args: argparse.Namespace) -> int:
    from . import weights
    from .api import resolve_device
    from .build import build_sam
    from .distill.cache import EmbeddingCache, check_encoder_options

    if args.verify:
        damaged = EmbeddingCache(args.cache).verify()
        for name in damaged:
            print(f"{args.cache}/{name}: DAMAGED (checksum mismatch); delete it and rerun the cache")
        print(f"{len(EmbeddingCache(args.cache))} embeddings, {len(damaged)} damaged shards")
        return 1 if damaged else 0
    if not args.images:
        raise PromptError("--images is needed (or --verify to check an existing cache)")
    check_encoder_options(args.precision, args.compile, args.flex_attention)  # before the teacher loads
    model_type, _, path = args.teacher.partition(":")
    checkpoint = path or (weights.ensure_weights(model_type) if args.img_size == 1024 else None)
    if checkpoint is None:
        raise PromptError("--teacher TYPE:PATH is needed with --img-size other than 1024")
    cache = EmbeddingCache(args.cache)
    if args.engine == "ray":
        from .ray_engine import cache_on_ray

        local = _given(args, "workers", "resize")
        if local:
            raise PromptError(
                f"{', '.join(local)}: options of the one-process engine; with Ray, images are "
                "decoded and resized by Ray tasks"
            )
        spec = {"model_type": model_type, "checkpoint": checkpoint, "img_size": args.img_size}
        summary = cache_on_ray(
            cache,
            spec,
            model_type,
            args.images,
            _ray_options(args),
            precision=args.precision,
            compile=args.compile,
            flex_attention=args.flex_attention,
        )
    else:
        teacher = build_sam(model_type, checkpoint, img_size=args.img_size).to(resolve_device(args.device))
        summary = cache.build(
            teacher,
            args.images,
            model_type,
            shard_size=args.shard_size,
            progress=print,
            batch_size=args.batch_size,
            workers=args.workers,
            precision=args.precision,
            resize=args.resize,
            compile=args.compile,
            flex_attention=args.flex_attention,
        )
    print(f"cached {summary.done}, skipped {summary.skipped} (already cached), failed {len(summary.failed)}")
    return 1 if summary.failed else 0


def _distill_train(args: argparse.Namespace) -> int:
    from .distill.train import TrainConfig, train

    options = {k: getattr(args, k) for k in TRAIN_OPTIONS if getattr(args, k) is not None}
    meta = train(
        TrainConfig(cache=args.cache, images=args.images, out=args.out, compile=args.compile, **options),
        resume=args.resume,
        progress=print,
    )
    if meta is not None and int(os.environ.get("RANK", "0")) == 0:
        print(f"trained {meta['steps']} steps, final loss {meta['final_loss']:.4g}: {args.out}/student.pt")
    return 0


def _distill_finetune(args: argparse.Namespace) -> int:
    from .distill.finetune import FinetuneConfig, finetune

    options = {k: getattr(args, k) for k in FINETUNE_OPTIONS if getattr(args, k) is not None}
    cfg = FinetuneConfig(
        student=args.student,
        images=args.images,
        out=args.out,
        prompts=args.prompts,
        compile=args.compile,
        **options,
    )
    meta = finetune(cfg, resume=args.resume, progress=print)
    if meta is not None and int(os.environ.get("RANK", "0")) == 0:
        print(f"fine-tuned {meta['steps']} steps, final loss {meta['final_loss']:.4g}: {args.out}/student.pt")
    return 0


def _distill_evaluate(args: argparse.Namespace) -> int:
    import json as json_module

    from . import weights
    from .build import build_sam, resolve_model_type
    from .distill.evaluate import evaluate, table
    from .utils.files import atomic_write_text

    if args.clicks < 0:
        raise PromptError(f"--clicks must be 0 or more, got {args.clicks}")
    teacher_type, _, teacher_path = args.teacher.partition(":")
    teacher_ckpt = teacher_path or weights.ensure_weights(teacher_type)
    teacher = build_sam(teacher_type, teacher_ckpt, img_size=args.img_size)
    student_type = resolve_model_type(args.student_type, args.student, args.img_size)
    student = build_sam(student_type, args.student, img_size=args.img_size)
    result = evaluate(student, teacher, args.images, grid=args.grid, seed=args.seed, clicks=args.clicks)
    print(table(result))
    if args.json:
        print(f"json: {atomic_write_text(args.json, json_module.dumps(result, indent=2))}")
    return 0


# Optimisation options (LoopConfig) shared by `distill train` and `distill finetune-decoder`.
LOOP_OPTIONS = {
    "steps": int,
    "batch_size": int,
    "accum_steps": int,
    "lr": float,
    "weight_decay": float,
    "warmup_steps": int,
    "grad_clip": float,
    "seed": int,
    "save_every": int,
    "log_every": int,
    "device": str,
    "precision": str,
    "workers": int,
    "epochs": float,
    "lr_batch": int,
}
TRAIN_OPTIONS = {
    "student": str,
    "init_checkpoint": str,
    "teacher_checkpoint": str,
    "img_size": int,
    "resize": str,
    **LOOP_OPTIONS,
}
FINETUNE_OPTIONS = {
    "cache": str,
    "teacher_checkpoint": str,
    "student_type": str,
    "img_size": int,
    "masks_per_image": int,
    "click_rounds": int,
    **LOOP_OPTIONS,
}


def _add_options(parser: argparse.ArgumentParser, config: type, options: dict) -> None:
    """Fields of the dataclass `config` as --options, with its meanings and defaults, plus
    --compile and --resume."""
    import dataclasses

    fields = {f.name: f for f in dataclasses.fields(config)}
    for name, kind in options.items():
        meaning = fields[name].metadata["help"].replace("%", "%%")
        default = fields[name].default
        help_ = meaning if default is None else f"{meaning} (default: {default})"
        parser.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, help=help_)
    parser.add_argument("--compile", action="store_true", help="torch.compile the task")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.ckpt")


def _add_backend_args(parser: argparse.ArgumentParser) -> None:
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


MODEL_TYPE_HELP = "vit_t, vit_b, vit_l, vit_h or tiny_vit_*; default: the one --checkpoint fits, else vit_t"


IMG_SIZE_HELP = "the model's input side, a multiple of 16 (default 1024; a student's distillation size)"


def _add_img_size(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--img-size", type=int, default=1024, help=IMG_SIZE_HELP)


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", help="checkpoint path (default: the published weights, cached)")
    parser.add_argument("--model-type", help=MODEL_TYPE_HELP)
    _add_img_size(parser)
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


def _weights(args: argparse.Namespace) -> int:
    from . import weights

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


def build_parser() -> argparse.ArgumentParser:
    from .options import DECODER_PRECISIONS, EVERYTHING

    # No abbreviations: `--box 0.5` must not be taken for `--box-nms-thres 0.5`.
    parser = argparse.ArgumentParser(
        prog="mobilesam", description="MobileSAM: fast Segment Anything.", allow_abbrev=False
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"mobilesam {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

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
    _add_model_args(seg)
    seg.add_argument("-o", "--output", help="overlay PNG to write")
    _add_backend_args(seg)
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
        eve.add_argument(
            option.flag, dest=option.name, type=option.kind, help=f"{option.help} (default {default})"
        )
    eve.add_argument("--input-size-percent", type=float, help="1-100: shrink before encoding (default 100)")
    eve.add_argument(
        "--decoder-precision",
        choices=DECODER_PRECISIONS,
        default="float32",
        help="bf16: an approximate bfloat16 mask decoder, faster on CPUs with AVX512-BF16 (PyTorch backend)",
    )
    _add_model_args(eve)
    _add_backend_args(eve)
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
    _add_ray_args(eve, batch_size=True)
    eve.add_argument(
        "--overwrite",
        action="store_true",
        help="(folder) OUT holds results made with other options: redo every image with these",
    )
    eve.set_defaults(func=_everything)

    box = sub.add_parser(
        "boxes-to-masks",
        help="a mask for every box of a COCO file (a detector's boxes, a box-labelled dataset)",
        allow_abbrev=False,
    )
    box.add_argument(
        "source",
        metavar="COCO.json|LABELS_DIR|EXPORT.json",
        help="COCO JSON whose annotations have a bbox, a folder of YOLO, Pascal VOC or LabelMe "
        "label files, or a Label Studio JSON export (read as `convert ... --to coco` reads them)",
    )
    box.add_argument(
        "--images", required=True, help="the folder the COCO file_names (or label files' images) are in"
    )
    box.add_argument("--classes", help="label files: the class names, as `convert --classes`")
    box.add_argument(
        "-o", "--output", required=True, help="output folder: annotations.json, parts/ (a rerun goes on)"
    )
    box.add_argument(
        "--mask-id", help="1-3: which of SAM's three candidate masks (default: single-mask output)"
    )
    box.add_argument("--input-size-percent", default=100, help="1-100: shrink before encoding (default 100)")
    box.add_argument("--overlays", action="store_true", help="also write OUT/overlays/<file_name>.png")
    _add_model_args(box)
    _add_backend_args(box)
    _add_ray_args(box, batch_size=True)
    box.set_defaults(func=_boxes_to_masks)

    con = sub.add_parser(
        "convert",
        help="COCO JSON with RLE masks to COCO polygons, YOLO or LabelMe labels, mask PNGs, label maps or Label Studio tasks; "
        "YOLO, VOC or LabelMe labels or a Label Studio export to COCO",
        allow_abbrev=False,
    )
    con.add_argument(
        "source",
        help="COCO JSON (`everything`'s annotations.json, a --json file, the UI's export), or a "
        "folder of YOLO (.txt), Pascal VOC (.xml) or LabelMe (.json) label files or a Label Studio "
        "JSON export (with --to coco)",
    )
    con.add_argument(
        "--to",
        required=True,
        choices=[
            "coco-polygon",
            "yolo",
            "labelme",
            "masks",
            "label-maps",
            "instance-maps",
            "label-studio",
            "coco",
        ],
        help="coco-polygon: one JSON file; yolo: a folder of labels/FILE.txt per image and classes.txt; "
        "labelme: a folder of FILE.json per image (never overwritten); masks: a folder of FILE/ID.png "
        "per annotation (RLE or polygons, 255 inside; each image's folder replaced whole); label-maps: a "
        "folder of FILE.png per image, pixel = class (0 background, i the i-th category by id; "
        "classes.txt names them; never overwritten); instance-maps: the same with pixel = the image's "
        "k-th annotation (instances.json names them); label-studio: one JSON file of Label Studio tasks "
        "with brush masks, and its labeling config beside it (NAME.label_config.xml); coco: a folder of YOLO, VOC "
        "or LabelMe labels (boxes, polygons, masks) as one COCO JSON file",
    )
    con.add_argument(
        "--out",
        required=True,
        help="the JSON file (coco-polygon, label-studio, coco) or folder (yolo, labelme, masks, label-maps, instance-maps) "
        "to write",
    )
    con.add_argument(
        "--tolerance",
        type=float,
        default=None,
        help="simplify outlines by up to this many pixels; 0: exact, every pixel corner (default 1)",
    )
    con.add_argument(
        "--images",
        help="label files: the folder of their images (labels/a/x.txt, .xml or .json goes with "
        "images/a/x.jpg); --to labelme: where the images are, for each file's imagePath "
        "(default: beside the files); a Label Studio export: where its images are, checked and "
        "their sizes read (optional: the regions carry their image's size)",
    )
    con.add_argument(
        "--classes",
        help="label files: the class names in order, classes.txt (one per line) or a dataset YAML's "
        "names (default, YOLO: classes.txt beside or inside the labels folder, else numbers; VOC, "
        "LabelMe: the names found, sorted)",
    )
    con.add_argument(
        "--overwrite",
        action="store_true",
        help="label-maps, instance-maps: replace the label maps there (one-channel PNGs only; "
        "default: refuse, --out may hold the images)",
    )
    con.add_argument(
        "--image-root",
        help="label-studio: put before each file_name to make the task's image URL (default "
        "/data/local-files/?d=, Label Studio's local files; or http://host/images/); a Label Studio "
        "export --to coco: the start of its image URLs to strip, leaving the file names",
    )
    con.add_argument(
        "--as-annotations",
        action="store_true",
        help="label-studio: write the masks as the tasks' annotations (finished work) instead of "
        "predictions (pre-annotations to review)",
    )
    con.set_defaults(func=_convert)

    exp = sub.add_parser("export", help="export the model for deployment")
    exp.add_argument(
        "format", choices=["onnx", "executorch", "coreml"], help="onnx, executorch (.pte, XNNPACK) or coreml"
    )
    exp.add_argument("--checkpoint", help="checkpoint path (default: the published weights, cached)")
    exp.add_argument("--model-type", help=MODEL_TYPE_HELP)
    _add_img_size(exp)
    exp.add_argument("--out", required=True, help="output folder")
    exp.add_argument("--opset", type=int, default=18, help="ONNX opset (17 or newer; default 18)")
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
    _add_img_size(ui)
    ui.add_argument("--device", help="cpu, cuda or mps (default: best available)")
    ui.add_argument("--threads", type=int, help="CPU threads (default: PyTorch's)")
    ui.set_defaults(func=_ui)

    ben = sub.add_parser("bench", help="time every stage and backend, print one table")
    ben.add_argument("--image", help="photo to time (default: the sample truck.jpg of a checkout)")
    ben.add_argument("--checkpoint", help="checkpoint path (default: the published weights, cached)")
    _add_img_size(ben)
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

    dis = sub.add_parser("distill", help="decoupled distillation: teacher embedding cache")
    dsub = dis.add_subparsers(dest="distill_command", required=True)
    dca = dsub.add_parser("cache", help="run the teacher once per image and keep its embeddings")
    dca.add_argument(
        "--teacher", default="vit_h", help="TYPE[:CHECKPOINT], e.g. vit_h or vit_h:sam_vit_h.pth"
    )
    dca.add_argument("--images", help="folder of images, or SA-1B sa_*.tar shards")
    dca.add_argument("--cache", required=True, help="cache folder (created; a rerun resumes)")
    dca.add_argument("--img-size", type=int, default=1024, help="teacher input size (default 1024)")
    dca.add_argument("--shard-size", type=int, default=256, help="embeddings per shard file")
    dca.add_argument("--device", help="cpu, cuda or mps (default: best available)")
    dca.add_argument(
        "--batch-size",
        type=int,
        help="images per teacher run (default: 16 on a GPU, else 1; 4 with --engine ray)",
    )
    dca.add_argument(
        "--precision",
        choices=["float32", "bf16"],
        help="teacher under bf16 autocast or float32 (default: bf16 on a GPU, else float32)",
    )
    dca.add_argument("--workers", type=int, help="decoding processes (default: 8 on a GPU, else 0)")
    dca.add_argument(
        "--resize",
        choices=["workers", "device"],
        help="resize images in the decoding processes (PIL, as SAM) or on the device "
        "(default: the device on a GPU, else the workers)",
    )
    dca.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the teacher's encoder (minutes to start; for long runs on a GPU)",
    )
    dca.add_argument(
        "--flex-attention",
        action="store_true",
        help="with --compile on CUDA: the relative-position terms inside FlexAttention's fused "
        "kernel instead of a materialised attention bias (experimental)",
    )
    dca.add_argument("--verify", action="store_true", help="check every shard's checksum, cache nothing")
    _add_ray_args(dca, batch_size=False)
    dca.set_defaults(func=_distill_cache)
    from .distill.config import FinetuneConfig, TrainConfig  # plain dataclasses: no torch import

    dtr = dsub.add_parser("train", help="train a student encoder on the cached teacher embeddings")
    dtr.add_argument("--cache", required=True, help="folder written by `mobilesam distill cache`")
    dtr.add_argument("--images", required=True, help="the images the cache was built from")
    dtr.add_argument("--out", required=True, help="run folder: log.csv, last.ckpt, student.pt(.json)")
    _add_options(dtr, TrainConfig, TRAIN_OPTIONS)
    dtr.set_defaults(func=_distill_train)
    dft = dsub.add_parser(
        "finetune-decoder", help="fine-tune the mask decoder on a frozen student encoder (SAM's losses)"
    )
    dft.add_argument("--student", required=True, help="student checkpoint (official layout)")
    dft.add_argument("--images", required=True, help="folder of images, or SA-1B sa_*.tar shards")
    dft.add_argument("--out", required=True, help="run folder: log.csv, last.ckpt, student.pt(.json)")
    dft.add_argument(
        "--prompts",
        choices=["annotations", "teacher"],
        default="annotations",
        help="target masks from SA-1B .json annotations, or from the teacher (needs --cache and "
        "--teacher-checkpoint)",
    )
    _add_options(dft, FinetuneConfig, FINETUNE_OPTIONS)
    dft.set_defaults(func=_distill_finetune)
    dev = dsub.add_parser(
        "evaluate", help="student-vs-teacher mIoU (box, 1 point, 2 points) and embedding MSE"
    )
    dev.add_argument("--student", required=True, help="student checkpoint (official layout)")
    dev.add_argument(
        "--student-type", help="the student's model type (default: the one --student fits, else vit_t)"
    )
    dev.add_argument("--teacher", default="vit_h", help="TYPE[:CHECKPOINT]")
    dev.add_argument("--images", required=True, help="folder of images, or SA-1B sa_*.tar shards")
    dev.add_argument("--img-size", type=int, default=1024, help="input size of both models (default 1024)")
    dev.add_argument(
        "--grid", type=int, default=3, help="teacher masks from a GRID x GRID point grid per image"
    )
    dev.add_argument("--seed", type=int, default=0, help="seed of the sampled prompts (default 0)")
    dev.add_argument(
        "--clicks",
        type=int,
        default=0,
        help="also score the student after N correction clicks following the one-point prompt",
    )
    dev.add_argument("--json", help="write the numbers here too")
    dev.set_defaults(func=_distill_evaluate)

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
    return parser


def _join_negative_values(argv: list[str]) -> list[str]:
    """`--box -50,-50,100,100` -> `--box=-50,-50,100,100`: argparse takes a value that starts
    with '-' and is not a plain number for an option, so clipping a box that sticks out
    past the top-left corner could not be asked for."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] in ("--box", "--point") and arg[:1] == "-" and arg[1:2].isdigit():
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    argv = _join_negative_values(list(sys.argv[1:] if argv is None else argv))
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:  # `mobilesam weights list | head`: the reader left, nothing to say
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except MobileSAMError as exc:
        print(f"mobilesam: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a path the user gave: unreadable, unwritable, disk full
        print(f"mobilesam: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mobilesam: interrupted", file=sys.stderr)
        return 130
    except ModuleNotFoundError as exc:
        if exc.name != "torch":
            raise
        print(
            f"mobilesam: error: `mobilesam {args.command}` needs PyTorch: pip install 'mobilesam[torch]' "
            "(CPU-only machines: install torch from https://download.pytorch.org/whl/cpu first)",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
