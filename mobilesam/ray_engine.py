"""Segment everything, masks for boxes and the teacher cache on Ray Data, when one machine
is not enough.

    mobilesam everything SOURCE -o OUT --engine ray [--address auto] [--num-workers N]
        [--gpus-per-worker F] [--cpus-per-worker N] [--batch-size N]
    mobilesam boxes-to-masks COCO.json --images DIR -o OUT --engine ray (same options)
    mobilesam distill cache ... --engine ray (same options) [--precision P] [--compile]

Ray tasks read and decode the images; an actor pool runs the model (loaded once per
worker, on a GPU when the workers have one); the driver streams the results back and
writes them. Segment everything writes exactly what folder mode writes (`batch.py`: one
part per image, the same ids, options record, lock and annotations.json; overlays and
per-image mask and cutout PNGs made by the workers), so the two engines resume each
other's runs. The teacher cache's workers write their own shard files (one per batch)
and index fragments; the driver merges them into index.json (also the fragments a killed
run left). Needs the `ray` extra.
"""

from __future__ import annotations

import io
import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .batch import BatchSummary, FolderJob, ImageFiles
from .box_job import BoxJob
from .errors import ImageLoadError, MobileSAMError, missing_extra
from .utils.files import atomic_write_bytes


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide: `address` None starts a local Ray (or joins the one running),
    "auto" or HOST:PORT joins a cluster; one model per worker."""

    address: str | None = None
    num_workers: int = 1
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    batch_size: int = 4

    def __post_init__(self) -> None:
        if (
            self.num_workers < 1
            or self.batch_size < 1
            or self.gpus_per_worker < 0
            or self.cpus_per_worker <= 0
        ):
            raise MobileSAMError(
                "--num-workers and --batch-size must be >= 1, --gpus-per-worker >= 0, --cpus-per-worker > 0"
            )


def _ray():
    try:
        import ray
        import ray.data
    except ImportError:
        raise missing_extra("ray (Ray Data)", "ray") from None
    return ray


def connect(options: RayOptions) -> float:
    """Join or start Ray once per process; returns the seconds it took. The workers must
    leave CPUs for the decoding tasks, or the pipeline waits for ever."""
    ray = _ray()
    start = time.perf_counter()
    if not ray.is_initialized():
        kwargs = {"include_dashboard": False, "log_to_driver": False}
        if options.address is None:
            kwargs["num_cpus"] = os.cpu_count()
        ray.init(address=options.address, **kwargs)
    cpus = ray.cluster_resources().get("CPU", 0)
    # Seen here: a pool asking for more than the cluster has never starts, and one worker
    # taking every CPU waits for ever (Ray Data keeps some for its other tasks).
    if options.num_workers * options.cpus_per_worker > cpus or (
        cpus > 1 and options.cpus_per_worker > cpus - 1
    ):
        raise MobileSAMError(
            f"{options.num_workers} workers x {options.cpus_per_worker:g} CPUs do not fit the cluster's "
            f"{cpus:g} CPUs with room for decoding: use fewer workers or a smaller --cpus-per-worker"
        )
    return time.perf_counter() - start


def _decode(row: dict) -> dict:
    """A Ray task: one file (a path, or an object-store URI read with pyarrow.fs) -> its
    HxWx3 uint8 pixels, or the reason it cannot be used."""
    from .batch import is_object_uri
    from .image_io import load_image, open_image, pil_to_rgb

    try:
        if is_object_uri(row["path"]):
            from pyarrow import fs

            filesystem, path = fs.FileSystem.from_uri(row["path"])
            with filesystem.open_input_stream(path) as f:
                data = f.read()
            image = pil_to_rgb(open_image(io.BytesIO(data), row["name"]))
        else:
            image = load_image(row["path"])
        error = ""
    except (ImageLoadError, OSError) as exc:
        image, error = np.zeros((1, 1, 3), np.uint8), str(exc)
    return {**row, "image": image, "error": error}


class EverythingWorker:
    """One model per Ray actor: decoded images -> each image's COCO part as JSON, its
    overlay and its per-image PNGs (`ImageFiles.pack`) when asked for."""

    def __init__(
        self,
        model: dict,
        options: dict,
        threads: int,
        overlays: bool = False,
        files: ImageFiles | None = None,
    ) -> None:
        import torch

        from .api import MobileSAM

        torch.set_num_threads(max(1, threads))
        self.sam = MobileSAM(**model)
        self.options, self.overlays, self.files = options, overlays, files or ImageFiles()

    def __call__(self, batch: dict) -> dict:
        parts, errors, overlays, files = [], [], [], []
        for name, image_id, image, error in zip(
            batch["name"], batch["image_id"], batch["image"], batch["error"]
        ):
            answer = ("", b"", b"")  # part, overlay, PNGs: all of them or none
            if not error:
                try:
                    result = self.sam.segment_everything(
                        np.asarray(image), keep_logits=self.files.soft, **self.options
                    )
                    result.file_name = str(name)
                    answer = (
                        json.dumps(result.to_coco(image_id=int(image_id))),
                        _png(result) if self.overlays else b"",
                        self.files.pack(result) if self.files.roots else b"",
                    )
                except MobileSAMError as exc:  # a user-input problem with this image; a bug raises
                    error = str(exc)
            for column, value in zip((parts, overlays, files), answer):
                column.append(value)
            errors.append(str(error))
        return {**_results(batch["name"], parts, overlays, errors), "files": np.array(files, dtype=object)}


def _results(names, parts: list, overlays: list, errors: list) -> dict:
    """A worker's batch of answers: each image's part (JSON), overlay (PNG) or error."""
    return {
        "name": names,
        "part": np.array(parts, dtype=object),
        "overlay": np.array(overlays, dtype=object),
        "error": np.array(errors, dtype=object),
    }


def _png(result) -> bytes:
    """A result's overlay as PNG bytes: drawn by the worker, written by the driver."""
    buf = io.BytesIO()
    result.overlay().save(buf, "PNG")
    return buf.getvalue()


def _draw_saved(row: dict) -> dict:
    """A Ray task: the overlay of an image finished earlier, from its saved part."""
    from .batch import result_from_part

    decoded = _decode(row)
    if decoded["error"]:
        return {"name": row["name"], "overlay": b"", "error": decoded["error"]}
    png = _png(result_from_part(decoded["image"], json.loads(row["part"])))
    return {"name": row["name"], "overlay": png, "error": ""}


def _actor_pool(ds, worker: type, constructor_kwargs: dict, options: RayOptions):
    ray = _ray()
    return ds.map_batches(
        worker,
        fn_constructor_kwargs=constructor_kwargs,
        batch_size=options.batch_size,
        compute=ray.data.ActorPoolStrategy(size=options.num_workers),
        num_gpus=options.gpus_per_worker or None,
        num_cpus=options.cpus_per_worker,
        # A worker that dies is restarted and its batch retried (Ray Data's actor pools
        # restart and retry by default); the driver saves each image once.
    )


def _model_record(model: dict) -> dict:
    """The workers' `MobileSAM.model_record()`, made here on the driver without loading it."""
    from . import weights
    from .api import torch_model_record
    from .build import resolve_model_type

    model_type = resolve_model_type(
        model.get("model_type"), model.get("checkpoint"), model.get("img_size", 1024)
    )
    checkpoint = model.get("checkpoint") or weights.ensure_weights(model_type)
    return torch_model_record(
        model_type, model.get("img_size", 1024), model.get("precision", "float32"), checkpoint
    )


def segment_everything_on_ray(
    job: FolderJob,
    model: dict,
    options: RayOptions,
    worker: type = EverythingWorker,
    on_result: Callable[[str], None] | None = None,
) -> BatchSummary:
    """`job` (a `batch.FolderJob`: source, OUT, options) with the model on a Ray actor pool.

    model: `MobileSAM` keyword arguments (checkpoint, model_type, device, precision);
    device defaults to cuda when workers have GPUs. on_result: called with each finished
    image's name (progress; raising KeyboardInterrupt there stops the run cleanly).
    """
    model = {"device": "cuda" if options.gpus_per_worker else "cpu", **model}
    started = time.perf_counter()

    def work(files: list[Path], ids: dict[str, int], summary: BatchSummary) -> None:
        todo, redraw = [], []
        for path in files:
            part, key = job.done(path), job.key(path)
            if part is None or not job.image_files.written(key):  # a PNG folder missing: again
                todo.append({"name": key, "path": str(path), "image_id": ids[key]})
                continue
            summary.skipped.append(key)
            if job.overlays and not job.overlay_path(path).is_file():  # asked for after the run
                redraw.append({"name": key, "path": str(path), "part": json.dumps(part)})
        if not todo and not redraw:
            return
        seconds = connect(options)
        job.say(
            f"Ray ready in {seconds:.1f} s; {len(todo)} images to segment, {len(summary.skipped)} done before"
        )
        ray = _ray()
        by_key = {job.key(p): p for p in files}
        if redraw:
            for row in ray.data.from_items(redraw).map(_draw_saved).iter_rows():
                if row["error"]:
                    job.say(f"{row['name']}: overlay not drawn: {row['error']}")
                else:
                    atomic_write_bytes(job.overlay_path(by_key[str(row["name"])]), row["overlay"])
        if not todo:
            return
        ds = ray.data.from_items(todo, override_num_blocks=min(len(todo), 4 * options.num_workers))
        threads = max(1, int(options.cpus_per_worker))
        kwargs = {
            "model": model,
            "options": job.options,
            "threads": threads,
            "overlays": job.overlays,
            "files": job.image_files,
        }
        ds = _actor_pool(ds.map(_decode), worker, kwargs, options)
        for row in ds.iter_rows():
            name = str(row["name"])
            if name in summary.done or name in summary.failed:  # a retried batch: once is enough
                continue
            if row["error"]:
                summary.failed[name] = str(row["error"])
                job.say(f"{name}: FAILED: {row['error']}")
            else:
                # Before the part, as folder mode: a part means all is written.
                if job.image_files.roots:
                    job.image_files.unpack(name, row["files"])
                if job.overlays:
                    atomic_write_bytes(job.overlay_path(by_key[name]), row["overlay"])
                job.save(by_key[name], json.loads(row["part"]))
                summary.done.append(name)
            if on_result is not None:
                on_result(name)
        rate = len(summary.done) / max(time.perf_counter() - started, 1e-9)
        job.say(f"{rate:.2f} images/s")

    return job.run_with(work, _model_record(model))


# ---- masks for the boxes of a COCO file ------------------------------------------------------


class BoxWorker(EverythingWorker):
    """One model per Ray actor: decoded images and their boxes -> each image's masks
    (`box_job.segment_boxes`) as JSON, and its overlay when asked for."""

    def __call__(self, batch: dict) -> dict:
        from .box_job import segment_boxes

        parts, overlays, errors = [], [], []
        for record, anns, image, error in zip(batch["record"], batch["anns"], batch["image"], batch["error"]):
            part, overlay = "", b""
            if not error:
                try:
                    result, annotations, unusable = segment_boxes(
                        self.sam, np.asarray(image), json.loads(record), json.loads(anns), self.options
                    )
                    part = json.dumps({"annotations": annotations, "unusable": unusable})
                    overlay = _png(result) if self.overlays and len(result) else b""
                except MobileSAMError as exc:  # this image's problem (its size); a bug raises
                    error = str(exc)
            parts.append(part)
            overlays.append(overlay)
            errors.append(str(error))
        return _results(batch["name"], parts, overlays, errors)


def boxes_to_masks_on_ray(
    job: BoxJob, model: dict, options: RayOptions, worker: type = BoxWorker
) -> BatchSummary:
    """`job` (a `box_job.BoxJob`) with the model on a Ray actor pool: the same parts and
    annotations.json as one process, so the two resume each other's runs. model: as
    `segment_everything_on_ray`'s."""
    model = {"device": "cuda" if options.gpus_per_worker else "cpu", **model}

    def work(todo: list, summary: BatchSummary) -> None:
        if not todo:
            return
        seconds = connect(options)
        job.say(f"Ray ready in {seconds:.1f} s; {len(todo)} images to segment")
        rows = [
            {
                "name": name,
                "path": str(job.images / name),
                "record": json.dumps(image),
                "anns": json.dumps(anns),
            }
            for name, image, anns in todo
        ]
        boxes_of = {name: anns for name, _, anns in todo}
        ds = _ray().data.from_items(rows, override_num_blocks=min(len(rows), 4 * options.num_workers))
        threads = max(1, int(options.cpus_per_worker))
        kwargs = {"model": model, "options": job.options, "threads": threads, "overlays": job.overlays}
        for row in _actor_pool(ds.map(_decode), worker, kwargs, options).iter_rows():
            name = str(row["name"])
            if name in summary.done or name in summary.failed:  # a retried batch: once is enough
                continue
            if row["error"]:
                job.fail(name, str(row["error"]), summary, name)
                continue
            if row["overlay"]:  # before the part, as in one process
                atomic_write_bytes(job.overlay_path(name), row["overlay"])
            part = json.loads(row["part"])
            job.finish(name, boxes_of[name], part["annotations"], part["unusable"], summary)
            job.say(f"{name}: {len(part['annotations'])} masks")

    return job.run_with(work, _model_record(model))


# ---- the teacher embedding cache ---------------------------------------------------------


class CacheWorker:
    """One teacher per Ray actor: a batch of decoded images -> one shard file and its index
    fragment, written by the worker itself (atomically); returns which ids are done."""

    def __init__(self, teacher: dict, folder: str, threads: int, batch_size: int, encoder: dict) -> None:
        import torch

        from .build import build_sam
        from .distill.cache import TeacherEncoder

        torch.set_num_threads(max(1, threads))
        teacher = dict(teacher)
        device = teacher.pop("device", "cpu")
        self.encode = TeacherEncoder(build_sam(**teacher).to(device), batch_size, **encoder)
        self.folder, self.tag = Path(folder), uuid.uuid4().hex[:12]
        self.count = 0

    def __call__(self, batch: dict) -> dict:
        import torch

        from .distill.cache import write_shard_fragment

        good = [i for i, e in enumerate(batch["error"]) if not e]
        done = np.zeros(len(batch["id"]), dtype=bool)
        if good:
            device = self.encode.device
            images = torch.as_tensor(np.stack([batch["image"][i] for i in good])).to(device)
            sizes = torch.as_tensor(np.stack([batch["size"][i] for i in good])).to(device)
            rows = self.encode(images, sizes)
            name = f"shard_{self.tag}_{self.count:05d}"
            self.count += 1
            write_shard_fragment(
                self.folder, name, [(str(batch["id"][i]), row) for i, row in zip(good, rows)]
            )
            done[good] = True
        return {"id": batch["id"], "done": done, "error": batch["error"]}


def _decode_for_teacher(row: dict, img_size: int) -> dict:
    """A Ray task: one image of the source (a file, or a member of an SA-1B tar, given by
    path, offset and size; -1 for a whole file) -> SAM's padded uint8 input and its size."""
    from .distill.inputs import DecodedImages
    from .distill.sources import ImageRef, Member

    offset, size = (None, None) if row["offset"] < 0 else (int(row["offset"]), int(row["size"]))
    ref = ImageRef(str(row["id"]), Member(Path(row["path"]), offset, size), error=row.get("error") or None)
    image_id, image, size, error = DecodedImages([ref], img_size)[0]
    if error:
        image, size = np.zeros((3, img_size, img_size), np.uint8), np.zeros(2, np.int64)
    else:
        image, size = image.numpy(), size.numpy()
    return {"id": image_id, "image": image, "size": size, "error": error}


def cache_on_ray(
    cache,
    teacher: dict,
    teacher_name: str,
    source: str | Path,
    options: RayOptions,
    precision: str | None = None,
    compile: bool = False,
    compile_backend: str = "inductor",
    flex_attention: bool = False,
):
    """`EmbeddingCache.build` with the teacher on a Ray actor pool (see the module doc).

    teacher: `build_sam` keyword arguments (model_type, checkpoint, img_size) plus device
    (default: cuda when workers have GPUs). precision, compile, compile_backend,
    flex_attention: each worker's `distill.cache.TeacherEncoder` (precision None: bf16 on
    a GPU, float32 on a CPU; compiled at `options.batch_size`).
    """
    from .distill.cache import CacheSummary, check_encoder_options
    from .distill.sources import list_images

    # here, not in every worker after Ray has started
    check_encoder_options(precision, compile, flex_attention)

    img_size = int(teacher.get("img_size", 1024))
    cache.begin(teacher_name, img_size)
    cache.merge_fragments()  # what a killed run finished
    summary = CacheSummary()
    refs = []
    for ref in list_images(source):
        if ref.id in cache:
            summary.skipped += 1
        else:
            refs.append(ref)
    if refs:
        connect(options)
        ray = _ray()
        teacher = {"device": "cuda" if options.gpus_per_worker else "cpu", **teacher}
        # Each row names its image's bytes, so no task carries the whole listing.
        rows = [
            {
                "id": ref.id,
                "path": str(ref.image.path),
                "offset": -1 if ref.image.offset is None else ref.image.offset,
                "size": -1 if ref.image.size is None else ref.image.size,
                "error": ref.error or "",
            }
            for ref in refs
        ]
        ds = ray.data.from_items(rows).map(_decode_for_teacher, fn_kwargs={"img_size": img_size})
        threads = max(1, int(options.cpus_per_worker))
        kwargs = {
            "teacher": teacher,
            "folder": str(cache.folder),
            "threads": threads,
            "batch_size": options.batch_size,
            "encoder": {
                "precision": precision,
                "compile": compile,
                "compile_backend": compile_backend,
                "flex_attention": flex_attention,
            },
        }
        for row in _actor_pool(ds, CacheWorker, kwargs, options).iter_rows():
            if row["error"]:
                summary.failed[str(row["id"])] = str(row["error"])
            elif row["done"]:
                summary.done += 1
    cache.merge_fragments(summary.failed)
    return summary
