"""Folders of per-image label files read as a COCO dict, so that `boxes-to-masks` can turn
their boxes into masks and the UI can import their regions: YOLO text files (a
detector's `save_txt` output, a YOLO detection or segmentation dataset), Pascal VOC XML
files (LabelImg's default, VOC itself, CVAT's and Roboflow's VOC exports) and LabelMe
JSON files (LabelMe, X-AnyLabeling); and a Label Studio JSON export, one file
(`label_studio_to_coco`). Needs no torch.

A label file is paired with the image of the same path below the images folder, suffixes
aside (`labels/train/x.txt` with `images/train/x.jpg`, `Annotations/x.xml` with
`JPEGImages/x.jpg`, `photos/x.json` with `photos/x.jpg`); an image with no label file is
an image with nothing in it. File names written inside label files are not used (files
get renamed).

YOLO: each line is one object, coordinates over the image's width and height:

    class cx cy w h [conf]          a box (a detection)
    class x1 y1 x2 y2 x3 y3 ... [conf]   a polygon (a segmentation, an oriented box)

(Pose labels, a box followed by keypoints, cannot be told from polygons by their count
and are not this format.)

VOC: each `<object>` with a `<name>` and a `<bndbox>` of 1-based, inclusive pixel
corners is a box `[xmin - 1, ymin - 1, xmax, ymax]` in COCO's continuous pixels (the
conversion detectron2 uses); `<difficult>` is kept.

LabelMe: each region shape (polygon, rectangle, circle as a 64-gon, oriented rectangle,
mask) is an object, and shapes sharing a label and a `group_id` are one object (several
polygons: a polygon list; anything with a rectangle or a mask: one RLE mask). Points and
lines are not regions: left out, and counted. Coordinates are LabelMe's, pixel corners
(a point at x = 5 is the left edge of column 5), as COCO's.

Everything is read and checked before anything is returned: a bad line, element or
shape is a `ConvertError` naming its file (and line, element or shape)."""

from __future__ import annotations

import base64
import io
import json
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

import numpy as np

from .errors import ConvertError, ImageLoadError
from .image_io import IMAGE_SUFFIXES, upright_size, visible_files
from .prompts import is_number
from .utils import lsrle, rle
from .utils.polygons import fill_polygons

_SLACK = 1e-6  # coordinates this far outside 0..1 are rounding, not errors
CLASSES_FILE = "classes.txt"


def read_classes(path: str | Path) -> list[str]:
    """Class names from a text file (one per line, as classes.txt, obj.names) or a YOLO
    dataset YAML (`names:` as a list or as {index: name}; needs PyYAML)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM (Windows editors) is no part of a name
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
    if len(values) == 4:
        cx, cy, bw, bh = values
        x0, y0 = max(cx - bw / 2, 0.0) * w, max(cy - bh / 2, 0.0) * h
        x1, y1 = min(cx + bw / 2, 1.0) * w, min(cy + bh / 2, 1.0) * h
        region = ("box", (x0, y0, x1, y1))
    else:
        region = ("polygons", [np.clip(np.asarray(values, dtype=np.float64).reshape(-1, 2), 0, 1) * (w, h)])
    ann = _fields([region], size, where)
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
        return path.read_text(encoding="utf-8-sig")  # label files from Windows tools may start with a BOM
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


def _voc_objects(label: Path, size: tuple[int, int]) -> Iterator[tuple[str, dict, str]]:
    """One VOC XML file's objects: (name, COCO fields, where)."""
    try:
        root = ET.fromstring(_text(label))
    except ET.ParseError as exc:
        raise ConvertError(f"{label}: not XML ({exc})") from None
    if root.tag != "annotation":
        raise ConvertError(f"{label}: not a Pascal VOC file (its root is <{root.tag}>, not <annotation>)")
    stated = root.find("size")
    if stated is not None and stated.findtext("width") and stated.findtext("height"):
        sw, sh = (_voc_number(stated, tag, f"{label} <size>") for tag in ("width", "height"))
        _check_size(label, "<size>", sw, sh, size)
    h, w = size
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
        yield name, fields, where


def _check_size(label: Path, what: str, sw: float, sh: float, size: tuple[int, int]) -> None:
    """A label file's stated image size against the image's (0 or less: unknown)."""
    h, w = size
    if (sw, sh) != (w, h) and sw > 0 and sh > 0:
        raise ConvertError(
            f"{label}: {what} says {sw:g}x{sh:g}, the image is {w}x{h} (a resized or rotated copy, or "
            "one its EXIF orientation turns: the shapes would land in the wrong places)"
        )


NOT_CLASSES = ("__ignore__", "_background_")  # lines of labelme's labels.txt that are not classes


def _named_to_coco(
    labels: str | Path, images: str | Path, suffix: str, reader: Callable, classes: str | Path | None
) -> dict:
    """Label files whose objects are named (VOC, LabelMe) as COCO: `reader(file, size)`
    yields (name, fields, where); categories numbered in the order of `classes`, else of
    the names found, sorted."""
    labels, images = Path(labels), Path(images)
    given = None
    if classes is not None:
        given = [n for n in read_classes(classes) if n not in NOT_CLASSES]

    def objects(label: Path, size: tuple[int, int]) -> Iterator[tuple[str, dict]]:
        for name, fields, where in reader(label, size):
            if given is not None and name not in given:
                raise ConvertError(f"{where}: class {name!r} is not in {classes}")
            yield name, fields

    records, anns = _read(labels, images, suffix, objects)
    names = given if given is not None else sorted({name for name, _ in anns})
    ids = {name: i + 1 for i, name in enumerate(names)}
    for name, ann in anns:
        ann["category_id"] = ids[name]
    categories = [{"id": i, "name": n} for n, i in ids.items()]
    return {"images": records, "annotations": [a for _, a in anns], "categories": categories}


def voc_to_coco(labels: str | Path, images: str | Path, classes: str | Path | None = None) -> dict:
    """The COCO dict of the Pascal VOC XML files in folder `labels` (see the module doc)
    for the images in folder `images` (as `yolo_to_coco`). Categories: ids 1..N in the
    order of the file `classes` (`read_classes`; a name not in it is an error; labelme's
    `__ignore__` and `_background_` lines are not classes), else of the names found,
    sorted. A file's `<size>` must be its image's."""
    return _named_to_coco(labels, images, ".xml", _voc_objects, classes)


def labelme_to_coco(labels: str | Path, images: str | Path, classes: str | Path | None = None) -> dict:
    """The COCO dict of the LabelMe JSON files in folder `labels` (see the module doc) for
    the images in folder `images`; categories as `voc_to_coco`. The shapes that are not
    regions (points, lines) are left out, and counted by kind in the dict's
    `info["left_out"]`."""
    left_out: dict[str, int] = {}
    coco = _named_to_coco(
        labels, images, ".json", lambda f, size: _labelme_objects(f, size, left_out), classes
    )
    coco["info"] = {"description": f"LabelMe files of {labels}", "left_out": left_out}
    return coco


REGIONS = ("polygon", "rectangle", "circle", "oriented_rectangle", "rotation", "mask")
_CIRCLE_VERTICES = 64


def _labelme_objects(label: Path, size: tuple[int, int], left_out: dict) -> Iterator[tuple[str, dict, str]]:
    """One LabelMe file's objects: shapes of one label and group_id are one object."""
    try:
        data = json.loads(_text(label))
    except json.JSONDecodeError as exc:
        raise ConvertError(f"{label}: not JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
        raise ConvertError(f"{label}: not a LabelMe file (no 'shapes' list)")
    if isinstance(data.get("imageWidth"), (int, float)) and isinstance(data.get("imageHeight"), (int, float)):
        _check_size(label, "imageWidth x imageHeight", data["imageWidth"], data["imageHeight"], size)
    objects: dict[tuple, list] = {}
    for i, shape in enumerate(data["shapes"], start=1):
        where = f"{label} shape {i}"
        if not isinstance(shape, dict):
            raise ConvertError(f"{where}: not an object")
        kind = shape.get("shape_type") or "polygon"
        if kind not in REGIONS:
            left_out[str(kind)] = left_out.get(str(kind), 0) + 1
            continue
        name = shape.get("label")
        if not isinstance(name, str) or not name.strip():
            raise ConvertError(f"{where}: no label")
        group = shape.get("group_id")
        if group is not None and (not isinstance(group, int) or isinstance(group, bool)):
            raise ConvertError(f"{where}: group_id {group!r} is not a whole number")
        key = (name.strip(), group if group is not None else ("shape", i))
        objects.setdefault(key, []).append((_region(shape, kind, size, where), where))
    for (name, _), regions in objects.items():
        yield name, _fields([r for r, _ in regions], size, regions[0][1]), regions[0][1]


def _points(shape: dict, count: int | None, where: str) -> np.ndarray:
    points = shape.get("points")
    try:
        xy = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError):
        xy = None
    if xy is None or xy.ndim != 2 or xy.shape[1] != 2 or not np.isfinite(xy).all():
        raise ConvertError(f"{where}: points must be a list of finite [x, y]")
    if (count is not None and len(xy) != count) or (count is None and len(xy) < 3):
        want = f"{count} points" if count is not None else "3 or more points"
        raise ConvertError(
            f"{where}: a {shape.get('shape_type') or 'polygon'} needs {want}, it has {len(xy)}"
        )
    return xy


def _region(shape: dict, kind: str, size: tuple[int, int], where: str) -> tuple[str, object]:
    """A shape as ("polygons", [Kx2]), ("box", (x0, y0, x1, y1)) or ("mask", HxW bool),
    in the image's pixels (clipped to it)."""
    h, w = size
    if kind == "mask":
        (x0, y0), _ = _points(shape, 2, where)
        patch = _b64_mask(shape.get("mask"), where)
        mask = np.zeros((h, w), dtype=bool)
        x0, y0 = round(x0), round(y0)
        ys, xs = (
            slice(max(y0, 0), min(y0 + patch.shape[0], h)),
            slice(max(x0, 0), min(x0 + patch.shape[1], w)),
        )
        if ys.start < ys.stop and xs.start < xs.stop:
            mask[ys, xs] = patch[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]
        return "mask", mask
    if kind == "rectangle":
        (x0, y0), (x1, y1) = np.clip(_points(shape, 2, where), 0, (w, h))
        return "box", (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
    if kind == "circle":
        (cx, cy), (px, py) = _points(shape, 2, where)
        angles = np.linspace(0, 2 * np.pi, _CIRCLE_VERTICES, endpoint=False)
        r = math.hypot(px - cx, py - cy)
        xy = np.stack([cx + r * np.cos(angles), cy + r * np.sin(angles)], axis=1)
    else:
        xy = _points(shape, 4 if kind in ("oriented_rectangle", "rotation") else None, where)
    return "polygons", [np.clip(xy, 0, (w, h))]


def _b64_mask(data: object, where: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(base64.b64decode(str(data), validate=True))) as img:
            return np.asarray(img.convert("L")) > 0
    except (ValueError, OSError) as exc:
        raise ConvertError(f"{where}: its mask is not a base64 PNG ({exc})") from None


def _fields(regions: list[tuple[str, object]], size: tuple[int, int], where: str) -> dict:
    """COCO fields of one object made of `regions`: polygons stay polygons (several are a
    union); a box alone is a bbox; anything else is rasterised into one RLE mask."""
    if all(kind == "polygons" for kind, _ in regions):
        polys = [p for _, ps in regions for p in ps]
        xy = np.concatenate(polys)
        area = sum(_shoelace(p) for p in polys)
        seg = [[round(float(v), 3) for v in p.ravel()] for p in polys]
        return {"segmentation": seg, "bbox": _bbox(xy.min(axis=0), xy.max(axis=0)), "area": round(area, 3)}
    if len(regions) == 1 and regions[0][0] == "box":
        x0, y0, x1, y1 = regions[0][1]
        return {"bbox": _bbox((x0, y0), (x1, y1)), "area": round(float((x1 - x0) * (y1 - y0)), 3)}
    mask = np.zeros(size, dtype=bool)
    for kind, region in regions:
        if kind == "mask":
            mask |= region
        elif kind == "polygons":
            mask |= fill_polygons(region, size)
        else:
            x0, y0, x1, y1 = region
            mask[round(y0) : round(y1), round(x0) : round(x1)] = True
    ys, xs = np.nonzero(mask)
    if not len(xs):
        raise ConvertError(f"{where}: its mask has no pixel")
    bbox = _bbox((xs.min(), ys.min()), (xs.max() + 1, ys.max() + 1))
    return {"segmentation": rle.encode(mask), "bbox": bbox, "area": int(mask.sum())}


def _shoelace(xy: np.ndarray) -> float:
    x, y = xy[:, 0], xy[:, 1]  # holes cut in by zero-width cuts subtract
    return abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))) / 2


def _bbox(lo, hi) -> list[float]:
    return [round(float(v), 3) for v in (lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1])]


# ---- Label Studio's JSON export ------------------------------------------------------

LOCAL_FILES = "/data/local-files/?d="  # Label Studio's local file serving (its image URLs)
_UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")  # Label Studio's prefix on uploaded files' names
_LS_REGIONS = ("brushlabels", "polygonlabels", "rectanglelabels", "ellipselabels")


def label_studio_to_coco(
    export: str | Path,
    images: str | Path | None = None,
    image_root: str | None = None,
    classes: str | Path | None = None,
) -> dict:
    """The COCO dict of a Label Studio JSON export (a list of tasks; what `mobilesam
    convert --to label-studio` writes comes back, after review, as the same images and
    masks). Each task is an image; its annotation is the one marked ground truth, else
    the last one not cancelled; a task with none is not labelled and left out (counted in
    `info["left_out"]["unlabelled tasks"]`). Regions: brush masks (Label Studio's brush
    RLE) become RLE masks, polygons polygons, rectangles boxes (rotated: polygons),
    ellipses 64-gons, in pixels of the region's `original_width` x `original_height`;
    other results (keypoints, choices, text) are left out and counted by type.

    The image's file_name: the task's image URL less `image_root` when it starts with it,
    else the path of Label Studio's local files URL (`/data/local-files/?d=...`), else the
    URL's last part (without the 8-hex-digit prefix Label Studio gives uploads). With
    `images`, each image must be there and its size is read from it (and must match the
    regions'); without, sizes come from the regions. Categories as `voc_to_coco`."""
    path = Path(export)
    try:
        tasks = json.loads(_text(path))
    except json.JSONDecodeError as exc:
        raise ConvertError(f"{path}: not JSON ({exc})") from None
    if isinstance(tasks, dict) and "images" in tasks:
        raise ConvertError(
            f"{path} is COCO already: --to coco reads label files or a Label Studio export "
            "(COCO files convert --to coco-polygon, yolo, labelme, ...)"
        )
    if not isinstance(tasks, list) or not all(isinstance(t, dict) and "data" in t for t in tasks):
        raise ConvertError(f"{path}: not a Label Studio JSON export (a list of tasks, each with 'data')")
    given = None if classes is None else [n for n in read_classes(classes) if n not in NOT_CLASSES]
    left_out: dict[str, int] = {}
    records, anns, names = [], [], {}
    for number, task in enumerate(tasks, start=1):
        where = f"{path} task {task.get('id', number)}"
        chosen = _ls_annotation(task)
        if chosen is None:
            left_out["unlabelled tasks"] = left_out.get("unlabelled tasks", 0) + 1
            continue
        results = [r for r in chosen.get("result") or [] if isinstance(r, dict)]
        name = _ls_file_name(task, results, image_root, where)
        if name in names:
            raise ConvertError(f"{where}: its image {name} is also task {names[name]}'s")
        names[name] = task.get("id", number)
        size = _ls_size(results, where)
        if images is not None:
            try:
                on_disk = upright_size(Path(images) / name)
            except ImageLoadError as exc:
                raise ConvertError(f"{where}: {exc}") from None
            if size is not None and size != on_disk:
                raise ConvertError(
                    f"{where}: its regions are for a {size[1]}x{size[0]} image, {name} is {on_disk[1]}x{on_disk[0]}"
                )
            size = on_disk
        record = {"id": len(records) + 1, "file_name": name}
        if size is not None:
            record.update(width=size[1], height=size[0])
        records.append(record)
        for label, fields in _ls_regions(results, size, left_out, where):
            if given is not None and label not in given:
                raise ConvertError(f"{where}: class {label!r} is not in {classes}")
            ann = {"id": len(anns) + 1, "image_id": record["id"], "category_id": None, **fields, "iscrowd": 0}
            anns.append((label, ann))
    order = given if given is not None else sorted({label for label, _ in anns})
    ids = {label: i + 1 for i, label in enumerate(order)}
    for label, ann in anns:
        ann["category_id"] = ids[label]
    return {
        "info": {"description": f"Label Studio export {path}", "left_out": left_out},
        "images": records,
        "annotations": [a for _, a in anns],
        "categories": [{"id": i, "name": n} for n, i in ids.items()],
    }


def _ls_annotation(task: dict) -> dict | None:
    """The task's annotation: the ground truth, else the last not cancelled, else None."""
    done = [a for a in task.get("annotations") or [] if isinstance(a, dict) and not a.get("was_cancelled")]
    return next((a for a in done if a.get("ground_truth")), done[-1] if done else None)


def _ls_file_name(task: dict, results: list[dict], image_root: str | None, where: str) -> str:
    from urllib.parse import parse_qs, unquote, urlsplit

    data = task["data"]
    if not isinstance(data, dict):
        raise ConvertError(f"{where}: its data is not an object")
    key = next((r["to_name"] for r in results if r.get("to_name") in data), "image")
    url = data.get(key)
    if not isinstance(url, str):
        strings = [v for v in data.values() if isinstance(v, str)]
        if len(strings) != 1:
            raise ConvertError(f"{where}: no image URL in its data")
        url = strings[0]
    if image_root and url.startswith(image_root):
        name = unquote(url[len(image_root) :])
    elif url.startswith(LOCAL_FILES):
        name = parse_qs(urlsplit(url).query).get("d", [""])[0]
    else:
        name = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
        if "/data/upload/" in url:
            name = _UPLOAD_PREFIX.sub("", name)
    name = name.replace("\\", "/")
    if not name or PurePosixPath(name).is_absolute() or ".." in PurePosixPath(name).parts:
        raise ConvertError(f"{where}: no image file name in {url!r} (--image-root strips a URL's start)")
    return name


def _ls_size(results: list[dict], where: str) -> tuple[int, int] | None:
    sizes = {
        (r.get("original_height"), r.get("original_width"))
        for r in results
        if r.get("type") in _LS_REGIONS or "rle" in (r.get("value") or {})
    }
    if len(sizes) > 1:
        raise ConvertError(f"{where}: its regions disagree on the image's size")
    if not sizes:
        return None
    h, w = sizes.pop()
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (h, w)):
        raise ConvertError(f"{where}: a region has no original_width and original_height")
    return h, w


def _ls_regions(
    results: list[dict], size: tuple[int, int] | None, left_out: dict, where: str
) -> Iterator[tuple[str, dict]]:
    """(label, COCO fields) of each region of one annotation's results."""
    for i, r in enumerate(results, start=1):
        here = f"{where} region {r.get('id', i)}"
        kind, value = r.get("type"), r.get("value")
        if not isinstance(value, dict):
            raise ConvertError(f"{here}: no value")
        if kind not in _LS_REGIONS and not (kind == "labels" and "rle" in value):
            left_out[str(kind)] = left_out.get(str(kind), 0) + 1
            continue
        labels = value.get(kind)
        if not isinstance(labels, list) or not labels or not isinstance(labels[0], str):
            raise ConvertError(f"{here}: no label")
        h, w = size
        scale = np.array([w / 100, h / 100])  # Label Studio's coordinates: % of the image
        if "rle" in value:
            try:
                mask = lsrle.decode(value["rle"], (h, w))
            except ConvertError as exc:
                raise ConvertError(f"{here}: {exc}") from None
            if not mask.any():
                left_out["empty brush masks"] = left_out.get("empty brush masks", 0) + 1
                continue
            region = ("mask", mask)
        elif kind == "polygonlabels":
            xy = _points({"points": value.get("points")}, None, here) * scale
            region = ("polygons", [np.clip(xy, 0, (w, h))])
        else:
            x, y, rx, ry, turn = (_ls_number(value, k, here) for k in _LS_FIELDS[kind])
            if kind == "rectanglelabels":  # (x, y): the top left corner, turned about
                corners = np.array([[0, 0], [rx, 0], [rx, ry], [0, ry]]) * scale
            else:  # (x, y): the centre
                angles = np.linspace(0, 2 * np.pi, _CIRCLE_VERTICES, endpoint=False)
                corners = np.stack([np.cos(angles), np.sin(angles)], axis=1) * ([rx, ry] * scale)
            c, s = math.cos(math.radians(turn)), math.sin(math.radians(turn))  # clockwise on screen
            xy = np.clip(corners @ np.array([[c, s], [-s, c]]) + (x, y) * scale, 0, (w, h))
            region = (
                ("box", (*xy[0], *xy[2])) if kind == "rectanglelabels" and turn == 0 else ("polygons", [xy])
            )
        yield labels[0].strip(), _fields([region], (h, w), here)


_LS_FIELDS = {
    "rectanglelabels": ("x", "y", "width", "height", "rotation"),
    "ellipselabels": ("x", "y", "radiusX", "radiusY", "rotation"),
}


def _ls_number(value: dict, key: str, where: str) -> float:
    v = value.get(key, 0 if key == "rotation" else None)
    if not is_number(v):
        raise ConvertError(f"{where}: its {key} is no number")
    return float(v)


KINDS = {".txt": "yolo", ".xml": "voc", ".json": "labelme"}


def folder_kind(labels: str | Path) -> str:
    """ "yolo", "voc" or "labelme": the kind of label files a folder holds (.txt, .xml or
    .json; a classes.txt is not a label file)."""
    files = visible_files(Path(labels), recursive=True)
    kinds = {KINDS[p.suffix] for p in files if p.suffix in KINDS and p.name != CLASSES_FILE}
    if len(kinds) > 1:
        found = " and ".join(sorted(k for k in kinds))
        raise ConvertError(f"{labels} holds label files of several kinds ({found}): keep one kind")
    return kinds.pop() if kinds else "yolo"


READERS = {"yolo": yolo_to_coco, "voc": voc_to_coco, "labelme": labelme_to_coco}


def read_folder(labels: str | Path, images: str | Path, classes: str | Path | None = None) -> tuple:
    """(COCO dict, kind, the class names' file read or None) of a folder of label files of
    any kind (`folder_kind`); for YOLO without `classes`, the one `find_classes` finds."""
    kind = folder_kind(labels)
    if kind == "yolo" and classes is None:
        classes = find_classes(labels)
    return READERS[kind](labels, images, classes), kind, classes
