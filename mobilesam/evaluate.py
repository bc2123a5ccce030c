"""Mask quality against ground truth: the mIoU of the model's masks from prompts made
from each ground-truth mask, as SAM-family papers report it on COCO.

Every annotation with a mask is a test case (crowd regions and box-only annotations are
counted and left out). Its prompts:
- `box`: the annotation's `bbox` (COCO XYWH; the mask's extent where it has none),
  answered with SAM's single-mask output;
- `point`: one foreground point at the mask's pixel farthest from its boundary (the
  middle of its largest inscribed disc; the image's edge counts as boundary), answered
  with the best-scored of SAM's three candidates;
- `oracle`: the same point, answered with the candidate closest to the ground truth (the
  best IoU of the three; SAM's paper reports single-point scores so, the point being
  ambiguous): an upper bound on `point` that says how much the model loses by choosing;
- with `clicks` N, N - 1 correction clicks after that point, as interactive benchmarks
  (RITM's protocol) place them: each at the pixel deepest inside the larger error region
  (the missed part of the object: a foreground click; the spill outside it: a background
  click), every earlier click kept and the previous answer's logits as the mask prompt.
  The scores are the mIoU after each click and NoC@85 / NoC@90, the mean number of
  clicks to reach IoU 0.85 / 0.90 (N for a mask that never does).
The score of a prompt is the IoU of the model's full-resolution mask with the
ground-truth mask; mIoU per prompt kind over all annotations, by COCO's size ranges of
the mask's pixel count (small < 32², medium < 96², large) and per category.

Any backend serves (`Segmenter`: PyTorch, ONNX, ExecuTorch), so an int8 export or a
distilled student is measured against the labels as the float32 model is. Each image
is encoded once; an image that cannot be read, or whose size is not its record's, is
reported and the run goes on; Ctrl-C stops with the scores so far, and with a journal
(`--json OUT`: OUT.journal.jsonl) the same run started again goes on from where it stopped.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .box_job import check_size, is_bbox
from .convert import checked_masks, decode_mask, has_mask, load_annotations, relative_name
from .errors import MobileSAMError, PromptError
from .highlevel import Segmenter, model_record_of, same_model
from .image_io import load_image
from .utils.boxes import masks_to_boxes
from .utils.regions import deepest_point, mask_iou

PROMPTS = ("box", "point")  # the default kinds of prompt
KINDS = ("box", "point", "oracle")
SIZES = {"small": (0, 32**2), "medium": (32**2, 96**2), "large": (96**2, math.inf)}  # COCO's ranges


@dataclass(frozen=True)
class GroundTruth:
    """A ground-truth file read and checked (`read_ground_truth`), ready to score."""

    source: Path  # the file or folder it was read from
    images: Path  # the folder of its images
    plan: list  # (image record, [(annotation, image size)]) per image with a mask, file order
    skipped: dict  # annotations left out, by why
    names: dict  # category id -> name


def read_ground_truth(
    source: str | Path, images: str | Path, classes: str | Path | None = None
) -> GroundTruth:
    """`source` (a COCO JSON with RLE or polygon masks, a Label Studio JSON export, or a
    folder of YOLO / LabelMe label files with polygons, `classes` naming their classes) for
    the images in the folder `images`, every mask checked before any image is read."""
    coco = load_annotations(source, images, classes)
    plan, skipped = _plan(coco)
    categories = [c for c in coco.get("categories", []) if isinstance(c, dict)]
    names = {c.get("id"): str(c.get("name", c.get("id"))) for c in categories}
    return GroundTruth(Path(source).resolve(), Path(images).resolve(), plan, skipped, names)


def evaluate_masks(
    sam: Segmenter,
    truth: GroundTruth | str | Path,
    images: str | Path | None = None,
    prompts: tuple[str, ...] | str = PROMPTS,
    classes: str | Path | None = None,
    max_images: int | None = None,
    progress: Callable[[str], None] | None = None,
    clicks: int = 0,
    journal: str | Path | None = None,
) -> dict:
    """Score `sam` on the ground truth `truth` (`read_ground_truth`'s, or its `source`, with
    `images` and `classes` as it takes them).

    Returns {"prompts", "images", "annotations", "miou": {prompt: {"all", "small",
    "medium", "large"}}, "count": {"all", "small", ...}, "categories": {name: {"count",
    prompt: mIoU}}, "skipped": {why: n}, "failed": {file: error}, "interrupted",
    "cases": [{"id", "image", "category", "area", "box", "point", "point_xy", "oracle",
    "oracle_mask_id"}, ...]}; a range with no annotation has mIoU None. `prompts`: some
    of "box", "point", "oracle" (the module doc). `max_images`: the first N images with
    something to score. `clicks` N (with the point prompt): also "clicks": {"miou": [after
    click 1, ..., N], "noc85", "noc90"} and each case's "clicks" (its IoUs) and "clicked"
    ([x, y, label] each).

    `journal`: a file where each image's scores are appended as soon as it is done. A run
    given a journal of the same ground truth, prompts, clicks and model goes on from it
    (its images are not segmented again); another run's journal is refused.
    """
    prompts = check_prompts(prompts)
    check_clicks(clicks, prompts)
    if max_images is not None and max_images < 1:
        raise PromptError(f"max_images must be 1 or more, got {max_images}")
    if not isinstance(truth, GroundTruth):
        if images is None:
            raise PromptError("images: the folder of the ground truth's images is needed")
        truth = read_ground_truth(truth, images, classes)
    plan = truth.plan if max_images is None else truth.plan[:max_images]
    skipped = {**truth.skipped, "empty mask": 0}
    names = truth.names
    header = {
        "journal": "mobilesam evaluate",
        "source": str(truth.source),
        "images": str(truth.images),
        "prompts": list(prompts),
        "clicks": clicks,
        "model": model_record_of(sam),
    }
    kept = _read_journal(Path(journal), header) if journal is not None else {}
    say = progress or (lambda line: None)
    cases: list[dict] = []
    failed: dict[str, str] = {}
    done = 0
    interrupted = False
    for index, (image, anns) in enumerate(plan, start=1):
        name = relative_name(image).as_posix()
        if name in kept:  # scored by an earlier run
            cases += kept[name]["cases"]
            skipped["empty mask"] += kept[name]["empty"]
            done += 1
            continue
        try:
            rgb = load_image(truth.images / name)
            check_size(image, rgb.shape[:2])
            found, empty = _score_image(sam, rgb, name, anns, prompts, names, clicks)
        except KeyboardInterrupt:
            interrupted = True
            break
        except (MobileSAMError, OSError) as exc:
            failed[name] = str(exc)
            say(f"[{index}/{len(plan)}] {name}: FAILED: {exc}")
            continue
        cases += found
        skipped["empty mask"] += empty
        done += 1
        if journal is not None:
            _append(Path(journal), header, {"image": name, "cases": found, "empty": empty})
        say(f"[{index}/{len(plan)}] {name}: {len(found)} masks scored")
    return {
        "prompts": list(prompts),
        "images": done,
        "annotations": len(cases),
        **_summary(cases, prompts, clicks),
        "skipped": skipped,
        "failed": failed,
        "interrupted": interrupted,
        "cases": cases,
    }


def _read_journal(path: Path, header: dict) -> dict[str, dict]:
    """The images an earlier run recorded in `path` (none if there is no such file), by
    name; a journal of another run is an error. A line cut short by a kill is ignored."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return {}
    try:
        first = json.loads(lines[0]) if lines else None
    except json.JSONDecodeError:
        first = None
    if not isinstance(first, dict) or first.get("journal") != header["journal"]:
        raise MobileSAMError(
            f"{path} is not a journal of `mobilesam evaluate`: move it away or pick another file"
        )
    differ = [k for k in header if k != "model" and first.get(k) != header[k]]
    if not same_model(first.get("model"), header["model"]):
        differ.append("model")
    if differ:
        raise MobileSAMError(
            f"{path} holds the scores of another run (its {', '.join(differ)} differ): delete it to start "
            "again, or write elsewhere"
        )
    kept = {}
    for line in lines[1:]:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # the last line, cut short when the run was killed: that image is redone
        kept[record["image"]] = record
    return kept


def _append(path: Path, header: dict, record: dict) -> None:
    """One finished image's scores at the end of the journal (its header first, if new;
    on a line of its own after a line cut short)."""
    with path.open("ab+") as f:  # appends whatever the position read from
        end = f.seek(0, 2)
        if end == 0:
            f.write(json.dumps(header).encode() + b"\n")
        else:
            f.seek(end - 1)
            if f.read(1) != b"\n":
                f.write(b"\n")
        f.write(json.dumps(record).encode() + b"\n")


def check_clicks(clicks: int, prompts: tuple[str, ...]) -> None:
    """Correction clicks follow the point prompt: clicks 0 (none) or 1 or more, with "point"."""
    if isinstance(clicks, bool) or not isinstance(clicks, int) or clicks < 0:
        raise PromptError(f"clicks must be a whole number >= 0, got {clicks!r}")
    if clicks and "point" not in prompts:
        raise PromptError("clicks follow the point prompt: ask for the point prompt too")


def check_prompts(prompts: tuple[str, ...] | str) -> tuple[str, ...]:
    """ "box,point" or a tuple of prompt kinds -> the kinds, in KINDS' order."""
    if isinstance(prompts, str):
        prompts = tuple(p.strip() for p in prompts.split(","))
    unknown = [p for p in prompts if p not in KINDS]
    if unknown or not prompts:
        raise PromptError(f"prompts must be some of {', '.join(KINDS)}, got {', '.join(prompts) or 'none'}")
    return tuple(p for p in KINDS if p in prompts)


def _plan(coco: dict) -> tuple[list[tuple[dict, list[tuple[dict, tuple[int, int]]]]], dict[str, int]]:
    """(image record, [(annotation, image size)]) for the images with a mask to score, in
    the file's order, and how many annotations were left out, by why. A malformed mask or
    file name is a `ConvertError` naming it, before any image is read."""
    skipped = {"crowd": 0, "no mask": 0}
    kept = []
    for ann in coco.get("annotations", []):
        if isinstance(ann, dict) and ann.get("iscrowd"):
            skipped["crowd"] += 1
        elif isinstance(ann, dict) and not has_mask(ann):
            skipped["no mask"] += 1
        else:
            kept.append(ann)
    checked = checked_masks({**coco, "annotations": kept})
    plan = [(image, anns) for image, anns in checked if anns]
    for image, _ in plan:
        relative_name(image)  # a file_name reaching outside the folder: an error now, not mid-run
    return plan, skipped


def _score_image(
    sam: Segmenter, rgb: np.ndarray, name: str, anns: list, prompts: tuple, names: dict, clicks: int = 0
) -> tuple[list[dict], int]:
    """Image `name`'s cases (each annotation's ground-truth mask against the model's
    answer to each prompt kind) and how many masks had no pixel (nothing to prompt from)."""
    h, w = rgb.shape[:2]
    scored = []  # (annotation, its ground-truth mask)
    for ann, _ in anns:
        truth = decode_mask(ann, (h, w))
        if truth.shape != (h, w):  # an image record without a size, and an RLE of another one
            raise MobileSAMError(
                f"annotation {ann.get('id')!r}: its mask is {truth.shape[1]}x{truth.shape[0]}, the image {w}x{h}"
            )
        if truth.any():
            scored.append((ann, truth))
    cases = [
        {
            "id": ann.get("id"),
            "image": name,
            "category": names.get(ann.get("category_id"), ann.get("category_id")),
            "area": int(truth.sum()),
        }
        for ann, truth in scored
    ]
    if scored and "box" in prompts:  # one call: the image encoded once, boxes decoded in batches
        result = sam.segment(rgb, input_box=[_box(ann, truth) for ann, truth in scored])
        for case, (_, truth), mask in zip(cases, scored, result.masks):
            case["box"] = mask_iou(mask, truth)
    if "point" in prompts:
        for case, (_, truth) in zip(cases, scored):
            ious, clicked = _click(sam, rgb, truth, max(clicks, 1))
            case["point"], case["point_xy"] = ious[0], clicked[0][:2]
            if clicks:
                case["clicks"], case["clicked"] = ious, clicked
    if "oracle" in prompts:  # the point's three candidates, one decoder call each
        for case, (_, truth) in zip(cases, scored):
            x, y = case["point_xy"] if "point_xy" in case else deepest_point(truth)[:2]  # one transform
            point = [[x + 0.5, y + 0.5]]
            ious = [
                mask_iou(sam.segment(rgb, input_point=point, mask_id=k).masks[0], truth) for k in (1, 2, 3)
            ]
            best = int(np.argmax(ious))
            case.update(oracle=ious[best], oracle_mask_id=best + 1, point_xy=[x, y])
    return cases, len(anns) - len(scored)


def _click(sam: Segmenter, rgb: np.ndarray, truth: np.ndarray, clicks: int) -> tuple[list, list]:
    """The first click at the mask's deepest pixel, then each at the deepest pixel of the
    larger error region (the module doc): the IoU after each click and the clicks made
    ([x, y, label] in pixel indices; the prompt is the pixel's centre). A perfect answer
    gets no more clicks: its IoU stands for the rest."""
    x, y, _ = deepest_point(truth)
    clicked, ious, previous = [[x, y, 1]], [], None
    while True:
        points = [[cx + 0.5, cy + 0.5] for cx, cy, _ in clicked]
        labels = [label for _, _, label in clicked]
        previous = sam.segment(rgb, input_point=points, input_point_label=labels, mask_input=previous)
        answer = previous.masks[0]
        ious.append(mask_iou(answer, truth))
        missed, spilled = truth & ~answer, answer & ~truth
        if len(ious) == clicks or not (missed.any() or spilled.any()):
            break
        depth = {
            label: deepest_point(region) for label, region in ((1, missed), (0, spilled)) if region.any()
        }
        label = max(depth, key=lambda k: (depth[k][2], k))  # the deeper region; a tie: the missed part
        clicked.append([depth[label][0], depth[label][1], label])
    return ious + [ious[-1]] * (clicks - len(ious)), clicked


def _box(ann: dict, truth: np.ndarray) -> list[float]:
    """The annotation's COCO bbox as XYXY, else the mask's extent (its pixels' corners)."""
    box = ann.get("bbox")
    if is_bbox(box) and box[2] > 0 and box[3] > 0:
        x, y, bw, bh = (float(v) for v in box)
        return [x, y, x + bw, y + bh]
    x0, y0, x1, y1 = masks_to_boxes(truth[None])[0]  # inclusive pixel bounds
    return [float(x0), float(y0), float(x1 + 1), float(y1 + 1)]


def _summary(cases: list[dict], prompts: tuple[str, ...], clicks: int = 0) -> dict:
    def mean(values: list[float]) -> float | None:
        return float(np.mean(values)) if values else None

    ranges = {"all": (0, math.inf), **SIZES}
    within = {r: [c for c in cases if lo <= c["area"] < hi] for r, (lo, hi) in ranges.items()}
    categories: dict[str, list[dict]] = {}
    for case in cases:
        categories.setdefault(str(case["category"]), []).append(case)
    more = {}
    if clicks:
        more["clicks"] = {
            "miou": [mean([c["clicks"][k] for c in cases]) for k in range(clicks)],
            **{f"noc{t}": mean([_clicks_to(c["clicks"], t / 100) for c in cases]) for t in (85, 90)},
        }
    return {
        **more,
        "miou": {p: {r: mean([c[p] for c in within[r]]) for r in ranges} for p in prompts},
        "count": {r: len(within[r]) for r in ranges},
        "categories": {
            name: {"count": len(group), **{p: mean([c[p] for c in group]) for p in prompts}}
            for name, group in sorted(categories.items())
        },
    }


def _clicks_to(ious: list[float], target: float) -> int:
    """Clicks until the IoU first reaches `target`; all of them if it never does."""
    return next((k for k, iou in enumerate(ious, start=1) if iou >= target), len(ious))


def table(result: dict, categories: int = 30) -> str:
    """The scores as text: mIoU per prompt and size range, then per category (up to
    `categories` of them; all are in the result)."""

    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    counts = result["count"]
    lines = ["prompt  " + "".join(f"{r + ' (' + str(n) + ')':>16}" for r, n in counts.items())]
    ranges = list(counts)
    for prompt, scores in result["miou"].items():
        lines.append(f"{prompt:8}" + "".join(f"{cell(scores[r]):>16}" for r in ranges))
    if "clicks" in result:
        after = result["clicks"]["miou"]
        lines += ["", "clicks  " + "".join(f"{k:>8}" for k in range(1, len(after) + 1))]
        lines.append("mIoU    " + "".join(f"{cell(v)[:6]:>8}" for v in after))
        noc = [f"NoC@{t} {cell(result['clicks'][f'noc{t}'])[:5]}" for t in (85, 90)]
        lines.append(f"{', '.join(noc)} (clicks to reach IoU 0.85 / 0.90; {len(after)} if never)")
    cats = result["categories"]
    if 1 < len(cats) <= categories:
        lines += ["", f"{'category':30}" + "".join(f"{p:>10}" for p in result["prompts"]) + f"{'count':>8}"]
        for name, row in cats.items():
            lines.append(
                f"{name[:30]:30}"
                + "".join(f"{cell(row[p]):>10}" for p in result["prompts"])
                + f"{row['count']:>8}"
            )
    elif len(cats) > categories:
        lines.append(f"({len(cats)} categories: each one's mIoU is in the JSON)")
    return "\n".join(lines)
