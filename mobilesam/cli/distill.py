"""`mobilesam distill cache | train | finetune-decoder | evaluate`: decoupled distillation."""

from __future__ import annotations

import argparse
import os

from ..errors import PromptError
from .common import add_ray_args, given, ray_options, uses_ray


def add_parsers(sub: argparse._SubParsersAction) -> None:
    dis = sub.add_parser(
        "distill",
        help="decoupled distillation: teacher cache, student training, decoder fine-tuning, evaluation",
    )
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
    add_ray_args(dca, batch_size=False)
    dca.set_defaults(func=_distill_cache)
    from ..distill.config import FinetuneConfig, TrainConfig  # plain dataclasses: no torch import

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


def _distill_cache(args: argparse.Namespace) -> int:
    from .. import weights
    from ..api import resolve_device
    from ..build import build_sam
    from ..distill.cache import EmbeddingCache, check_encoder_options

    if args.verify:
        damaged = EmbeddingCache(args.cache).verify()
        for name in damaged:
            print(f"{args.cache}/{name}: DAMAGED (checksum mismatch); delete it and rerun the cache")
        print(f"{len(EmbeddingCache(args.cache))} embeddings, {len(damaged)} damaged shards")
        return 1 if damaged else 0
    if not args.images:
        raise PromptError("--images is needed (or --verify to check an existing cache)")
    check_encoder_options(args.precision, args.compile, args.flex_attention)  # before the teacher loads
    on_ray = uses_ray(args)
    model_type, _, path = args.teacher.partition(":")
    checkpoint = path or (weights.ensure_weights(model_type) if args.img_size == 1024 else None)
    if checkpoint is None:
        raise PromptError("--teacher TYPE:PATH is needed with --img-size other than 1024")
    cache = EmbeddingCache(args.cache)
    if on_ray:
        from ..ray_engine import cache_on_ray

        local = given(args, "workers", "resize")
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
            ray_options(args),
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
    from ..distill.train import TrainConfig, train

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
    from ..distill.finetune import FinetuneConfig, finetune

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

    from .. import weights
    from ..build import build_sam, resolve_model_type
    from ..distill.evaluate import evaluate, table
    from ..utils.files import atomic_write_text

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
    "drop_path_rate": float,
    "activation_checkpointing": bool,
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
        flag = "--" + name.replace("_", "-")
        help_ = meaning if default is None else f"{meaning} (default: {default})"
        if kind is bool:  # a switch: on when given
            parser.add_argument(flag, dest=name, action="store_const", const=True, help=help_)
        else:
            parser.add_argument(flag, dest=name, type=kind, help=help_)
    parser.add_argument("--compile", action="store_true", help="torch.compile the task")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.ckpt")
