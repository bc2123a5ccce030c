"""`mobilesam evaluate`: the model's masks against ground-truth masks (mIoU from box and
point prompts)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .common import add_backend_args, add_label_source, add_model_args, backend


def add_parsers(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser(
        "evaluate",
        help="mIoU of the model's masks against ground-truth masks, from box and point prompts",
        allow_abbrev=False,
    )
    add_label_source(
        ev,
        "ground truth: COCO JSON with RLE or polygon masks, a folder of YOLO or LabelMe "
        "label files with polygons, or a Label Studio JSON export",
    )
    ev.add_argument(
        "--prompts",
        default="box,point",
        help="box: each mask's bbox; point: its pixel farthest from its boundary (needs OpenCV, "
        "the amg extra), the best-scored of three candidates; oracle: that point, the candidate "
        "closest to the truth; comma-separated (default box,point)",
    )
    ev.add_argument(
        "--clicks",
        type=int,
        default=0,
        help="also N-1 correction clicks after the point (each in the larger error region, "
        "the previous logits as mask prompt): mIoU after each click, NoC@85/90 (default 0: none)",
    )
    ev.add_argument("--max-images", type=int, help="score the first N images with masks only")
    ev.add_argument(
        "--json",
        help="write the scores here, with every annotation's IoUs; JSON.journal.jsonl keeps each "
        "image's as it is done, so that an interrupted run goes on",
    )
    add_model_args(ev)
    add_backend_args(ev)
    ev.set_defaults(func=_evaluate)


def _evaluate(args: argparse.Namespace) -> int:
    from ..evaluate import check_clicks, check_prompts, evaluate_masks, read_ground_truth, table
    from ..utils.files import atomic_write_text, check_output_file

    prompts = check_prompts(args.prompts)  # every input and output checked before the model loads
    check_clicks(args.clicks, prompts)
    if args.json:
        check_output_file(args.json)
    truth = read_ground_truth(args.source, args.images, args.classes)
    journal = Path(f"{args.json}.journal.jsonl") if args.json else None  # a rerun goes on from it
    result = evaluate_masks(
        backend(args),
        truth,
        prompts=prompts,
        max_images=args.max_images,
        progress=print,
        clicks=args.clicks,
        journal=journal,
    )
    skipped = ", ".join(f"{n} {why}" for why, n in result["skipped"].items() if n)
    print(
        f"{result['annotations']} masks of {result['images']} images scored"
        + (f"; left out: {skipped}" if skipped else "")
        + (f"; {len(result['failed'])} images failed" if result["failed"] else "")
    )
    print(table(result))
    for name, error in result["failed"].items():
        print(f"failed: {name}: {error}")
    if args.json:
        print(f"json: {atomic_write_text(args.json, json.dumps(result, indent=1))}")
    if result["interrupted"]:
        again = f" (kept in {journal}): run the same command again to go on" if journal else ""
        print(f"mobilesam: interrupted; the scores above are of the images done{again}", flush=True)
        return 130
    if result["failed"]:
        if journal:
            print(f"{journal} is kept: the same command again scores the failed images only")
        return 1
    if journal:
        journal.unlink(missing_ok=True)
    return 0
