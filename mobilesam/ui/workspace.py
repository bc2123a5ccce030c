"""The images the UI may serve and the annotations it saves, with nothing else reachable.

Images are looked up by name in a listing made by the server (never by joining a path
from a request), so `../`, absolute paths and symbolic links that leave the folder
cannot name a file. Annotations: one JSON file per image in the output folder, written
atomically, with a revision number; a save based on an older revision is refused
(`Conflict`), so two tabs never overwrite each other's work unseen.
"""

from __future__ import annotations

import functools
import json
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..box_job import check_size, is_bbox, usable_boxes
from ..convert import NO_MASK, has_mask, polygon_arrays
from ..errors import ImageLoadError, MobileSAMError, PromptError
from ..image_io import IMAGE_SUFFIXES, open_image, upright_size, visible_files
from ..prompts import is_number
from ..utils import rle
from ..utils.files import atomic_write_bytes, atomic_write_text
from ..utils.polygons import fill_polygons
from .strokes import check_strokes

MAX_UPLOAD_BYTES = 50 << 20
MAX_LABEL = 200  # characters of a label (a class name)
# An upload is kept under its format's suffix (another format is a .png: Pillow reads by content).
_SUFFIX_OF = {
    "JPEG": ".jpg",
    "PNG": ".png",
    "WEBP": ".webp",
    "BMP": ".bmp",
    "TIFF": ".tif",
    "AVIF": ".avif",
    "HEIF": ".heic",
}
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
# (image name, its path, N x 4 XYXY boxes) -> per box (HxW mask, mask_id 1-3, the 3 scores)
BoxMasks = Callable[[str, Path, np.ndarray], list[tuple[np.ndarray, int, np.ndarray]]]


class NotFound(MobileSAMError):
    pass


class Conflict(MobileSAMError):
    def __init__(self, revision: int) -> None:
        super().__init__(f"the annotations were saved elsewhere meanwhile (revision {revision}): reload")
        self.revision = revision


class BadRequest(MobileSAMError):
    pass


@dataclass(frozen=True)
class ImageEntry:
    name: str
    path: Path


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve(strict=True).relative_to(root)
        return True
    except (OSError, ValueError):
        return False


class Workspace:
    """A folder of images (or one image, or an upload folder) and its annotation store.
    `classes`: the label names offered by the page, in the order the exports number them
    (labels outside it, saved earlier or by a script, are kept and numbered after them)."""

    def __init__(
        self,
        source: str | Path | None,
        out: str | Path | None = None,
        recursive: bool = False,
        classes: list[str] | None = None,
    ) -> None:
        self.classes = _check_classes(classes)
        self.uploads = source is None
        self.recursive = recursive
        if source is None:
            self.root = Path(out or "mobilesam-ui").resolve()
            self.root.mkdir(parents=True, exist_ok=True)
            self.only = None
        else:
            source = Path(source)
            if not source.exists():
                raise MobileSAMError(f"{source} does not exist")
            self.root = (source if source.is_dir() else source.parent).resolve()
            self.only = None if source.is_dir() else source.resolve().name
        if recursive and (self.only is not None or self.uploads):
            raise MobileSAMError("recursive: for a folder of images, not one image or uploads")
        self.out = Path(out).resolve() if out else self.root / ".mobilesam"
        self.out.mkdir(parents=True, exist_ok=True)
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._listed: dict[str, ImageEntry] = {}  # the last listing, name -> entry, in order
        self._states: dict[str, tuple[tuple[int, int], str]] = {}  # name -> (its file's mtime, size), state

    def images(self) -> list[ImageEntry]:
        """The images in the root folder (with `recursive`, in its subfolders too, named by
        their path in it: `cam1/0001.jpg`), sorted; symlinks only if they stay inside."""
        entries = []
        for path in visible_files(self.root, self.recursive):
            if path.suffix.lower() not in IMAGE_SUFFIXES or not _inside(path, self.root):
                continue
            name = path.relative_to(self.root).as_posix()
            if self.only is not None and name != self.only:
                continue
            if path.is_file() and not (self.recursive and _inside(path, self.out)):
                entries.append(ImageEntry(name, path))
        self._listed = {e.name: e for e in entries}
        return entries

    def image(self, name: str) -> ImageEntry:
        """Image `name` as `images()` lists it. Every request names one, so it comes from
        the last listing while its file is still a file inside the folder (listing a
        folder of 10,000 photos took 150-300 ms); a name not listed then (an upload, a
        file added since) lists the folder again."""
        entry = self._listed.get(name)
        if entry is not None and entry.path.is_file() and _inside(entry.path, self.root):
            return entry
        for entry in self.images():
            if entry.name == name:
                return entry
        raise NotFound(f"no image named {name!r} in this workspace")

    def next_image(self, name: str) -> ImageEntry | None:
        """The image after listed image `name` in the last listing (None after the last)."""
        names = list(self._listed)
        i = names.index(name) if name in self._listed else len(names)
        return self._listed[names[i + 1]] if i + 1 < len(names) else None

    # ---- annotations ----

    def _file(self, name: str) -> Path:
        return self.out / f"{name}.json"

    def _lock(self, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(name, threading.Lock())

    def load(self, name: str) -> dict:
        """The saved annotations of image `name` ({"revision": 0, "objects": []} if none)."""
        return self.saved(self.image(name).name)

    def saved(self, name: str) -> dict:
        """`load` for a name taken from `images()` (the folder is not listed again)."""
        path = self._file(name)
        if not path.is_file():
            return {"image": name, "revision": 0, "objects": []}
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise MobileSAMError(f"{path} is unreadable ({exc}); move it away to start over") from exc

    def save(self, name: str, revision: int, objects: list[dict]) -> int:
        """Replace the annotations if `revision` is the saved one; returns the new revision."""
        entry = self.image(name)
        return self._save(entry.name, revision, objects, upright_size(entry.path))  # the header only

    def _save(
        self, name: str, revision: int, objects: list[dict], size: tuple[int, int], reviewed: bool = True
    ) -> int:
        """`save` for a listed image `name` of `size` (h, w); `reviewed`: saved by a person
        (every save from the page), not by an import that awaits review."""
        checked = [_check_object(o, i, size) for i, o in enumerate(objects)]
        with self._lock(name):
            current = self.saved(name)["revision"]
            if revision != current:
                raise Conflict(current)
            data = {"image": name, "revision": current + 1, "objects": checked, "reviewed": reviewed}
            atomic_write_text(self._file(name), json.dumps(data))
        return current + 1

    def state(self, name: str) -> str:
        """Listed image `name`: "" (no saved objects), "review" (objects imported, not yet
        saved by a person) or "done". Asked for every image each time the page lists the
        folder, so it is kept while the file's mtime and size stay (not parsed again)."""
        try:
            st = self._file(name).stat()
        except FileNotFoundError:
            return ""
        key = (st.st_mtime_ns, st.st_size)
        hit = self._states.get(name)
        if hit is not None and hit[0] == key:
            return hit[1]
        data = self.saved(name)
        state = "" if not data["objects"] else "done" if saved_by_person(data) else "review"
        self._states[name] = (key, state)
        return state

    def done(self, name: str) -> bool:
        """Whether listed image `name` has saved objects, reviewed or not."""
        return self.state(name) != ""

    def import_coco(self, coco: dict, box_masks: BoxMasks | None = None) -> dict[str, list[str]]:
        """Seed the annotations of images nobody has labelled yet from a COCO dict (the
        folder job's, `boxes-to-masks`', another tool's): one object per annotation, its
        category name as label, its prompt kept for refining (the prompt a mobilesam file
        records, else the point of segment everything, else the bbox as a box). Images
        with saved objects are never touched; each image is saved as soon as it is
        imported (its state "review" until a person saves it), so an interrupted import
        goes on where it stopped when run again.

        An annotation with a box and no mask (a detector's) skips its image, unless
        `box_masks(name, path, boxes)` makes masks from XYXY boxes (the UI's model,
        `ModelService.box_masks`); a box with no area inside its image is then dropped.
        Returns the file names by outcome: imported, kept (already labelled), empty (no
        annotations), unknown (not in this workspace), skipped (why), and the dropped
        annotations (why)."""
        names = {e.name: e for e in self.images()}
        categories = {c.get("id"): c.get("name") for c in coco.get("categories") or [] if isinstance(c, dict)}
        by_image: dict[object, list[dict]] = {}
        for ann in coco.get("annotations") or []:
            if isinstance(ann, dict):
                by_image.setdefault(ann.get("image_id"), []).append(ann)
        outcome: dict[str, list[str]] = {
            key: [] for key in ("imported", "kept", "empty", "unknown", "skipped", "dropped")
        }
        for image in coco.get("images") or []:
            name = image.get("file_name") if isinstance(image, dict) else None
            name = name.replace("\\", "/") if isinstance(name, str) else name  # a Windows tool's path
            anns = by_image.get(image.get("id"), []) if isinstance(image, dict) else []
            if name not in names:
                outcome["unknown"].append(str(name))
                continue
            saved = self.saved(name)
            if not anns or saved["objects"]:
                outcome["kept" if anns else "empty"].append(name)
                continue
            try:
                size = upright_size(names[name].path)
                objects, dropped = _import_objects(names[name], image, anns, size, categories, box_masks)
                if not objects:
                    raise ValueError("no annotation could be used")
                self._save(name, saved["revision"], objects, size, reviewed=False)  # listed once
            except (MobileSAMError, ValueError, KeyError, TypeError) as exc:
                outcome["skipped"].append(f"{name}: {exc}")
                continue
            outcome["imported"].append(name)
            outcome["dropped"] += [f"{name}: {why}" for why in dropped]
        return outcome

    # ---- uploads ----

    def add_upload(self, filename: str, data: bytes) -> str:
        """Store an uploaded image (checked to decode) under a safe, new name."""
        if not self.uploads:
            raise BadRequest("uploads are accepted only when the server was started without a folder")
        if len(data) > MAX_UPLOAD_BYTES:
            raise BadRequest(f"upload over the {MAX_UPLOAD_BYTES >> 20} MB limit")
        import io

        try:
            image = open_image(io.BytesIO(data), filename or "upload")
        except ImageLoadError as exc:
            raise BadRequest(str(exc)) from exc
        stem = _SAFE_NAME.sub("_", Path(filename or "upload").stem)[:60].strip("._") or "upload"
        suffix = _SUFFIX_OF.get(image.format or "", ".png")
        name = f"{stem}-{uuid.uuid4().hex[:8]}{suffix}"
        atomic_write_bytes(self.root / name, data)
        return name


def saved_by_person(data: dict) -> bool:
    """Whether annotations (`Workspace.saved`) were saved by a person: saved at all, and not
    by an import awaiting review (files saved before the review state existed count)."""
    return data["revision"] > 0 and data.get("reviewed", True)


def _check_classes(classes: list[str] | None) -> list[str] | None:
    if classes is None:
        return None
    names = [str(c) for c in classes]
    if not names:
        raise MobileSAMError("the class list is empty")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise MobileSAMError(f"class names listed twice: {twice}")
    if any(not n or len(n) > MAX_LABEL for n in names):
        raise MobileSAMError(f"class names must be 1 to {MAX_LABEL} characters")
    return names


def _import_objects(
    entry: ImageEntry, image: dict, anns: list[dict], size: tuple[int, int], categories: dict, box_masks
) -> tuple[list[dict], list[str]]:
    """The UI objects of one image's COCO annotations, in their order, and why any were
    dropped (a box with no area inside the image). Masks from boxes need `box_masks`."""
    objects: list[dict | None] = []
    boxed, dropped = [], []  # boxed: (index in objects, annotation, XYXY box clipped to the image)
    for ann in anns:
        if box_masks is None or has_mask(ann):
            objects.append(_imported(ann, size, categories))
            continue
        if not is_bbox(ann.get("bbox")):
            raise ValueError(f"annotation {ann.get('id')!r}: no segmentation and no [x, y, w, h] bbox")
        box, _, unusable = usable_boxes([ann], size)
        dropped += [f"annotation {ann_id!r}: {why}" for ann_id, why in unusable]
        if box:
            boxed.append((len(objects), ann, box[0]))
            objects.append(None)
    if boxed:
        check_size(image, size)  # the boxes are in the COCO file's pixels
        masks = box_masks(entry.name, entry.path, np.array([box for _, _, box in boxed], float))
        for (i, ann, box), (mask, mask_id, scores) in zip(boxed, masks):
            obj = {"label": _label(ann, categories), "rle": rle.encode(mask), "source": "import", "box": box}
            obj.update(mask_id=mask_id, score=float(scores[mask_id - 1]))
            if is_number(ann.get("score")):
                obj["box_score"] = ann["score"]  # the detector's confidence; `score` is the mask's
            objects[i] = obj
    return [{**obj, "id": i + 1} for i, obj in enumerate(objects)], dropped


def _label(ann: dict, categories: dict) -> str:
    return str(categories.get(ann.get("category_id")) or "object")


def _imported(ann: dict, size: tuple[int, int], categories: dict) -> dict:
    """A UI object from a COCO annotation of an image of `size` (h, w): RLE or polygons."""
    if not has_mask(ann):
        raise ValueError(f"annotation {ann.get('id')!r}: {NO_MASK}")
    seg = ann["segmentation"]
    if isinstance(seg, dict):
        if not isinstance(seg.get("counts"), str):  # uncompressed RLE: a list of run lengths
            seg = rle.encode(rle.decode(seg))
        seg = {"size": [int(v) for v in seg["size"]], "counts": seg["counts"]}
    else:
        try:
            seg = rle.encode(fill_polygons(polygon_arrays(seg), size))
        except ValueError as exc:
            raise ValueError(f"annotation {ann.get('id')!r}: {exc}") from None
    if list(seg["size"]) != list(size):
        raise ValueError(f"annotation {ann.get('id')!r}: mask {seg['size']} is not the image's {list(size)}")
    obj = {"label": _label(ann, categories), "rle": seg, "source": "import"}
    if is_number(ann.get("score")):
        obj["score"] = ann["score"]
    prompt = ann.get("prompt") or {}
    if prompt.get("box"):
        obj["box"] = prompt["box"]
    if prompt.get("points"):
        obj["points"] = [[*p, lab] for p, lab in zip(prompt["points"], prompt["labels"])]
    elif ann.get("point_coords"):
        obj["points"] = [[*ann["point_coords"][0], 1]]
    elif not prompt and isinstance(ann.get("bbox"), list) and len(ann["bbox"]) == 4:
        x, y, w, h = ann["bbox"]
        obj["box"] = [x, y, x + w, y + h]
    return obj


def _check_object(obj: dict, i: int, size: tuple[int, int]) -> dict:
    """One saved object of an image of `size` (h, w), checked field by field (the client is
    not trusted)."""
    if not isinstance(obj, dict):
        raise BadRequest(f"object {i} is not a JSON object")
    seg = check_rle(obj.get("rle"), size, f"object {i}: ")
    label = obj.get("label", "object")
    if not isinstance(label, str) or len(label) > MAX_LABEL:
        raise BadRequest(f"object {i}: label must be a string of at most {MAX_LABEL} characters")
    out = {"label": label or "object", "rle": seg}
    for key in ("id", "color", "source"):
        if isinstance(obj.get(key), (str, int)):
            out[key] = obj[key]
    for key in ("score", "box_score"):  # information only: a NaN one is left out
        if is_number(obj.get(key)):
            out[key] = float(obj[key])
    if isinstance(obj.get("mask_id"), int):
        out["mask_id"] = obj["mask_id"]
    if isinstance(obj.get("points"), list):
        points = [p for p in obj["points"] if isinstance(p, list) and len(p) == 3]
        out["points"] = [_finite(p, f"object {i}: points") for p in points]
    if isinstance(obj.get("box"), list) and len(obj["box"]) == 4:
        out["box"] = _finite(obj["box"], f"object {i}: box")
    if obj.get("strokes"):
        try:
            out["strokes"] = check_strokes(obj["strokes"])
        except PromptError as exc:
            raise BadRequest(f"object {i}: {exc}") from None
    return out


def _finite(values: list, where: str) -> list[float]:
    """A prompt's numbers (a point's x, y, label; a box), each a finite number, or BadRequest."""
    if not all(is_number(v) for v in values):
        raise BadRequest(f"{where} must hold finite numbers, got {values!r}")
    return [float(v) for v in values]


def check_rle(seg: object, size: tuple[int, int], where: str = "") -> dict:
    """A COCO compressed RLE sent by the client for an image of `size` (h, w), checked
    (BadRequest otherwise): {"size": [h, w], "counts": str} whose runs cover exactly
    h x w pixels."""
    if not (isinstance(seg, dict) and isinstance(seg.get("counts"), str) and _size_ok(seg.get("size"))):
        raise BadRequest(f"{where}rle must be {{'size': [h, w], 'counts': str}}")
    if not _counts_ok(seg["counts"], *seg["size"]):
        raise BadRequest(
            f"{where}rle counts are malformed or do not cover a {seg['size'][0]}x{seg['size'][1]} mask"
        )
    if list(seg["size"]) != list(size):
        raise BadRequest(f"{where}mask size {seg['size']} is not the image's {list(size)}")
    return {"size": [int(v) for v in seg["size"]], "counts": seg["counts"]}


@functools.lru_cache(maxsize=4096)
def _counts_ok(counts: str, h: int, w: int) -> bool:
    """Whether `counts` is COCO RLE of an h x w mask. Cached: every save sends every object
    of the image again, and only the changed ones need decoding."""
    try:
        runs = rle.string_to_counts(counts)
    except (ValueError, UnicodeEncodeError):
        return False
    return rle.covers(runs, (h, w))


def _size_ok(size: object) -> bool:
    return (
        isinstance(size, list)
        and len(size) == 2
        and all(isinstance(v, int) and 0 < v < 1 << 17 for v in size)
    )


def mask_of(obj: dict) -> np.ndarray:
    return rle.decode(obj["rle"])
