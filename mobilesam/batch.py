"""Segment everything in a folder of images: one COCO JSON for the set, resumable.

Layout of the output folder:
    annotations.json      COCO: images, annotations (RLE, scores, point, crop), categories,
                          and `failures` (file, error); rewritten at the end of every run
    parts/<file>.json     one finished image, written atomically as soon as it is done
    overlays/<file>.png   optional overlays, written before the part that marks the image done
    ids.json              each file's image id, given once: ids never change or repeat
                          (<file>: the file's name; with `recursive`, its path in the folder,
                          such as `cam1/0001.jpg`, which is also its COCO `file_name`)
    run.json              the options the results were made with (and the edges of the
                          per-image PNGs below)
    .lock                 held while a run writes here

Optional per-image PNGs, each in its own folder outside OUT (`ImageFiles`): masks in
MASKS/<file>/mask_000.png..., cutouts in CUTOUTS/<file>/cutout_000.png..., as
`save_masks` / `save_cutouts` write them (grown by `dilate`, or with the model's `soft`
edges); an image's folder appears whole (written beside it, then renamed), before its part.

A restart skips every image that has a part (and draws a missing overlay from the
part; an image whose PNG folder is missing is segmented again); a bad file is reported
and the rest go on. A second run on the same folder at
the same time is refused, so is a rerun with other options or another model (run.json
records both: model type, input size, precision, checkpoint checksum) unless `overwrite`, and
every output problem is found before the first image is segmented.
"""

from __future__ import annotations

import io
import json
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from .errors import MobileSAMError, OutputError, PromptError
from .highlevel import Segmenter, model_record_of, same_model
from .image_io import visible_files
from .options import EVERYTHING, check_decoder_precision, generator_kwargs
from .prompts import parse_float
from .result import check_soft
from .utils.files import atomic_write_text, check_output_dir, replace_folder


@dataclass
class BatchSummary:
    done: list[str] = field(default_factory=list)  # segmented in this run
    skipped: list[str] = field(default_factory=list)  # already done by an earlier run
    failed: dict[str, str] = field(default_factory=dict)  # file -> error
    annotations_path: Path | None = None
    interrupted: bool = False  # stopped by Ctrl-C (a rerun goes on)
    left_out: int = 0  # boxes-to-masks: boxes with no area inside their image (its `failures`)

    def line(self) -> str:
        end = " (interrupted)" if self.interrupted else ""
        if self.left_out:
            end += f"; {self.left_out} boxes left out, no area inside their image ('failures' lists them)"
        return f"done {len(self.done)}, skipped {len(self.skipped)} (already done), failed {len(self.failed)}{end}"


@dataclass(frozen=True)
class ImageFiles:
    """A folder job's per-image PNGs: under `masks_dir` and `cutouts_dir` (either, both or
    none) one folder per image, named by its key; `dilate` grows each mask first, `soft`
    gives the model's soft edge instead (not both; each needs a folder to shape)."""

    masks_dir: Path | None = None
    cutouts_dir: Path | None = None
    dilate: float = 0.0
    soft: bool = False

    def __post_init__(self) -> None:
        dilate = parse_float(self.dilate, "dilate", 0, 1024)
        object.__setattr__(self, "dilate", dilate)
        if (dilate or self.soft) and not self.roots:
            what = "soft" if self.soft else "dilate"
            raise OutputError(f"{what} shapes the per-image masks or cutouts: give masks_dir or cutouts_dir")
        check_soft(self.soft, dilate)

    @property
    def roots(self) -> list[Path]:
        return [root for _, root in self._folders()]

    def _folders(self) -> list[tuple[str, Path]]:
        """("masks" or "cutouts", its folder) for each kind of PNG asked for."""
        pairs = (("masks", self.masks_dir), ("cutouts", self.cutouts_dir))
        return [(kind, Path(root)) for kind, root in pairs if root is not None]

    @property
    def edges(self) -> dict | None:
        """What the PNGs' edges were made with (run.json), None without PNGs."""
        return {"dilate": self.dilate, "soft": self.soft} if self.roots else None

    def written(self, key: str) -> bool:
        return all((root / key).is_dir() for root in self.roots)

    def write(self, key: str, result: object) -> None:
        """The PNGs of image `key` from its `SegmentationResult` (kept logits for soft)."""
        for kind, root in self._folders():
            save = result.save_masks if kind == "masks" else result.save_cutouts
            replace_folder(
                root / key, lambda folder, save=save: save(folder, dilate=self.dilate, soft=self.soft)
            )

    def pack(self, result: object) -> bytes:
        """The PNGs `write` would write, as one uncompressed zip (`masks/mask_000.png`,
        `cutouts/cutout_000.png`, ...): made where the model ran (a Ray worker), written
        by `unpack` where the outputs are."""
        with tempfile.TemporaryDirectory() as tmp:
            kinds = [kind for kind, _ in self._folders()]
            replace(self, **{f"{kind}_dir": Path(tmp) / kind for kind in kinds}).write("image", result)
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as archive:
                for kind in kinds:
                    for png in sorted((Path(tmp) / kind / "image").iterdir()):
                        archive.write(png, f"{kind}/{png.name}")
            return buf.getvalue()

    def unpack(self, key: str, packed: bytes) -> None:
        """Write image `key`'s PNGs from `pack`'s zip, each folder whole as `write` does."""
        with zipfile.ZipFile(io.BytesIO(packed)) as archive:
            members = [(name.split("/"), name) for name in archive.namelist()]
            if any(len(parts) != 2 or parts[1] in ("", ".", "..") for parts, _ in members):
                raise MobileSAMError(f"{key}: not a zip of mask and cutout PNGs")
            for kind, root in self._folders():

                def fill(folder: Path, kind: str = kind) -> None:
                    for (head, file), name in members:
                        if head == kind:
                            (folder / file).write_bytes(archive.read(name))

                replace_folder(root / key, fill)


def run_options(options: dict | None) -> dict:
    """Every segment-everything option with its value (defaults filled in, values parsed),
    so that an option given at its default equals one left out."""
    options = dict(options or {})
    percent = parse_float(options.pop("input_size_percent", 100), "input_size_percent", 1, 100)
    precision = check_decoder_precision(options.pop("decoder_precision", None) or "float32")
    given = generator_kwargs(options)
    full = {o.name: given.get(o.generator, o.default) for o in EVERYTHING}
    return {**full, "input_size_percent": percent, "decoder_precision": precision}


class FolderJob:
    """One folder of images -> one output folder (see the module doc).

    options: `segment_everything` keyword arguments; overlays: also draw each image;
    overwrite: redo everything if OUT holds results made with other options;
    max_images: stop after this many newly segmented images (a job done in slices);
    recursive: the images of the folder's subfolders too (hidden ones and symlinked
    folders left out), each known by its path in the folder; files: per-image mask and
    cutout PNGs (`ImageFiles`).
    """

    def __init__(
        self,
        folder: str | Path,
        out_dir: str | Path,
        options: dict | None = None,
        overlays: bool = False,
        overwrite: bool = False,
        max_images: int | None = None,
        progress: Callable[[str], None] | None = None,
        recursive: bool = False,
        files: ImageFiles | None = None,
    ) -> None:
        self.uri = str(folder) if is_object_uri(folder) else None  # e.g. s3://bucket/photos/ (Ray only)
        self.folder, self.out = Path(folder), Path(out_dir)
        self.options = run_options(options)  # bad options fail here, before anything else
        self.overlays, self.overwrite, self.max_images = overlays, overwrite, max_images
        self.recursive = recursive
        self.image_files = files or ImageFiles()
        if recursive and (self.uri is not None or not self.folder.is_dir()):
            raise PromptError(f"recursive: {folder} is not a local folder")
        self.say = progress or (lambda msg: print(msg, file=sys.stderr))

    def run(self, sam: Segmenter) -> BatchSummary:
        """Segment every image not done yet. `sam`: a `MobileSAM` or any `Segmenter`."""
        if self.uri is not None:
            raise MobileSAMError(
                f"{self.uri}: object-store sources are read by Ray workers: add --engine ray"
            )
        return self.run_with(
            lambda files, ids, summary: self._segment(sam, files, ids, summary), model_record_of(sam)
        )

    def run_with(
        self, work: Callable[[list[Path], dict[str, int], BatchSummary], None], model: dict | None = None
    ) -> BatchSummary:
        """Checks, lock, options and ids, then `work(files, ids, summary)` (which segments
        the images without a part and saves each with `save`), then annotations.json.
        model: what makes the masks (`Segmenter.model_record`), checked as the options are.
        The Ray engine (ray_engine.py) runs its own `work` here."""
        files = self.files()
        if not files and self.uri is None and self.folder.is_dir():  # not an error: a day with no photos
            nested = not self.recursive and visible_files(self.folder, recursive=True)
            self.say(
                f"no files in {self.folder}"
                + ("; its subfolders hold some: pass --recursive" if nested else "")
            )
        self._check_paths()
        with JobLock(self.out / ".lock"):
            self._check_options(model)
            ids = self._image_ids(files)
            summary = BatchSummary()
            try:
                work(files, ids, summary)
            except KeyboardInterrupt:
                summary.interrupted = True
            finally:
                # Also on Ctrl-C or an error: the JSON covers everything finished so far.
                keys = [self.key(p) for p in files]
                summary.annotations_path = write_annotations(self.out, keys, summary.failed)
            return summary

    def files(self) -> list[Path]:
        """The images: every visible file of the folder (non-images are tried and reported,
        not ignored), or the paths listed one per line in a text file."""
        if self.uri is not None:
            return list_uri(self.uri)
        if self.folder.is_dir():
            return visible_files(self.folder, self.recursive)
        if not self.folder.is_file():
            raise MobileSAMError(f"not a folder or a list file: {self.folder}")
        lines = [line.strip() for line in self.folder.read_text(encoding="utf-8-sig").splitlines()]
        files = [Path(x) if Path(x).is_absolute() else self.folder.parent / x for x in lines if x]
        names = [p.name for p in files]
        clash = sorted({n for n in names if names.count(n) > 1})
        if clash:
            raise MobileSAMError(
                f"{self.folder} lists several files named {clash[:3]}: names identify images"
            )
        return files

    def key(self, path: Path) -> str:
        """What identifies an image: its file name, or with `recursive` its path in the
        folder (`cam1/0001.jpg`); ids, parts, overlays and the COCO `file_name` use it."""
        return path.relative_to(self.folder).as_posix() if self.recursive else path.name

    def overlay_path(self, path: Path) -> Path:
        return self.out / "overlays" / f"{self.key(path)}.png"

    def done(self, path: Path) -> dict | None:
        """The saved part of an image, None if it is not done."""
        return _read_part(self.out / "parts" / f"{self.key(path)}.json")

    def save(self, path: Path, coco: dict) -> None:
        """Mark an image done: its COCO image and annotations, written atomically."""
        part = {
            "image": {**coco["images"][0], "file_name": self.key(path)},
            "annotations": coco["annotations"],
        }
        atomic_write_text(self.out / "parts" / f"{self.key(path)}.json", json.dumps(part))

    def _check_paths(self) -> None:
        # A list file names its images, and an object store is no local folder: nothing to
        # keep apart. Inside the folder, outputs would be listed as images by the next run.
        root = self.folder.resolve() if self.uri is None and self.folder.is_dir() else None
        outputs = [
            (self.out, "output folder", "-o"),
            *((d, "PNG folder", "folder") for d in self.image_files.roots),
        ]
        for path, what, flag in outputs:
            if root is not None and (path.resolve() == root or root in path.resolve().parents):
                raise OutputError(
                    f"the {what} {path} is inside the input folder {self.folder}: use another {flag}"
                )
            check_output_dir(path)
        check_output_dir(self.out / "parts")

    def _check_options(self, model: dict | None) -> None:
        """Refuse results made with other options, another model, or PNGs made with other
        edges (with `overwrite`: forget them, every image is done again); record these in
        run.json."""
        record = self.out / "run.json"
        previous = read_json(record)
        made = dict((previous or {}).get("options") or {})
        made.setdefault("decoder_precision", "float32")  # records made before the option existed
        asked = dict(self.options)
        # The PNGs' edges carry over runs that write none; compared when both runs write some.
        made_edges, edges = (previous or {}).get("edges"), self.image_files.edges
        if made_edges and edges:
            made, asked = made | made_edges, asked | edges
        # The model likewise (`same_model`): its fields named where they differ.
        made_model = (previous or {}).get("model")
        if not same_model(made_model, model):
            made |= {f"model {k}": v for k, v in made_model.items()}
            asked |= {f"model {k}": v for k, v in model.items()}
        if previous is not None and made != asked:
            if not self.overwrite:
                diff = sorted(k for k in set(made) | set(asked) if made.get(k) != asked.get(k))
                raise PromptError(
                    f"{self.out} holds results made with other options ({', '.join(diff)}); "
                    "pass --overwrite (overwrite=True) to redo every image, or use another output folder"
                )
            for part in (self.out / "parts").rglob("*.json"):
                part.unlink()
            for overlay in (self.out / "overlays").rglob("*.png"):
                overlay.unlink()
        current = {"options": self.options}
        if edges or made_edges:
            current["edges"] = edges or made_edges
        if model or made_model:
            current["model"] = model or made_model
        if previous != current:
            atomic_write_text(record, json.dumps(current, indent=2))

    def _image_ids(self, files: list[Path]) -> dict[str, int]:
        """Ids by `key`, kept in ids.json: new files get new ids, none is ever reused."""
        path = self.out / "ids.json"
        ids = read_json(path) or {}
        added = [self.key(p) for p in files if self.key(p) not in ids]
        if added:
            top = max(ids.values(), default=0)
            ids.update({name: top + i for i, name in enumerate(added, start=1)})
            atomic_write_text(path, json.dumps(ids, indent=1))
        return ids

    def _segment(self, sam: Segmenter, files: list[Path], ids: dict[str, int], summary: BatchSummary) -> None:
        for index, path in enumerate(files, start=1):
            overlay, key = self.overlay_path(path), self.key(path)
            part = self.done(path)
            if part is not None and self.image_files.written(key):
                if self.overlays and not overlay.is_file():
                    overlay_from_part(path, part, overlay)
                summary.skipped.append(key)
                continue
            if self.max_images is not None and len(summary.done) >= self.max_images:
                break
            start = time.perf_counter()
            try:
                result = sam.segment_everything(path, keep_logits=self.image_files.soft, **self.options)
            except (MobileSAMError, OSError) as exc:
                # A bad or unreadable image must not end a long job. Anything else is a bug
                # and surfaces as one; the annotations are still written (see `run`).
                error = failure_text(exc)
                summary.failed[key] = error
                self.say(f"[{index}/{len(files)}] {key}: FAILED: {error}")
                continue
            # Before the part: a part means everything for the image is written.
            self.image_files.write(key, result)
            if self.overlays:
                result.save_overlay(overlay)
            self.save(path, result.to_coco(image_id=ids[key]))
            summary.done.append(key)
            seconds = time.perf_counter() - start
            self.say(f"[{index}/{len(files)}] {key}: {len(result)} masks in {seconds:.1f} s")


def failure_text(exc: Exception) -> str:
    """What a batch job records for an image it could not segment: a `MobileSAMError`'s
    message (it names the problem), an I/O error with its type."""
    return str(exc) if isinstance(exc, MobileSAMError) else f"{type(exc).__name__}: {exc}"


def segment_folder(
    sam: Segmenter,
    folder: str | Path,
    out_dir: str | Path,
    options: dict | None = None,
    overlays: bool = False,
    max_images: int | None = None,
    progress: Callable[[str], None] | None = None,
    overwrite: bool = False,
    recursive: bool = False,
    files: ImageFiles | None = None,
) -> BatchSummary:
    """`FolderJob(folder, out_dir, ...).run(sam)` in one call."""
    job = FolderJob(folder, out_dir, options, overlays, overwrite, max_images, progress, recursive, files)
    return job.run(sam)


class JobLock:
    """An exclusive lock on a file, held for a `with` block; refused at once if taken."""

    def __init__(self, path: Path) -> None:
        self.path, self.file = path, None

    def __enter__(self) -> JobLock:
        self.file = open(self.path, "a")  # held open for the lock's lifetime
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            return self
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.file.close()
            raise OutputError(
                f"another mobilesam run is writing to {self.path.parent}; wait for it to end"
            ) from None
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()  # closing releases the lock


def read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _read_part(part: Path) -> dict | None:
    """A finished image's part file, or None if it is missing or not a complete part."""
    data = read_json(part)
    return data if data is not None and "image" in data and "annotations" in data else None


def overlay_from_part(image_path: Path, part: dict, overlay: Path) -> None:
    """Draw a finished image's overlay from its saved masks (no segmentation again)."""
    from .image_io import load_image

    result_from_part(load_image(image_path), part).save_overlay(overlay)


def result_from_part(image, part: dict):
    """A `SegmentationResult` of `image` (HxWx3 uint8) with a saved part's masks and scores."""
    import numpy as np

    from .result import SegmentationResult
    from .utils import rle

    anns = part["annotations"]
    masks = np.array([rle.decode(a["segmentation"]) for a in anns], dtype=bool).reshape(-1, *image.shape[:2])
    scores = np.array([a.get("score", 0.0) for a in anns], dtype=np.float32)
    return SegmentationResult(image, masks, scores, np.zeros(len(anns), np.int64), None)


def write_annotations(out_dir: Path, keys: list[str], failed: dict[str, str]) -> Path:
    """Merge the finished parts of the images `keys` (`FolderJob.key`) into one COCO JSON,
    images in folder order, fresh annotation ids."""
    images, annotations = [], []
    for key in keys:
        data = _read_part(out_dir / "parts" / f"{key}.json")
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


def is_object_uri(source: object) -> bool:
    """s3://, gs://, file://... (what pyarrow's filesystems read); http(s) is not a folder."""
    text = str(source)
    return "://" in text and not text.startswith(("http://", "https://"))


class RemoteFile(str):
    """An object-store image: the URI itself, with `name` as a Path has it."""

    @property
    def name(self) -> str:
        return self.rstrip("/").rsplit("/", 1)[-1]


def list_uri(uri: str) -> list[RemoteFile]:
    """The visible files directly under an object-store prefix, sorted (pyarrow.fs; the
    scheme's filesystem library, such as s3fs support in pyarrow, must be installed)."""
    try:
        from pyarrow import fs
    except ImportError:
        raise MobileSAMError("reading object-store URIs needs pyarrow (the ray extra)") from None
    try:
        filesystem, root = fs.FileSystem.from_uri(uri)
        infos = filesystem.get_file_info(fs.FileSelector(root, recursive=False))
    except (OSError, ValueError) as exc:  # pyarrow's errors for unknown schemes and missing paths
        raise MobileSAMError(f"cannot list {uri}: {exc}") from exc
    scheme = uri.split("://", 1)[0]
    names = sorted(i.path for i in infos if i.type == fs.FileType.File and not i.base_name.startswith("."))
    return [RemoteFile(f"{scheme}://{p}") for p in names]
