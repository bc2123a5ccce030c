"""Segment everything in a folder of images: one COCO JSON for the set, resumable.

Layout of the output folder:
    annotations.json      COCO: images, annotations (RLE, scores, point, crop), categories,
                          and `failures` (file, error); rewritten at the end of every run
    parts/<file>.json     one finished image, written atomically as soon as it is done
    overlays/<file>.png   optional overlays
A restart skips every image that has a part; a bad file is reported and the rest go on.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .errors import MobileSAMError
from .highlevel import Segmenter
from .image_io import visible_files
from .utils.files import atomic_write_text


@dataclass
class BatchSummary:
    done: list[str] = field(default_factory=list)  # segmented in this run
    skipped: list[str] = field(default_factory=list)  # already done by an earlier run
    failed: dict[str, str] = field(default_factory=dict)  # file -> error
    annotations_path: Path | None = None

    def line(self) -> str:
        return f"done {len(self.done)}, skipped {len(self.skipped)} (already done), failed {len(self.failed)}"


def segment_folder(
    sam: Segmenter,
    folder: str | Path,
    out_dir: str | Path,
    options: dict | None = None,
    overlays: bool = False,
    max_images: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> BatchSummary:
    """Segment everything in each image of `folder` into `out_dir` (see the module doc).

    sam: a `MobileSAM`, or any `highlevel.Segmenter` (`OnnxPredictor.segmenter`).
    options: `segment_everything` keyword arguments. max_images: stop after
    this many newly segmented images (a job done in slices; a restart goes on).
    """
    folder, out_dir = Path(folder), Path(out_dir)
    if not folder.is_dir():
        raise MobileSAMError(f"not a folder: {folder}")
    parts = out_dir / "parts"
    parts.mkdir(parents=True, exist_ok=True)
    files = visible_files(folder)  # non-images are tried and reported, not ignored
    say = progress or (lambda msg: print(msg, file=sys.stderr))
    summary = BatchSummary()
    try:
        for index, path in enumerate(files, start=1):
            part = parts / f"{path.name}.json"
            if _read_part(part) is not None:
                summary.skipped.append(path.name)
                continue
            if max_images is not None and len(summary.done) >= max_images:
                break
            start = time.perf_counter()
            try:
                result = sam.segment_everything(path, **(options or {}))
            except (MobileSAMError, OSError) as exc:
                # A bad or unreadable file must not end a long job. Anything else is a bug
                # and surfaces as one (Ctrl-C too); the finally below still writes the JSON.
                error = str(exc) if isinstance(exc, MobileSAMError) else f"{type(exc).__name__}: {exc}"
                summary.failed[path.name] = error
                say(f"[{index}/{len(files)}] {path.name}: FAILED: {error}")
                continue
            coco = result.to_coco(image_id=index)
            atomic_write_text(
                part, json.dumps({"image": coco["images"][0], "annotations": coco["annotations"]})
            )
            if overlays:
                result.save_overlay(out_dir / "overlays" / f"{path.name}.png")
            summary.done.append(path.name)
            seconds = time.perf_counter() - start
            say(f"[{index}/{len(files)}] {path.name}: {len(result)} masks in {seconds:.1f} s")
    finally:
        # Also on Ctrl-C: the JSON covers everything finished so far.
        summary.annotations_path = write_annotations(out_dir, files, summary.failed)
    return summary


def _read_part(part: Path) -> dict | None:
    """A finished image's part file, or None if it is missing or not a complete part."""
    try:
        data = json.loads(part.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "image" in data and "annotations" in data else None


def write_annotations(out_dir: Path, files: list[Path], failed: dict[str, str]) -> Path:
    """Merge the finished parts into one COCO JSON, images in folder order, fresh annotation ids."""
    images, annotations = [], []
    for path in files:
        data = _read_part(out_dir / "parts" / f"{path.name}.json")
        if data is None:
            continue
        images.append(data["image"])
        for ann in data["annotations"]:
            annotations.append({**ann, "id": len(annotations) + 1})
    coco = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "object"}],
        "failures": [{"file_name": name, "error": err} for name, err in sorted(failed.items())],
    }
    return atomic_write_text(out_dir / "annotations.json", json.dumps(coco))
