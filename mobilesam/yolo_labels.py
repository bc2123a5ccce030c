"""A folder of YOLO label files (a detector's `save_txt` output, a YOLO detection or
segmentation dataset, LabelImg's files) read as a COCO dict, so that `boxes-to-masks`
can turn its boxes into masks and the UI can import its polygons. Needs no torch.

A label file is paired with the image of the same path below the images folder
(`labels/train/x.txt` with `images/train/x.jpg`); an image with no label file is an image
with nothing in it. Each line is one object, coordinates over the image's width and height:

    class cx cy w h [conf]          a box (a detection)
    class x1 y1 x2 y2 x3 y3 ... [conf]   a polygon (a segmentation, an oriented box)

Everything is read and checked before anything is returned: a bad line is a
`ConvertError` naming its file and line.
"""

from __future__ import annotations

import math
from pathlib import Path, PurePosixPath

import numpy as np

from .errors import ConvertError, ImageLoadError
from .image_io import IMAGE_SUFFIXES, upright_size, visible_files

_SLACK = 1e-6  # coordinates this far outside 0..1 are rounding, not errors
CLASSES_FILE = "classes.txt"


def read_classes(path: str | Path) -> list[str]:
    """Class names from a text file (one per line, as classes.txt, obj.names) or a YOLO
    dataset YAML (`names:` as a list or as {index: name}; needs PyYAML)."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConvertError(f"{path}: cannot read class names ({exc})") from None
    if path.suffix.lower() not in (".yaml", ".yml"):
        return [line.strip() for line in text.splitlines() if line.strip()]
    try:
        import yaml
    except ImportError:
        raise ConvertError(
            f"{path}: reading YAML needs PyYAML (pip install pyyaml), or pass a classes.txt"
        ) from None
    try:
        names = (yaml.safe_load(text) or {}).get("names")
    except (yaml.YAMLError, AttributeError) as exc:
        raise ConvertError(f"{path}: not a YOLO dataset YAML ({exc})") from None
    if isinstance(names, dict) and all(isinstance(k, int) for k in names):
        if sorted(names) != list(range(len(names))):
            raise ConvertError(f"{path}: the names' indices are not 0..{len(names) - 1}")
        names = [names[i] for i in range(len(names))]
    if not isinstance(names, list) or not names:
        raise ConvertError(f"{path}: no 'names' list or {{index: name}} mapping")
    return [str(n) for n in names]


def _numbers(line: str, where: str) -> tuple[int, list[float]]:
    try:
        values = [float(v) for v in line.split()]
    except ValueError:
        raise ConvertError(f"{where}: not numbers: {line.strip()[:80]!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise ConvertError(f"{where}: a coordinate is not finite")
    if values[0] < 0 or not values[0].is_integer():
        raise ConvertError(f"{where}: class {values[0]:g} is not a class number (0, 1, ...)")
    return int(values[0]), values[1:]


def _object(values: list[float], size: tuple[int, int], where: str) -> dict:
    """One label line's numbers (after the class) as COCO fields for an image of `size`."""
    n = len(values)
    score = values.pop() if n == 5 or (n >= 7 and n % 2 == 1) else None
    if not (len(values) == 4 or (len(values) >= 6 and len(values) % 2 == 0)):
        raise ConvertError(
            f"{where}: {n} numbers after the class: neither a box (cx cy w h [conf]) "
            "nor a polygon (3 or more x y pairs [conf])"
        )
    if not all(-_SLACK <= v <= 1 + _SLACK for v in values):
        raise ConvertError(
            f"{where}: coordinates outside 0..1 (YOLO labels are fractions of the image's size)"
        )
    h, w = size
    ann: dict = {}
    if len(values) == 4:
        cx, cy, bw, bh = values
        x0, y0 = max(cx - bw / 2, 0.0) * w, max(cy - bh / 2, 0.0) * h
        x1, y1 = min(cx + bw / 2, 1.0) * w, min(cy + bh / 2, 1.0) * h
        ann["area"] = (x1 - x0) * (y1 - y0)
    else:
        xy = np.clip(np.asarray(values, dtype=np.float64).reshape(-1, 2), 0, 1) * (w, h)
        (x0, y0), (x1, y1) = xy.min(axis=0), xy.max(axis=0)
        x, y = xy[:, 0], xy[:, 1]  # the shoelace formula: holes cut in by zero-width cuts subtract
        ann["area"] = abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))) / 2
        ann["segmentation"] = [[round(float(v), 3) for v in xy.ravel()]]
    ann["bbox"] = [round(float(v), 3) for v in (x0, y0, x1 - x0, y1 - y0)]
    ann["area"] = round(ann["area"], 3)
    if score is not None:
        ann["score"] = score
    return ann


def _pairs(labels: Path, images: Path) -> tuple[list[tuple[PurePosixPath, Path | None]], list[Path]]:
    """(image name below `images`, its label file or None) for every image, and the label
    files no image has."""
    found = {
        p.relative_to(labels).with_suffix(""): p for p in visible_files(labels, True) if p.suffix == ".txt"
    }
    pairs, owner = [], {}
    for path in visible_files(images, recursive=True):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        name = PurePosixPath(path.relative_to(images).as_posix())
        stem = path.relative_to(images).with_suffix("")
        label = found.get(stem)
        if label is not None and stem in owner:
            raise ConvertError(f"images {owner[stem]} and {name} would share the label file {label}")
        owner[stem] = name
        pairs.append((name, label))
    return pairs, [p for stem, p in found.items() if stem not in owner]


def find_classes(labels: str | Path) -> Path | None:
    """The class names' file of a labels folder, if it has one: classes.txt beside it (as
    `mobilesam convert --to yolo` writes) or inside it (as LabelImg writes)."""
    labels = Path(labels)
    return next((p for p in (labels.parent / CLASSES_FILE, labels / CLASSES_FILE) if p.is_file()), None)


def yolo_to_coco(labels: str | Path, images: str | Path, classes: str | Path | None = None) -> dict:
    """The COCO dict of the YOLO labels in folder `labels` (see the module doc) for the
    images in folder `images` (subfolders too; sizes from the headers, EXIF rotations
    applied as `load_image` does). Boxes become `bbox`; polygons `segmentation` (pixels)
    with their `bbox`; `area` is the box's or the polygon's; a confidence becomes `score`.
    Categories: id i + 1 for class i, named from the file `classes` (`read_classes`,
    `find_classes`), else by number. A classes.txt inside `labels` is not a label file."""
    labels, images = Path(labels), Path(images)
    for folder, what in ((labels, "labels"), (images, "--images")):
        if not folder.is_dir():
            raise ConvertError(f"{what} {folder}: not a folder")
    pairs, orphans = _pairs(labels, images)
    names = read_classes(classes) if classes is not None else None
    orphans = [p for p in orphans if p != labels / CLASSES_FILE]
    if orphans:
        more = f" and {len(orphans) - 1} more" if len(orphans) > 1 else ""
        raise ConvertError(f"{orphans[0]}: no image of that name below {images}{more}")
    coco: dict = {"images": [], "annotations": [], "categories": []}
    top = -1
    for image_id, (name, label) in enumerate(pairs, start=1):
        try:
            h, w = upright_size(images / name)
        except ImageLoadError as exc:
            raise ConvertError(str(exc)) from None
        coco["images"].append({"id": image_id, "file_name": str(name), "width": w, "height": h})
        if label is None:
            continue
        try:
            lines = label.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConvertError(f"{label}: cannot read ({exc})") from None
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{label} line {number}"
            cls, values = _numbers(line, where)
            if names is not None and cls >= len(names):
                raise ConvertError(f"{where}: class {cls}, but {classes} names {len(names)} classes")
            ann = {"id": len(coco["annotations"]) + 1, "image_id": image_id, "category_id": cls + 1}
            coco["annotations"].append({**ann, **_object(values, (h, w), where), "iscrowd": 0})
            top = max(top, cls)
    names = names if names is not None else [str(i) for i in range(top + 1)]
    coco["categories"] = [{"id": i + 1, "name": n} for i, n in enumerate(names)]
    return coco
