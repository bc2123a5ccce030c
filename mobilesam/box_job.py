"""A mask for every box of a COCO file (a detector's boxes, a box-labelled dataset),
written back into the file: box labels in, instance segmentation out. Resumable.

Layout of the output folder:
    annotations.json      the input COCO, each annotation that got a mask with
                          `segmentation` (compressed RLE), `area` (the mask's pixels) and
                          `score` (predicted IoU; a `score` given, a detector's, is kept
                          as `box_score`); ids, categories and `bbox` as given.
                          `failures`: images that could not be read, boxes that could not
                          be used, and why. Rewritten at the end of every run.
    parts/<file_name>.json  one finished image: the boxes and options it was made from,
                          its annotations; written atomically as soon as it is done
    overlays/<file_name>.png  with `overlays`, for an image with masks: masks and boxes
                          drawn (before its part; a rerun draws a missing one from the part)
    .lock                 held while a run writes here

A rerun skips every image whose part was made from the same boxes, options and model
(`Segmenter.model_record`) and redoes the others (boxes edited, other options, another
model), so the output always answers the input.
Everything in the input is checked before the first image is segmented.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from .batch import BatchSummary, JobLock, failure_text, overlay_from_part, read_json
from .convert import ConvertError, load_annotations, relative_name
from .errors import MobileSAMError, PromptError
from .highlevel import Segmenter, model_record_of, same_model
from .image_io import load_image
from .prompts import is_number, parse_float, parse_int
from .utils.files import atomic_write_text, check_output_dir


class BoxJob:
    """Boxes of `coco_path` -> masks in `out_dir` (see the module doc); `coco_path` may
    also be a folder of YOLO, Pascal VOC or LabelMe label files (`label_files`, `classes`
    naming their classes). images: the folder the COCO `file_name`s are relative to;
    options: `mask_id` (1-3, default SAM's single-mask output) and `input_size_percent`,
    as `Segmenter.segment` takes them; overlays: also draw each image's masks."""

    def __init__(
        self,
        coco_path: str | Path,
        images: str | Path,
        out_dir: str | Path,
        options: dict | None = None,
        progress: Callable[[str], None] | None = None,
        overlays: bool = False,
        classes: str | Path | None = None,
    ) -> None:
        options = dict(options or {})
        self.overlays = overlays
        self.model: dict | None = None  # the model record of the run (`run_with`)
        unknown = sorted(set(options) - {"mask_id", "input_size_percent"})
        if unknown:
            raise PromptError(f"unknown options {unknown}: mask_id and input_size_percent are taken")
        mask_id = options.get("mask_id")
        self.options = {
            "mask_id": None if mask_id in (None, "") else parse_int(mask_id, "mask_id", 1, 3),
            "input_size_percent": parse_float(
                options.get("input_size_percent", 100), "input_size_percent", 1, 100
            ),
        }
        self.images, self.out = Path(images), Path(out_dir)
        if not self.images.is_dir():
            raise MobileSAMError(f"--images {self.images}: not a folder")
        self.say = progress or (lambda msg: print(msg, file=sys.stderr))
        if classes is not None and not Path(coco_path).is_dir():
            raise PromptError("classes names the classes of a folder of label files, not of a COCO file")
        self.coco = load_annotations(coco_path, self.images, classes)  # as `mobilesam convert` reads it
        self.plan = _plan(self.coco)  # bad input fails here, before anything is written

    def run(self, sam: Segmenter) -> BatchSummary:
        """Segment the boxes of every image not done yet; `sam`: a `MobileSAM` or any `Segmenter`."""
        return self.run_with(lambda todo, summary: self._segment(sam, todo, summary), model_record_of(sam))

    def run_with(
        self,
        work: Callable[[list[tuple[str, dict, list[dict]]], BatchSummary], None],
        model: dict | None = None,
    ) -> BatchSummary:
        """Output checks and the lock, then `work(todo, summary)` on the images still to
        segment (it calls `finish` for each), then annotations.json. model: what makes the
        masks (`Segmenter.model_record`), recorded in each part. The Ray engine
        (ray_engine.py) runs its own `work` here."""
        self.model = model
        check_output_dir(self.out)
        check_output_dir(self.out / "parts")
        summary = BatchSummary()
        with JobLock(self.out / ".lock"):
            try:
                work(self._todo(summary), summary)
            except KeyboardInterrupt:
                summary.interrupted = True
            finally:  # also on Ctrl-C or an error: the JSON covers everything finished so far
                self._write_annotations(summary)
        return summary

    def _todo(self, summary: BatchSummary) -> list[tuple[str, dict, list[dict]]]:
        """The images to segment. Done ones are skipped (a missing overlay drawn from the
        part); one with no box is done at once (nothing to read or segment)."""
        todo = []
        for name, image, anns in self.plan:
            part = self._part(name, anns)
            if part is not None:
                overlay = self.overlay_path(name)
                if self.overlays and part["annotations"] and not overlay.is_file():
                    overlay_from_part(self.images / name, part, overlay)
                summary.skipped.append(name)
            elif not anns:
                self.finish(name, anns, [], [], summary)
            else:
                todo.append((name, image, anns))
        return todo

    def _segment(self, sam: Segmenter, todo: list, summary: BatchSummary) -> None:
        for index, (name, image, anns) in enumerate(todo, start=1):
            tag, start = f"[{index}/{len(todo)}] {name}", time.perf_counter()
            try:
                result, annotations, unusable = segment_boxes(
                    sam, load_image(self.images / name), image, anns, self.options
                )
            except (MobileSAMError, OSError) as exc:
                self.fail(name, exc, summary, tag)  # a bad image must not end a long job
                continue
            if self.overlays and len(result):  # before the part, which means the image is done
                result.save_overlay(self.overlay_path(name))
            self.finish(name, anns, annotations, unusable, summary)
            self.say(f"{tag}: {len(annotations)} masks in {time.perf_counter() - start:.1f} s")
            for ann_id, reason in unusable:
                self.say(f"{tag}: annotation {ann_id}: {reason}")

    def overlay_path(self, name: str) -> Path:
        return self.out / "overlays" / f"{name}.png"

    def fail(self, name: str, exc: Exception | str, summary: BatchSummary, tag: str) -> None:
        """Record an image that could not be segmented (a `MobileSAMError`, an I/O error,
        or a worker's message); anything else is a bug and is not caught."""
        error = exc if isinstance(exc, str) else failure_text(exc)
        summary.failed[name] = error
        self.say(f"{tag}: FAILED: {error}")

    def finish(self, name: str, anns: list[dict], annotations: list[dict], unusable: list, summary) -> None:
        """Mark an image done: its part, written atomically."""
        part = {"input": self._wanted(anns), "annotations": annotations, "unusable": unusable}
        atomic_write_text(self.out / "parts" / f"{name}.json", json.dumps(part))
        summary.done.append(name)

    def _wanted(self, anns: list[dict]) -> dict:
        """What an image's part is made from: its boxes, the options and the model."""
        return {"boxes": [[a["id"], a["bbox"]] for a in anns], "options": self.options, "model": self.model}

    def _part(self, name: str, anns: list[dict]) -> dict | None:
        """The image's part if it answers its boxes, options and model now (a model not
        known, in the part or now, is not compared)."""
        part = read_json(self.out / "parts" / f"{name}.json")
        made, wanted = dict((part or {}).get("input") or {}), self._wanted(anns)
        if same_model(made.get("model"), wanted["model"]):
            made["model"] = wanted["model"]
        return part if part is not None and made == wanted else None

    def _write_annotations(self, summary: BatchSummary) -> None:
        """The input COCO with the masks of every finished image, and the failures."""
        annotations, failures = [], []
        for name, _, anns in self.plan:
            part = self._part(name, anns)
            if part is None:
                if name in summary.failed:
                    failures.append({"file_name": name, "error": summary.failed[name]})
                continue
            annotations += part["annotations"]
            failures += [
                {"file_name": name, "annotation_id": ann_id, "error": reason}
                for ann_id, reason in part["unusable"]
            ]
        summary.left_out = sum("annotation_id" in f for f in failures)
        coco = {**self.coco, "annotations": annotations, "failures": failures}
        summary.annotations_path = atomic_write_text(self.out / "annotations.json", json.dumps(coco))


def segment_boxes(sam: Segmenter, rgb, image: dict, anns: list[dict], options: dict) -> tuple:
    """One image's boxes -> (its `SegmentationResult`, its annotations with their masks,
    [[annotation id, why its box cannot be used], ...]). An image of another size than its
    COCO record says is a `MobileSAMError`."""
    h, w = rgb.shape[:2]
    check_size(image, (h, w))
    boxes, usable, unusable = usable_boxes(anns, (h, w))
    result = sam.segment(rgb, input_box=boxes, **options)
    masks = result.to_coco(image_id=image["id"])["annotations"]
    annotations = [
        {**ann, **_box_score(ann), "segmentation": m["segmentation"], "area": m["area"], "score": m["score"]}
        for ann, m in zip(usable, masks)
    ]
    return result, annotations, unusable


def _box_score(ann: dict) -> dict:
    """A detector's confidence, kept as `box_score` where `score` becomes the mask's (a
    NaN or infinite one is dropped: JSON has no such number, and browsers refuse it)."""
    return {"box_score": ann["score"]} if is_number(ann.get("score")) and "box_score" not in ann else {}


def usable_boxes(anns: list[dict], size: tuple[int, int]) -> tuple[list, list[dict], list[list]]:
    """The annotations' COCO boxes as XYXY clipped to the image, the annotations they
    belong to, and why the others (no area inside the image) cannot be used."""
    h, w = size
    boxes, usable, unusable = [], [], []
    for ann in anns:
        x, y, bw, bh = ann["bbox"]
        box = [max(x, 0), max(y, 0), min(x + bw, w), min(y + bh, h)]
        if box[2] <= box[0] or box[3] <= box[1]:
            unusable.append([ann.get("id"), f"bbox {ann['bbox']} has no area inside the {w}x{h} image"])
        else:
            boxes.append(box)
            usable.append(ann)
    return boxes, usable, unusable


def is_bbox(box: object) -> bool:
    """Whether `box` is a COCO bbox: a list of four finite numbers."""
    return isinstance(box, list) and len(box) == 4 and all(is_number(v) for v in box)


def check_size(image: dict, size: tuple[int, int]) -> None:
    """The boxes are in the COCO file's pixels: an image of another size (a resized copy)
    would get masks in the wrong places, so it is a failure, not a guess."""
    h, w = size
    given = (image.get("height"), image.get("width"))
    if None in given or given == (h, w):
        return
    hint = " (an EXIF rotation: the file is stored sideways)" if given == (w, h) else ""
    raise MobileSAMError(f"the image is {w}x{h}, the COCO file says {given[1]}x{given[0]}{hint}")


def _plan(coco: dict) -> list[tuple[str, dict, list[dict]]]:
    """(file name, image, its annotations) per image, in the file's order; any annotation
    or image this cannot use is a `ConvertError` naming it."""
    by_image: dict[object, list[dict]] = {}
    images = {}
    for image in coco["images"]:
        if not isinstance(image, dict) or "id" not in image:
            raise ConvertError(f"image {image!r}: needs an id and a file_name")
        if image["id"] in images:
            raise ConvertError(f"image id {image['id']!r} is used twice")
        images[image["id"]] = image
        by_image[image["id"]] = []
    ids = set()
    for ann in coco.get("annotations", []):
        where = f"annotation {ann.get('id') if isinstance(ann, dict) else ann!r}"
        if not isinstance(ann, dict) or "id" not in ann:
            raise ConvertError(f"{where}: needs an id")
        if ann["id"] in ids:
            raise ConvertError(f"{where}: the id is used twice")
        ids.add(ann["id"])
        if ann.get("image_id") not in by_image:
            raise ConvertError(f"{where}: its image_id {ann.get('image_id')!r} is not in 'images'")
        if not is_bbox(ann.get("bbox")):
            raise ConvertError(f"{where}: bbox must be [x, y, width, height], got {ann.get('bbox')!r}")
        by_image[ann["image_id"]].append(ann)
    plan, names = [], {}
    for image_id, image in images.items():
        name = relative_name(image).as_posix()
        if name in names:
            raise ConvertError(f"images {names[name]!r} and {image_id!r} are both {name}")
        names[name] = image_id
        plan.append((name, image, by_image[image_id]))
    return plan
