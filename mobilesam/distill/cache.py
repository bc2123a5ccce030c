"""Teacher embedding cache: run the SAM teacher once per image, keep its embeddings.

Layout of a cache folder:
    index.json          {"teacher", "img_size", "shape", "entries": {image_id: {"shard", "row",
                        "sha256"}}, "shards": {name: sha256}, "failures": {image_id: error}}
    shard_00000.npy     float16 embeddings, N x 256 x (S/16) x (S/16), one row per image
A shard is written (atomically) once it is full or the run ends, then the index; a
killed run loses at most the images of the shard in progress, and a rerun skips every
image already in the index. Checksums: one per embedding (checked on every read) and
one per shard (`verify()`, `mobilesam distill cache --verify`).

Images come from a folder or from SA-1B tar shards as Meta distributes them
(`sa_*.tar` holding `.jpg` + `.json`), read in place (see sources.py).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import MobileSAMError
from ..modeling import fast_paths
from ..modeling.sam import Sam
from ..utils.files import atomic_write, atomic_write_text, check_output_dir
from .inputs import DecodedImages, default_workers, resize_and_pad, resize_on, sam_input
from .sources import list_images


@dataclass
class CacheSummary:
    done: int = 0
    skipped: int = 0
    failed: dict[str, str] = field(default_factory=dict)


def check_encoder_options(precision: str | None, compile: bool = False, flex_attention: bool = False) -> None:
    """`TeacherEncoder`'s options, checked before any work starts."""
    if precision not in (None, "float32", "bf16"):
        raise MobileSAMError(f"precision must be 'float32' or 'bf16', got {precision!r}")
    if flex_attention and not compile:
        raise MobileSAMError("flex_attention needs compile: eager FlexAttention materialises every score")


class TeacherEncoder:
    """The teacher's image encoder as a cache runs it: padded uint8 images (B x 3 x S x S)
    and their sizes -> float16 embeddings on the host. Under bfloat16 autocast if
    `precision` is "bf16" (None: bf16 on a GPU, where it is 6x faster, float32 elsewhere);
    through `torch.compile` (`compile_backend`) if `compile`, at one static shape: a batch
    shorter than `batch_size` is padded to it and the padding's rows dropped.
    `flex_attention` (with `compile`) turns that fast path on in the teacher's attention
    (fast_paths.py: on CUDA, the relative-position terms inside FlexAttention's kernel)."""

    def __init__(
        self,
        teacher: Sam,
        batch_size: int,
        precision: str | None = None,
        compile: bool = False,
        compile_backend: str = "inductor",
        flex_attention: bool = False,
    ) -> None:
        check_encoder_options(precision, compile, flex_attention)
        self.precision = precision or ("bf16" if teacher.device.type == "cuda" else "float32")
        self.device, self.batch_size, self.compile = teacher.device, batch_size, compile
        encoder = teacher.image_encoder.eval()
        if flex_attention:
            fast_paths.configure(encoder, flex_attention=True)
        self.run = torch.compile(encoder, dynamic=False, backend=compile_backend) if compile else encoder

    def __call__(self, images: torch.Tensor, sizes: torch.Tensor) -> np.ndarray:
        x = sam_input(images, sizes)
        n = len(x)
        if self.compile and n < self.batch_size:  # not a second shape to compile
            x = torch.cat([x, x.new_zeros(self.batch_size - n, *x.shape[1:])])
        bf16 = self.precision == "bf16"
        with torch.inference_mode(), torch.autocast(self.device.type, torch.bfloat16, enabled=bf16):
            return self.run(x)[:n].half().cpu().numpy()


class EmbeddingCache:
    """Read and write a cache folder (see the module doc)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        path = self.folder / "index.json"
        self.index = json.loads(path.read_text()) if path.is_file() else None
        self._maps: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()  # the index, between the teacher loop and the shard writer

    def __contains__(self, image_id: str) -> bool:
        return self.index is not None and image_id in self.index["entries"]

    def __len__(self) -> int:
        return 0 if self.index is None else len(self.index["entries"])

    def ids(self) -> list[str]:
        return [] if self.index is None else sorted(self.index["entries"])

    def get(self, image_id: str) -> np.ndarray:
        """One embedding, 256 x g x g float16, checked against its own checksum."""
        entry = self.index["entries"][image_id]
        row = np.array(self._shard(entry["shard"])[entry["row"]])  # a writable copy out of the map
        if hashlib.sha256(row.tobytes()).hexdigest() != entry["sha256"]:
            raise MobileSAMError(
                f"cache entry {image_id} in {self.folder / entry['shard']} is damaged (checksum mismatch); "
                "delete that shard and rerun `mobilesam distill cache`"
            )
        return row

    def verify(self) -> list[str]:
        """Names of the shards whose file checksum does not match (reads every shard)."""
        if self.index is None:
            return []
        return [
            name
            for name, digest in self.index["shards"].items()
            if not (self.folder / name).is_file()
            or hashlib.sha256((self.folder / name).read_bytes()).hexdigest() != digest
        ]

    def _shard(self, name: str) -> np.ndarray:
        if name not in self._maps:
            try:
                self._maps[name] = np.load(self.folder / name, mmap_mode="r")
            except (OSError, ValueError) as exc:
                raise MobileSAMError(f"cache shard {self.folder / name} is unreadable: {exc}") from exc
        return self._maps[name]

    def build(
        self,
        teacher: Sam,
        source: str | Path,
        teacher_name: str,
        shard_size: int = 256,
        progress: Callable[[str], None] | None = None,
        batch_size: int | None = None,
        workers: int | None = None,
        precision: str | None = None,
        resize: str | None = None,
        compile: bool = False,
        compile_backend: str = "inductor",
        flex_attention: bool = False,
    ) -> CacheSummary:
        """Embed every image of `source` not yet cached, with SAM's preprocessing:
        `workers` processes decode (and resize), the teacher runs `batch_size` images at once
        (None: 16 and `default_workers` on a GPU, 1 and none on the CPU), images resized
        where `resize` says (`inputs.resize_on`: None is on the device on a GPU, in the
        workers elsewhere); `precision`, `compile`, `compile_backend` and `flex_attention` as
        `TeacherEncoder` takes them. Shards are written by a background thread while the
        teacher runs on."""
        gpu = teacher.device.type == "cuda"
        batch_size = batch_size or (16 if gpu else 1)
        encode = TeacherEncoder(teacher, batch_size, precision, compile, compile_backend, flex_attention)
        workers = default_workers(teacher.device) if workers is None else workers
        on_device = resize_on(resize, teacher.device) == "device"
        size = teacher.img_size
        self.begin(teacher_name, size)
        say = progress or (lambda msg: None)
        summary, pending = CacheSummary(), []
        todo = []
        for ref in list_images(source):
            if ref.id in self:
                summary.skipped += 1
            else:
                todo.append(ref)
        batches = torch.utils.data.DataLoader(
            DecodedImages(todo, size, resize=not on_device),
            batch_size=batch_size,
            num_workers=workers,
            collate_fn=list,
            pin_memory=gpu,
            prefetch_factor=4 if workers else None,
        )
        writer, writes = ThreadPoolExecutor(1, thread_name_prefix="cache-writer"), []
        try:
            for batch in batches:
                with self._lock:
                    for image_id, _, _, error in batch:
                        if error:
                            summary.failed[image_id] = self.index["failures"][image_id] = error
                            say(f"{image_id}: FAILED: {error}")
                good = [item for item in batch if not item[3]]
                if not good:
                    continue
                if on_device:
                    images, sizes = resize_and_pad([item[1] for item in good], size, teacher.device)
                else:
                    images = torch.stack([item[1] for item in good]).to(teacher.device, non_blocking=True)
                    sizes = torch.stack([item[2] for item in good]).to(teacher.device)
                for (image_id, *_), row in zip(good, encode(images, sizes)):
                    pending.append((image_id, row))
                    summary.done += 1
                    if len(pending) == shard_size:
                        writes.append(writer.submit(self._write_shard, pending))
                        pending = []
                    say(f"{image_id}: cached ({summary.done} new)")
            if pending:
                writes.append(writer.submit(self._write_shard, pending))
        finally:
            writer.shutdown(wait=True)  # an interrupted run still lands its finished shards
        for write in writes:
            write.result()  # a failed write is an error, not a silently missing shard
        with self._lock:
            atomic_write_text(self.folder / "index.json", json.dumps(self.index))
        return summary

    def begin(self, teacher_name: str, size: int) -> None:
        """Start an index for `teacher_name` at `size` px, or check the existing one is that."""
        if self.index is None:
            grid = size // 16
            self.index = {
                "teacher": teacher_name,
                "img_size": size,
                "shape": [256, grid, grid],
                "entries": {},
                "shards": {},
                "failures": {},
            }
        elif (self.index["teacher"], self.index["img_size"]) != (teacher_name, size):
            raise MobileSAMError(
                f"{self.folder} holds embeddings of {self.index['teacher']} at {self.index['img_size']} px, "
                f"not {teacher_name} at {size} px: use another cache folder"
            )
        check_output_dir(self.folder)  # a file in the way, a read-only place: said now

    def _write_shard(self, rows: list[tuple[str, np.ndarray]]) -> None:
        fragment = _shard_entries(self.folder, f"shard_{len(self.index['shards']):05d}", rows)
        with self._lock:
            self._add(fragment)
            # The index follows each shard at once: a kill loses at most the shard in progress.
            atomic_write_text(self.folder / "index.json", json.dumps(self.index))

    def _add(self, fragment: dict) -> None:
        self.index["shards"].update(fragment["shards"])
        self.index["entries"].update(fragment["entries"])
        for image_id in fragment["entries"]:
            self.index["failures"].pop(image_id, None)

    def merge_fragments(self, failures: dict[str, str] | None = None) -> None:
        """Fold the index fragments that parallel writers (the Ray engine's workers) left
        beside their shards into index.json, with `failures`, then drop the fragments."""
        fragments = sorted(self.folder.glob(FRAGMENT_GLOB))
        for path in fragments:
            self._add(json.loads(path.read_text()))
        self.index["failures"].update(failures or {})
        atomic_write_text(self.folder / "index.json", json.dumps(self.index))
        for path in fragments:
            path.unlink()


FRAGMENT_GLOB = "index.shard_*.json"


def _shard_entries(folder: Path, name: str, rows: list[tuple[str, np.ndarray]]) -> dict:
    """Write shard `name`.npy atomically; its index entries and checksum."""
    array = np.stack([r for _, r in rows])
    path = atomic_write(folder / f"{name}.npy", lambda f: np.save(f, array))
    entries = {
        image_id: {"shard": path.name, "row": i, "sha256": hashlib.sha256(row.tobytes()).hexdigest()}
        for i, (image_id, row) in enumerate(rows)
    }
    return {"shards": {path.name: hashlib.sha256(path.read_bytes()).hexdigest()}, "entries": entries}


def write_shard_fragment(folder: Path, name: str, rows: list[tuple[str, np.ndarray]]) -> None:
    """A parallel writer's shard plus its index fragment (`index.<name>.json`, written after
    the shard), merged into index.json by `EmbeddingCache.merge_fragments`."""
    fragment = _shard_entries(folder, name, rows)
    atomic_write_text(folder / f"index.{name}.json", json.dumps(fragment))
