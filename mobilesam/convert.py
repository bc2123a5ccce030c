"""COCO JSON with RLE masks (what `mobilesam everything`, `--json` and the UI's export write)
to polygons: COCO polygon JSON, or a folder of YOLO segmentation labels or LabelMe files;
to one mask PNG per annotation or one class-index PNG per image; to Label Studio tasks
with brush masks; and a folder of YOLO, Pascal VOC or LabelMe label files to
COCO JSON (`label_files`). Needs no torch.

The input is read and every annotation converted (for mask PNGs: checked) before anything
is written, so a bad annotation stops the run with its id and leaves no half-written output.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from .errors import ConvertError
from .label_files import LOCAL_FILES, label_studio_to_coco, read_folder
from .prompts import is_number
from .result import MOST_LABELS, yolo_line
from .utils import rle
from .utils.files import (
    atomic_write,
    atomic_write_bytes,
    atomic_write_text,
    check_output_dir,
    check_output_file,
    replace_folder,
)
from .utils.polygons import fill_polygons, join_polygons, mask_to_polygons

FORMATS = ("coco-polygon", "yolo", "labelme", "masks", "label-maps", "instance-maps", "label-studio", "coco")
NO_MASK = "it has no segmentation, a box only: `mobilesam boxes-to-masks` makes its mask"


@dataclass
class Converted:
    files: list[Path]  # written
    images: int
    annotations: int
    empty: int  # annotations whose mask has no pixel: no polygon, left out
    crowd: int  # iscrowd regions: kept as RLE in COCO polygons, left out of YOLO labels
    classes: Path | None = None  # label files in: the class names' file read
    source: str = "coco"  # what was read: "coco", "yolo", "voc", "labelme" or "label-studio"
    left_out: dict[str, int] = field(default_factory=dict)  # LabelMe in: shapes that are no regions


def load_coco(path: str | Path) -> dict:
    path = Path(path)
    try:
        coco = json.loads(path.read_text(encoding="utf-8-sig"))  # BOM or not
    except FileNotFoundError:
        raise ConvertError(f"{path}: no such file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConvertError(f"{path}: not JSON ({exc})") from None
    if not isinstance(coco, dict) or not isinstance(coco.get("images"), list):
        raise ConvertError(f"{path}: not COCO JSON (no 'images' list)")
    if not isinstance(coco.get("annotations", []), list):
        raise ConvertError(f"{path}: 'annotations' is not a list")
    return coco


def load_annotations(src: str | Path, images: str | Path, classes: str | Path | None = None) -> dict:
    """The COCO dict of `src`: a COCO file (`load_coco`), a Label Studio JSON export
    (`label_files.label_studio_to_coco`: a JSON list), or a folder of label files (YOLO,
    VOC, LabelMe; `label_files.read_folder`) for the images in folder `images`, `classes`
    naming their classes."""
    if Path(src).is_dir():
        return read_folder(src, images, classes)[0]
    if _json_list(Path(src)):
        return label_studio_to_coco(src, images, classes=classes)
    return load_coco(src)


def _json_list(path: Path) -> bool:
    """Whether the file `path` holds a JSON list (its first character other than white space)."""
    try:
        with path.open("rb") as f:
            start = f.read(4096).lstrip()
    except OSError:
        return False
    return start.startswith(b"[")


def has_mask(ann: dict) -> bool:
    """Whether a COCO annotation has a mask: a detection dataset's box-only annotation has
    no `segmentation`, or (CVAT's, Roboflow's exports) an empty list."""
    return ann.get("segmentation") not in (None, [])


def _polygons(ann: dict, size: tuple[int, int] | None, tolerance: float) -> list[np.ndarray]:
    """An annotation's segmentation as polygons (Kx2): RLE traced (simplified by
    `tolerance`), polygons as they are."""
    if not has_mask(ann):
        raise ValueError(NO_MASK)
    seg = ann["segmentation"]
    if isinstance(seg, dict):
        mask = rle.decode(seg)
        if size is not None and mask.shape != size:
            raise ValueError(f"its RLE is {mask.shape[0]}x{mask.shape[1]}, its image {size[0]}x{size[1]}")
        return mask_to_polygons(mask, tolerance)
    return [p for p in polygon_arrays(seg) if len(p) >= 3]


def polygon_arrays(seg: object) -> list[np.ndarray]:
    """A COCO polygon segmentation (flat x, y lists) as Kx2 float arrays; a ValueError for
    anything else, or for a coordinate that is no finite number (NaN, a string)."""
    if not (isinstance(seg, list) and all(isinstance(q, list) and len(q) % 2 == 0 for q in seg)):
        raise ValueError("its segmentation is neither RLE nor a list of polygons")
    if not all(is_number(v) for q in seg for v in q):
        raise ValueError("its polygons hold a coordinate that is no finite number")
    return [np.asarray(q, dtype=np.float64).reshape(-1, 2) for q in seg]


def _size(image: dict, ann: dict) -> tuple[int, int] | None:
    """The image's (height, width): from the image record, else from the annotation's RLE."""
    if "height" in image and "width" in image:
        return int(image["height"]), int(image["width"])
    seg = ann.get("segmentation")
    return tuple(int(v) for v in seg["size"]) if isinstance(seg, dict) else None


def _each(coco: dict, tolerance: float):
    """(annotation, its image size or None, its polygons) per annotation; a bad one is a
    `ConvertError` naming it."""
    images = {img.get("id"): img for img in coco["images"] if isinstance(img, dict)}
    for ann in coco.get("annotations", []):
        try:
            image = images.get(ann.get("image_id"))
            if image is None:
                raise ValueError(f"its image_id {ann.get('image_id')!r} is not in 'images'")
            size = _size(image, ann)
            yield ann, size, _polygons(ann, size, tolerance)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            where = ann.get("id") if isinstance(ann, dict) else ann
            raise ConvertError(f"annotation {where!r}: {exc}") from None


def to_coco_polygons(coco: dict, tolerance: float = 1.0) -> dict:
    """The same COCO dict with every segmentation as polygons (flat x, y lists), but for
    crowd regions (`iscrowd`), which COCO keeps as RLE. An annotation whose mask has no
    pixel is left out: it has no polygon, and an empty polygon list breaks pycocotools."""
    anns = []
    for ann, _, polys in _each(coco, tolerance):
        if ann.get("iscrowd"):
            anns.append(ann)
        elif polys:
            anns.append({**ann, "segmentation": [p.ravel().tolist() for p in polys]})
    return {**coco, "annotations": anns}


def relative_name(image: dict, default: str | None = None) -> PurePosixPath:
    """An image record's `file_name` as a path that stays inside a folder (`default` when
    it has none); an absolute path or one with `..` is a `ConvertError`."""
    name = image.get("file_name") or default
    if not isinstance(name, str) or not name:
        raise ConvertError(f"image {image.get('id')!r}: no file_name")
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts:
        raise ConvertError(f"image {image.get('id')!r}: file_name {name!r} would reach outside the folder")
    return path


def _categories(coco: dict) -> list[dict]:
    """The categories sorted by id (one "object" if there are none)."""
    try:
        categories = sorted(coco.get("categories") or [{"id": 1, "name": "object"}], key=lambda c: c["id"])
        return [{"id": c["id"], "name": str(c["name"])} for c in categories]
    except (KeyError, TypeError):
        raise ConvertError("each of 'categories' needs an id and a name") from None


def _label_paths(coco: dict, suffix: str) -> dict[object, PurePosixPath]:
    """{image id: its label file (file_name with `suffix`)}; two images sharing one is an error."""
    owner: dict[PurePosixPath, object] = {}
    path_of = {}
    for image in coco["images"]:
        if not isinstance(image, dict):
            raise ConvertError(f"image {image!r} is not a record")
        path = relative_name(image, f"image_{image.get('id')}").with_suffix(suffix)
        if path in owner:
            raise ConvertError(
                f"images {owner[path]!r} and {image.get('file_name')!r} would share the label file {path}"
            )
        owner[path], path_of[image.get("id")] = image.get("file_name"), path
    return path_of


def _category(ann: dict, known: dict) -> object:
    """`known[the annotation's category_id]` (1 when it has none); a category not known is
    a `ConvertError` naming the annotation."""
    category = ann.get("category_id", 1)
    if category not in known:
        raise ConvertError(f"annotation {_ann_id(ann)!r}: category {category!r} is not in 'categories'")
    return known[category]


def _objects(coco: dict, tolerance: float, class_of: dict):
    """(annotation, its class, image size, polygons) of each annotation whose category is
    known and whose image has a size."""
    for ann, size, polys in _each(coco, tolerance):
        cls = _category(ann, class_of)
        if size is None:
            raise ConvertError(f"annotation {ann.get('id')!r}: its image has no width and height")
        yield ann, cls, size, polys


def to_yolo(coco: dict, tolerance: float = 1.0) -> tuple[dict[PurePosixPath, str], list[str]]:
    """YOLO segmentation labels: {label path (file_name with .txt): text}, and the class
    names (class i is the i-th category by id). Every image has a file, empty if nothing
    was found in it; a mask of several parts is one polygon (see `SegmentationResult.to_yolo`);
    crowd regions (`iscrowd`) are left out, as Ultralytics' own COCO converter does."""
    categories = _categories(coco)
    path_of = _label_paths(coco, ".txt")
    labels: dict[PurePosixPath, list[str]] = {path: [] for path in path_of.values()}
    class_of = {c["id"]: i for i, c in enumerate(categories)}
    for ann, cls, size, polys in _objects(coco, tolerance, class_of):
        if polys and not ann.get("iscrowd"):
            labels[path_of[ann["image_id"]]].append(yolo_line(cls, join_polygons(polys), size))
    return {path: "".join(lines) for path, lines in labels.items()}, [c["name"] for c in categories]


LABELME_VERSION = "5.5.0"  # the LabelMe file format these files follow


def to_labelme(coco: dict, tolerance: float = 1.0, image_path=None) -> dict[PurePosixPath, dict]:
    """LabelMe files: {file_name with .json: its LabelMe dict}, one per image (no shapes if
    nothing was found in it). Each part of a mask is a polygon shape labelled with the
    category's name (holes cut in, so LabelMe draws them); the parts of one mask share a
    `group_id`, which LabelMe reads back as one object. image_path(file_name, json path):
    the file's `imagePath` (default: the image's name, for files beside their images)."""
    names = {c["id"]: c["name"] for c in _categories(coco)}
    path_of = _label_paths(coco, ".json")
    image_path = image_path or (lambda name, path: PurePosixPath(name).name)
    files = {}
    for image in coco["images"]:
        path = path_of[image.get("id")]
        name = str(relative_name(image, f"image_{image.get('id')}"))
        h, w = _size(image, {}) or (None, None)
        files[path] = {
            "version": LABELME_VERSION,
            "flags": {},
            "shapes": [],
            "imagePath": image_path(name, path),
            "imageData": None,
            "imageHeight": h,
            "imageWidth": w,
        }
    groups: dict[PurePosixPath, int] = {}
    for ann, label, size, polys in _objects(coco, tolerance, names):
        path = path_of[ann["image_id"]]
        file = files[path]
        file["imageHeight"], file["imageWidth"] = size
        group = None
        if len(polys) > 1:  # numbered per file
            group = groups[path] = groups.get(path, 0) + 1
        for poly in polys:
            points = np.asarray(poly, dtype=np.float64).reshape(-1, 2).tolist()
            shape = {"label": label, "points": points, "group_id": group, "description": ""}
            file["shapes"].append({**shape, "shape_type": "polygon", "flags": {}})
    return files


def yolo_files(labels: dict[PurePosixPath, str], names: list[str]) -> dict[PurePosixPath, str]:
    """`to_yolo`'s labels and class names as the files of a dataset folder:
    labels/<file_name>.txt per image (as Ultralytics pairs them with images/) and
    classes.txt, one class name per line (kept apart, so an image named classes.jpg
    cannot overwrite it)."""
    files = {PurePosixPath("labels") / path: text for path, text in labels.items()}
    files[PurePosixPath("classes.txt")] = "".join(f"{n}\n" for n in names)
    return files


def convert(
    src: str | Path,
    to: str,
    out: str | Path,
    tolerance: float = 1.0,
    images: str | Path | None = None,
    classes: str | Path | None = None,
    overwrite: bool = False,
    image_root: str | None = None,
    as_annotations: bool = False,
) -> Converted:
    """Convert the COCO file `src`: `to` is "coco-polygon" (out: a JSON file), "yolo" (out:
    a folder of labels/ and classes.txt, `yolo_files`), "labelme" (out: a folder of one
    JSON file per image; `images`: the images' folder, for the files' `imagePath`) or
    "masks" (out: a folder of one PNG per annotation, `to_masks`) or "label-maps" (out: a
    folder of one class-index PNG per image and classes.txt, `to_label_maps`) or
    "instance-maps" (the same with instance-index PNGs and instances.json; `overwrite`:
    replace the label maps there) or "label-studio" (out: a JSON file of Label Studio
    tasks, and its labeling config beside it, `to_label_studio`: `image_root`,
    `as_annotations`). Or
    convert the folder of label files `src` (YOLO, Pascal VOC, LabelMe) for the images in
    folder `images` to "coco" (out: a JSON file; `classes`: the class names' file; see
    `label_files`), or the Label Studio JSON export `src` to "coco" (`images`, if given:
    the images' folder, to check them and read their sizes; `image_root`: the start of
    the tasks' image URLs to strip; `label_files.label_studio_to_coco`)."""
    if to not in FORMATS:
        raise ConvertError(f"unknown format {to!r}: choose from {', '.join(FORMATS)}")
    if not 0 <= tolerance < float("inf"):
        raise ConvertError(f"tolerance must be 0 or more pixels, got {tolerance}")
    if as_annotations and to != "label-studio":
        raise ConvertError("--as-annotations is for --to label-studio")
    if image_root is not None and to not in ("label-studio", "coco"):
        raise ConvertError("--image-root is for --to label-studio, and for a Label Studio export --to coco")
    out, folder = Path(out), Path(src).is_dir()
    if folder and to != "coco":
        raise ConvertError(f"{src} is a folder: label files (YOLO, Pascal VOC, LabelMe) convert --to coco")
    if to == "coco":
        return _labels_to_coco(Path(src), out, images, classes, image_root)
    if classes is not None or (images is not None and to != "labelme"):
        raise ConvertError(
            "--images and --classes are for a folder of label files (--to coco); --images also for --to labelme"
        )
    coco = load_coco(src)
    total = len(coco.get("annotations", []))
    crowd = sum(1 for ann in coco.get("annotations", []) if isinstance(ann, dict) and ann.get("iscrowd"))
    if to == "coco-polygon":
        check_output_file(out)
        converted = to_coco_polygons(coco, tolerance)
        files = [atomic_write_text(out, json.dumps(converted))]
        written = len(converted["annotations"])
    elif to == "masks":
        files = to_masks(coco, out)
        written = len(files)
    elif to in ("label-maps", "instance-maps"):
        files = to_label_maps(coco, out, instances=to == "instance-maps", overwrite=overwrite)
        written = total
    elif to == "label-studio":
        check_output_file(out)
        tasks, config = label_studio_tasks(
            coco, LOCAL_FILES if image_root is None else image_root, as_annotations
        )
        written = 0

        def write(f) -> None:  # one task at a time: a folder's tasks can run to gigabytes
            nonlocal written
            f.write(b"[")
            for i, task in enumerate(tasks):
                written += len(task.get("predictions", task.get("annotations"))[0]["result"])
                f.write((", " if i else "").encode() + json.dumps(task).encode())
            f.write(b"]")

        files = [atomic_write(out, write), atomic_write_text(label_studio_config_path(out), config)]
    elif to == "labelme":
        check_output_dir(out)

        def relative(name: str, path: PurePosixPath) -> str:  # imagePath: from the file's folder to its image
            return Path(os.path.relpath(Path(images, name), (out / path).parent)).as_posix()

        there = [str(out / path) for path in _label_paths(coco, ".json").values() if (out / path).exists()]
        if there:  # refused before any mask is traced
            raise ConvertError(
                f"{there[0]} exists{f' (and {len(there) - 1} more)' if len(there) > 1 else ''}: LabelMe files "
                "are people's work and are not overwritten; choose another --out or move them"
            )
        labelme = to_labelme(coco, tolerance, relative if images is not None else None)
        files = [atomic_write_text(out / path, json.dumps(data, indent=1)) for path, data in labelme.items()]
        written = sum(_object_count(data["shapes"]) for data in labelme.values())
    else:
        check_output_dir(out)
        labels, names = to_yolo(coco, tolerance)
        files = [atomic_write_text(out / path, text) for path, text in yolo_files(labels, names).items()]
        written = sum(text.count("\n") for text in labels.values()) + crowd
    return Converted(files, len(coco["images"]), total, total - written, crowd)


def checked_masks(coco: dict) -> list[tuple[dict, list[tuple[dict, tuple[int, int]]]]]:
    """(image record, [(annotation, the image's size)]) per image: each annotation checked
    as far as it can be without decoding it (its image, the image's size, a mask of that
    size), a bad one a `ConvertError` naming it, found before anything is written."""
    checked: dict[object, tuple[dict, list]] = {}
    for image in coco["images"]:
        if not isinstance(image, dict):
            raise ConvertError(f"image {image!r} is not a record")
        if image.get("id") in checked:
            raise ConvertError(f"image {image.get('id')!r}: a second image with this id")
        checked[image.get("id")] = image, []
    for ann in coco.get("annotations", []):
        try:
            if ann.get("image_id") not in checked:
                raise ValueError(f"its image_id {ann.get('image_id')!r} is not in 'images'")
            image, anns = checked[ann["image_id"]]
            size = _size(image, ann)
            if size is None:
                raise ValueError("its image has no width and height")
            seg = ann.get("segmentation")
            if not has_mask(ann):
                raise ValueError(NO_MASK)
            if isinstance(seg, dict):
                if tuple(int(v) for v in seg["size"]) != size or not rle.covers(rle.runs(seg), size):
                    raise ValueError(f"its RLE is no {size[0]}x{size[1]} mask, its image's size")
            else:
                polygon_arrays(seg)
            anns.append((ann, size))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConvertError(f"annotation {_ann_id(ann)!r}: {exc}") from None
    return list(checked.values())


def _ann_id(ann: object) -> object:
    return ann.get("id") if isinstance(ann, dict) else ann


def decode_mask(ann: dict, size: tuple[int, int]) -> np.ndarray:
    """A checked annotation's mask: RLE decoded, polygons filled (`fill_polygons`)."""
    seg = ann["segmentation"]
    if isinstance(seg, dict):
        return rle.decode(seg)
    return fill_polygons(polygon_arrays(seg), size)


def to_masks(coco: dict, out: Path) -> list[Path]:
    """One 8-bit PNG per annotation (255 inside), `out/<file_name>/<id>.png`: RLE decoded,
    polygons filled (`fill_polygons`), crowd regions too; every image gets its folder
    (empty if nothing was found in it), written whole (`replace_folder`). Every annotation
    is checked first; the masks are decoded one at a time."""
    plan, folders = [], set()
    for image, anns in checked_masks(coco):
        folder = relative_name(image, f"image_{image.get('id')}")
        if folder in folders:
            raise ConvertError(f"image {image.get('id')!r}: a second image with its file_name")
        folders.add(folder)
        pngs: dict[str, tuple] = {}
        for ann, size in anns:
            name = f"{ann.get('id')}.png"
            if "id" not in ann or "/" in name or "\\" in name or name.startswith("."):
                raise ConvertError(f"annotation {ann.get('id')!r}: its id cannot name a file")
            if name in pngs:
                raise ConvertError(
                    f"annotation {ann['id']!r}: a second annotation of image {ann['image_id']!r} with this id"
                )
            pngs[name] = ann, size
        plan.append((folder, pngs))
    check_output_dir(out)
    taken = [str(out / f) for f, _ in plan if (out / f).exists() and not (out / f).is_dir()]
    if taken:  # such as the images themselves, with --out their folder
        raise ConvertError(f"{taken[0]} is a file, where the masks of its image go: choose another --out")

    def fill(folder: Path, pngs: dict) -> None:
        for name, (ann, size) in pngs.items():
            Image.fromarray(decode_mask(ann, size).astype(np.uint8) * 255).save(folder / name, "PNG")

    files = []
    for folder, pngs in plan:
        final = replace_folder(out / folder, lambda partial, pngs=pngs: fill(partial, pngs))
        files += [final / name for name in pngs]
    return files


def label_maps(
    coco: dict, instances: bool = False
) -> tuple[list[PurePosixPath], Iterator[tuple[PurePosixPath, bytes | str]]]:
    """The label maps of `coco` (see `to_label_maps`) as files: their paths (classes.txt or
    instances.json last), and (path, content) of each, a PNG made only when it is reached.
    Every annotation is checked before this returns."""
    categories = _categories(coco)
    value_of = {c["id"]: i for i, c in enumerate(categories, start=1)}
    path_of = _label_paths(coco, ".png")
    plan = []
    for image, anns in checked_masks(coco):
        size = _size(image, {}) or (anns[0][1] if anns else None)
        if size is None:
            raise ConvertError(f"image {image.get('id')!r}: no width and height")
        for ann, _ in anns if not instances else ():
            _category(ann, value_of)
        if instances and len(anns) > MOST_LABELS:
            raise ConvertError(
                f"image {image.get('id')!r}: {len(anns)} annotations, more than a 16-bit instance map "
                f"holds ({MOST_LABELS})"
            )
        plan.append((path_of[image.get("id")], size, [ann for ann, _ in anns]))

    def png(size: tuple[int, int], anns: list[dict]) -> bytes:
        if instances:  # the k-th annotation of the image, as `label_map` numbers masks
            values, most = range(1, len(anns) + 1), len(anns)
        else:
            values, most = [_category(a, value_of) for a in anns], len(categories)
        labels = np.zeros(size, dtype=np.uint8 if most < 256 else np.uint16)
        # Areas from the RLE runs; a polygon's by filling it (again when painted: one mask
        # at a time in memory). The smaller painted over the larger.
        areas = [
            rle.area(a["segmentation"])
            if isinstance(a["segmentation"], dict)
            else int(decode_mask(a, size).sum())
            for a in anns
        ]
        for k in np.argsort(-np.asarray(areas, dtype=np.int64), kind="stable"):
            labels[decode_mask(anns[k], size)] = values[k]
        buf = io.BytesIO()
        Image.fromarray(labels).save(buf, "PNG")
        return buf.getvalue()

    def legend() -> tuple[PurePosixPath, str]:
        if not instances:
            names = ["background", *(c["name"] for c in categories)]
            return PurePosixPath("classes.txt"), "".join(f"{n}\n" for n in names)
        index = {
            str(path): [
                {
                    "value": k,
                    "id": ann.get("id"),
                    "category_id": ann.get("category_id", 1),
                    "iscrowd": int(bool(ann.get("iscrowd"))),
                }
                for k, ann in enumerate(anns, start=1)
            ]
            for path, _, anns in plan
        }
        return PurePosixPath("instances.json"), json.dumps(index, indent=1)

    def files() -> Iterator[tuple[PurePosixPath, bytes | str]]:
        for path, size, anns in plan:
            yield path, png(size, anns)
        yield legend()

    last = PurePosixPath("instances.json" if instances else "classes.txt")
    return [path for path, _, _ in plan] + [last], files()


def to_label_maps(coco: dict, out: Path, instances: bool = False, overwrite: bool = False) -> list[Path]:
    """One class-index PNG per image, `out/<file_name as .png>`: 0 background, i where the
    i-th category by id is (smaller masks painted over larger, as `label_map`; crowd
    regions too), 8-bit for up to 255 categories, else 16-bit; and `out/classes.txt`, line
    i naming value i (line 0: background). instances: one instance-index PNG per image
    instead, i where the image's i-th annotation in the file is (as `label_map` numbers
    the masks of one image: an `everything --json` file gives its `--label-map`), 8-bit
    for up to 255 annotations in the image, else 16-bit; and `out/instances.json`, each
    map's values with their annotation's id, category_id and iscrowd. Every annotation
    is checked first; a label map that exists is not overwritten (--out might be the
    images' folder) unless `overwrite`, and then only a file that is a label map (a
    one-channel PNG: a photo there is refused); maps of images no longer in `coco` stay."""
    paths, files = label_maps(coco, instances)
    check_output_dir(out)
    there = [out / path for path in paths[:-1] if (out / path).exists()]
    if there and not overwrite:
        more = f" (and {len(there) - 1} more)" if len(there) > 1 else ""
        raise ConvertError(
            f"{there[0]} exists{more}: label maps are not overwritten (--out may hold the images); "
            "choose another --out, remove them, or pass --overwrite to replace them"
        )
    for path in there:
        _check_label_map(path)
    return [
        atomic_write_bytes(out / path, data)
        if isinstance(data, bytes)
        else atomic_write_text(out / path, data)
        for path, data in files
    ]


def to_label_studio(
    coco: dict,
    image_root: str = LOCAL_FILES,
    as_annotations: bool = False,
    from_name: str = "tag",
    to_name: str = "image",
) -> tuple[list[dict], str]:
    """Label Studio tasks, one per image (in the file's order, also those with nothing in
    them), each mask a `brushlabels` region with Label Studio's brush RLE (exact, holes
    kept; crowd regions too), labelled with its category's name, its `score` kept; and
    the labeling config (an Image and a BrushLabels with every category) they fit.
    The regions are the task's prediction (model_version "mobilesam", score the mean of
    its regions'), or with `as_annotations` its annotation. A task's image is `image_root`
    + the URL-quoted file_name (Label Studio's local files by default). Masks with no
    pixel are left out. Every annotation is checked first (`label_studio_tasks` makes the
    tasks one at a time, for writing them as they come)."""
    tasks, config = label_studio_tasks(coco, image_root, as_annotations, from_name, to_name)
    return list(tasks), config


def label_studio_tasks(
    coco: dict,
    image_root: str = LOCAL_FILES,
    as_annotations: bool = False,
    from_name: str = "tag",
    to_name: str = "image",
) -> tuple[Iterator[dict], str]:
    """`to_label_studio`'s tasks as an iterator (each image's masks decoded and encoded
    when its task is reached), every annotation checked before this returns; and the
    labeling config."""
    from urllib.parse import quote
    from xml.sax.saxutils import quoteattr

    from .utils import lsrle
    from .visualize import palette

    categories = _categories(coco)
    name_of = {c["id"]: c["name"] for c in categories}
    plan = []
    for image, anns in checked_masks(coco):
        ids = []
        for k, (ann, _) in enumerate(anns):
            _category(ann, name_of)
            ids.append(str(ann.get("id", f"{image.get('id')}-{k}")))
            if ids[-1] in ids[:-1]:
                raise ConvertError(f"annotation {ids[-1]!r}: a second annotation of its image with this id")
        name = str(relative_name(image, f"image_{image.get('id')}"))
        plan.append((image_root + quote(name), list(zip(ids, anns))))

    def region(region_id: str, ann: dict, size: tuple[int, int]) -> dict | None:
        mask = decode_mask(ann, size)
        if not mask.any():
            return None
        out = {
            "id": region_id,
            "type": "brushlabels",
            "from_name": from_name,
            "to_name": to_name,
            "original_width": size[1],
            "original_height": size[0],
            "image_rotation": 0,
            "value": {
                "format": "rle",
                "rle": lsrle.encode(mask),
                "brushlabels": [_category(ann, name_of)],
            },
        }
        if is_number(ann.get("score")):
            out["score"] = float(ann["score"])
        return out

    def tasks() -> Iterator[dict]:
        for url, anns in plan:
            regions = [r for r in (region(i, ann, size) for i, (ann, size) in anns) if r is not None]
            task: dict = {"data": {to_name: url}}
            if as_annotations:
                task["annotations"] = [{"result": regions, "ground_truth": False}]
            else:
                scores = [r["score"] for r in regions if "score" in r]
                prediction = {"model_version": "mobilesam", "result": regions}
                if scores:
                    prediction["score"] = float(np.mean(scores))
                task["predictions"] = [prediction]
            yield task

    colors = palette(len(categories))
    labels = "".join(
        f'    <Label value={quoteattr(c["name"])} background="#{r:02x}{g:02x}{b:02x}"/>\n'
        for c, (r, g, b) in zip(categories, colors.tolist())
    )
    config = (
        f'<View>\n  <Image name={quoteattr(to_name)} value={quoteattr("$" + to_name)} zoom="true"/>\n'
        f"  <BrushLabels name={quoteattr(from_name)} toName={quoteattr(to_name)}>\n{labels}  </BrushLabels>\n</View>\n"
    )
    return tasks(), config


def label_studio_config_path(out: str | Path) -> Path:
    """Where `convert --to label-studio --out tasks.json` puts the labeling config:
    tasks.label_config.xml, as label-studio-converter names it."""
    return Path(out).with_suffix(".label_config.xml")


def _check_label_map(path: Path) -> None:
    """A `ConvertError` unless `path` is a one-channel PNG (8- or 16-bit), as label maps are."""
    try:
        with Image.open(path) as img:
            kind = (img.format, img.mode)
    except (OSError, ValueError):
        kind = None
    if kind not in (("PNG", "L"), ("PNG", "I;16"), ("PNG", "I")):
        what = f"a {kind[0]} image in mode {kind[1]}" if kind else "not an image Pillow can read"
        raise ConvertError(f"{path} is {what}, not a label map: --overwrite replaces label maps only")


def _object_count(shapes: list[dict]) -> int:
    """How many objects LabelMe shapes are (shapes of one group_id are one)."""
    return len({s["group_id"] if s["group_id"] is not None else ("shape", i) for i, s in enumerate(shapes)})


def _labels_to_coco(
    src: Path, out: Path, images: str | Path | None, classes: str | Path | None, image_root: str | None
) -> Converted:
    """A folder of label files (`label_files.read_folder`) or a Label Studio JSON export
    (`label_files.label_studio_to_coco`) to one COCO file `out`."""
    folder = src.is_dir()
    if folder and image_root is not None:
        raise ConvertError("--image-root is for a Label Studio export (a JSON file), not a folder")
    if folder and images is None:
        raise ConvertError("label files need --images DIR: their images' sizes place the boxes")
    if not folder and not src.is_file():
        raise ConvertError(
            f"{src}: no such file (--to coco reads a folder of YOLO, Pascal VOC or LabelMe label "
            "files, or a Label Studio JSON export)"
        )
    check_output_file(out)
    if folder:
        coco, kind, classes = read_folder(src, images, classes)
    else:
        coco, kind = label_studio_to_coco(src, images, image_root, classes), "label-studio"
    files = [atomic_write_text(out, json.dumps(coco))]
    left_out = coco.get("info", {}).get("left_out", {})
    return Converted(files, len(coco["images"]), len(coco["annotations"]), 0, 0, classes, kind, left_out)
