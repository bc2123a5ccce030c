"""Folders of per-image label files read as a COCO dict, so that `boxes-to-masks` can turn
their boxes into masks and the UI can import their polygons: YOLO text files (a
detector's `save_txt` output, a YOLO detection or segmentation dataset) and Pascal VOC
XML files (LabelImg's default, VOC itself, CVAT's and Roboflow's VOC exports). Needs no torch.

A label file is paired with the image of the same path below the images folder, suffixes
aside (`labels/train/x.txt` with `images/train/x.jpg`, `Annotations/x.xml` with
`JPEGImages/x.jpg`); an image with no label file is an image with nothing in it.

YOLO: each line is one object, coordinates over the image's width and height:

    class cx cy w h [conf]          a box (a detection)
    class x1 y1 x2 y2 x3 y3 ... [conf]   a polygon (a segmentation, an oriented box)

(Pose labels, a box followed by keypoints, cannot be told from polygons by their count
and are not this format.)

VOC: each `<object>` with a `<name>` and a `<bndbox>` of 1-based, inclusive pixel
corners is a box `[xmin - 1, ymin - 1, xmax, ymax]` in COCO's continuous pixels (the
conversion detectron2 uses); `<difficult>` is kept.

Everything is read and checked before anything is returned: a bad line or element is
a `ConvertError` naming its file (and line).
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
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


def _pairs(
    labels: Path, images: Path, suffix: str
) -> tuple[list[tuple[PurePosixPath, Path | None]], list[Path]]:
    """(image name below `images`, its label file or None) for every image, and the label
    files (of `suffix`) no image has."""
    found = {
        p.relative_to(labels).with_suffix(""): p for p in visible_files(labels, True) if p.suffix == suffix
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


Objects = Callable[[Path, tuple[int, int]], Iterator[tuple[object, dict]]]


def _read(labels: Path, images: Path, suffix: str, objects: Objects, ignore: Path | None = None) -> tuple:
    """The COCO images and [(category key, annotation)] of a labels folder; `objects(label
    file, image size)` yields each object's category key and COCO fields."""
    for folder, what in ((labels, "labels"), (images, "--images")):
        if not folder.is_dir():
            raise ConvertError(f"{what} {folder}: not a folder")
    pairs, orphans = _pairs(labels, images, suffix)
    orphans = [p for p in orphans if p != ignore]
    if orphans:
        more = f" and {len(orphans) - 1} more" if len(orphans) > 1 else ""
        raise ConvertError(f"{orphans[0]}: no image of that name below {images}{more}")
    records, anns = [], []
    for image_id, (name, label) in enumerate(pairs, start=1):
        try:
            h, w = upright_size(images / name)
        except ImageLoadError as exc:
            raise ConvertError(str(exc)) from None
        records.append({"id": image_id, "file_name": str(name), "width": w, "height": h})
        for key, fields in objects(label, (h, w)) if label is not None else ():
            ann = {"id": len(anns) + 1, "image_id": image_id, "category_id": None, **fields, "iscrowd": 0}
            anns.append((key, ann))
    return records, anns


def _text(path: Path) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConvertError(f"{path}: cannot read ({exc})") from None


def find_classes(labels: str | Path) -> Path | None:
    """The class names' file of a YOLO labels folder, if it has one: classes.txt beside it
    (as `mobilesam convert --to yolo` writes) or inside it (as LabelImg writes)."""
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
    names = read_classes(classes) if classes is not None else None

    def objects(label: Path, size: tuple[int, int]) -> Iterator[tuple[int, dict]]:
        for number, line in enumerate(_text(label).splitlines(), start=1):
            if line.strip():
                where = f"{label} line {number}"
                cls, values = _numbers(line, where)
                if names is not None and cls >= len(names):
                    raise ConvertError(f"{where}: class {cls}, but {classes} names {len(names)} classes")
                yield cls, _object(values, size, where)

    records, anns = _read(labels, images, ".txt", objects, ignore=labels / CLASSES_FILE)
    for cls, ann in anns:
        ann["category_id"] = cls + 1
    top = max((cls for cls, _ in anns), default=-1)
    names = names if names is not None else [str(i) for i in range(top + 1)]
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(names)]
    return {"images": records, "annotations": [a for _, a in anns], "categories": categories}


def _voc_number(element: ET.Element, tag: str, where: str) -> float:
    text = element.findtext(tag)
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ConvertError(f"{where}: <{tag}> is {text!r}, not a number") from None
    if not math.isfinite(value):
        raise ConvertError(f"{where}: <{tag}> is not finite")
    return value


def _voc_objects(label: Path, size: tuple[int, int]) -> Iterator[tuple[str, dict]]:
    """One VOC XML file's objects: (name, COCO fields)."""
    try:
        root = ET.fromstring(_text(label))
    except ET.ParseError as exc:
        raise ConvertError(f"{label}: not XML ({exc})") from None
    if root.tag != "annotation":
        raise ConvertError(f"{label}: not a Pascal VOC file (its root is <{root.tag}>, not <annotation>)")
    h, w = size
    stated = root.find("size")
    if stated is not None and stated.findtext("width") and stated.findtext("height"):
        sw, sh = (_voc_number(stated, tag, f"{label} <size>") for tag in ("width", "height"))
        if (sw, sh) != (w, h) and sw > 0 and sh > 0:  # some tools write 0 for "unknown"
            raise ConvertError(
                f"{label}: <size> says {sw:g}x{sh:g}, the image is {w}x{h} (a resized or rotated copy, or "
                "one its EXIF orientation turns: the boxes would land in the wrong places)"
            )
    for i, obj in enumerate(root.findall("object"), start=1):
        where = f"{label} object {i}"
        name = (obj.findtext("name") or "").strip()
        box = obj.find("bndbox")
        if not name or box is None:
            raise ConvertError(f"{where}: needs a <name> and a <bndbox>")
        x0, y0, x1, y1 = (_voc_number(box, tag, where) for tag in ("xmin", "ymin", "xmax", "ymax"))
        if x1 < x0 or y1 < y0:
            raise ConvertError(f"{where}: xmax/ymax ({x1:g}, {y1:g}) below xmin/ymin ({x0:g}, {y0:g})")
        x0, y0, x1, y1 = max(x0 - 1, 0), max(y0 - 1, 0), min(x1, w), min(y1, h)
        fields = {"bbox": [x0, y0, x1 - x0, y1 - y0], "area": max(x1 - x0, 0) * max(y1 - y0, 0)}
        difficult = obj.findtext("difficult")
        if difficult is not None and difficult.strip() in ("0", "1"):
            fields["difficult"] = int(difficult)
        yield name, fields


def voc_to_coco(labels: str | Path, images: str | Path, classes: str | Path | None = None) -> dict:
    """The COCO dict of the Pascal VOC XML files in folder `labels` (see the module doc)
    for the images in folder `images` (as `yolo_to_coco`). Categories: ids 1..N in the
    order of the file `classes` (`read_classes`; a name not in it is an error), else of
    the names found, sorted. A file's `<size>` must be its image's."""
    labels, images = Path(labels), Path(images)
    given = read_classes(classes) if classes is not None else None

    def objects(label: Path, size: tuple[int, int]) -> Iterator[tuple[str, dict]]:
        for i, (name, fields) in enumerate(_voc_objects(label, size), start=1):
            if given is not None and name not in given:
                raise ConvertError(f"{label} object {i}: class {name!r} is not in {classes}")
            yield name, fields

    records, anns = _read(labels, images, ".xml", objects)
    names = given if given is not None else sorted({name for name, _ in anns})
    ids = {name: i + 1 for i, name in enumerate(names)}
    for name, ann in anns:
        ann["category_id"] = ids[name]
    categories = [{"id": i, "name": n} for n, i in ids.items()]
    return {"images": records, "annotations": [a for _, a in anns], "categories": categories}


def folder_kind(labels: str | Path) -> str:
    """ "yolo" or "voc": the kind of label files a folder holds (.txt or .xml)."""
    files = visible_files(Path(labels), recursive=True)
    txt = any(p.suffix == ".txt" and p.name != CLASSES_FILE for p in files)
    xml = any(p.suffix == ".xml" for p in files)
    if txt and xml:
        raise ConvertError(
            f"{labels} holds both YOLO (.txt) and Pascal VOC (.xml) label files: keep one kind"
        )
    return "voc" if xml else "yolo"
