"""The UI's model: one predictor, a bounded cache of image embeddings, background encoding.

Every model call holds one lock (the predictor holds one image at a time); an image's
embedding is computed once and kept while it is among the `cache_images` most recent
and the cache stays under `cache_bytes`. `prefetch` encodes an image in a background
thread (folder mode: the next image while the person works on the current one).
Segment everything's runs keep each mask's edge (its low-res logits, 256 KB) for soft
cutouts afterwards: the latest runs, while they hold under `edge_bytes` in all.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..highlevel import everything
from ..image_io import load_image
from ..predictor import SamPredictor
from ..result import CropEdge
from ..utils import rle


@dataclass
class Embedding:
    features: torch.Tensor
    original_size: tuple[int, int]
    input_size: tuple[int, int]
    key: tuple  # (path, mtime, size): a changed file is encoded again

    @property
    def nbytes(self) -> int:
        return self.features.numel() * self.features.element_size()


@dataclass
class EverythingEdges:
    """One segment-everything run's masks' edges (`CropEdge`), each found by its mask's
    compressed RLE counts, for image `name` as its file was then (`key`); `nbytes` they hold."""

    name: str
    key: tuple
    by_counts: dict[str, CropEdge] = field(default_factory=dict)
    nbytes: int = 0


class ModelService:
    def __init__(
        self,
        predictor: SamPredictor,
        cache_images: int = 8,
        cache_bytes: int = 256 << 20,
        edge_bytes: int = 256 << 20,
    ) -> None:
        self.predictor = predictor
        self.cache_images, self.cache_bytes, self.edge_bytes = cache_images, cache_bytes, edge_bytes
        self._edges: OrderedDict[int, EverythingEdges] = OrderedDict()  # by run, oldest first
        self._runs = itertools.count()
        self._cache: OrderedDict[str, Embedding] = OrderedDict()
        self._lock = threading.RLock()
        self._background = ThreadPoolExecutor(1, thread_name_prefix="ui-encoder")
        self._pending: dict[str, Future] = {}
        self.progress: dict[
            str, tuple[int, int]
        ] = {}  # image -> (prompts done, in all) of segment everything
        # Background encodes use their own predictor (same model, eager: a CUDA-graph engine
        # is not shared between threads), so they never hold the interactive one's lock.
        self._encoder = SamPredictor(predictor.model, device_preprocess=predictor.device_preprocess)

    def cache_info(self) -> dict:
        with self._lock:
            used = sum(e.nbytes for e in self._cache.values())
            return {
                "images": list(self._cache),
                "bytes": used,
                "limit_images": self.cache_images,
                "limit_bytes": self.cache_bytes,
            }

    def embed(self, name: str, path: Path) -> tuple[Embedding, float]:
        """The embedding of image `name` (encoded now if not cached) and the ms spent encoding."""
        pending = self._pending.get(name)
        if pending is not None:
            pending.result()  # a background encode of this image is under way: wait for it
        with self._lock:
            return self._embed(name, path, self.predictor)

    def _embed(self, name: str, path: Path, p: SamPredictor) -> tuple[Embedding, float]:
        key = _file_key(path)
        with self._lock:
            hit = self._cache.get(name)
            if hit is not None and hit.key == key:
                self._cache.move_to_end(name)
                return hit, 0.0
        start = time.perf_counter()
        p.set_image(load_image(path))
        emb = Embedding(p.features, p.original_size, p.input_size, key)
        p.reset_image()
        with self._lock:
            self._cache[name] = emb
            self._evict()
        return emb, (time.perf_counter() - start) * 1e3

    def prefetch(self, name: str, path: Path) -> None:
        """Encode `name` in the background unless it is cached or already queued."""
        with self._lock:
            if name in self._cache or name in self._pending:
                return

        def work() -> None:
            try:
                self._embed(name, path, self._encoder)
            except Exception:  # a bad file is reported when it is opened, not here
                pass
            finally:
                self._pending.pop(name, None)

        self._pending[name] = self._background.submit(work)

    def predict(
        self,
        emb: Embedding,
        points: np.ndarray | None,
        labels: np.ndarray | None,
        box: np.ndarray | None,
        multimask: bool,
        pick: int | None = None,
        size: tuple[int, int] | None = None,
    ) -> tuple[np.ndarray, int, np.ndarray, np.ndarray]:
        """One prompt set (original-image pixels) on the image of `emb` (from `embed`) ->
        the scores of its C candidates, the index shown (`pick`, else the best score),
        that candidate's HxW mask, equal to `SamPredictor.predict`'s, and its low-res
        logits (hxw float32, for `utils.matte.soft_mask`); `size` (h, w): the mask at that
        size instead (a preview of a big photo's: upsampled straight to it)."""
        with self._lock, torch.inference_mode():
            self._use(emb)
            p = self.predictor
            coords = labels_t = boxes = None
            if points is not None:
                coords = torch.as_tensor(p.transform.apply_coords(points, p.original_size), dtype=torch.float)
                coords, labels_t = (
                    coords[None].to(p.device),
                    torch.as_tensor(labels, dtype=torch.int)[None].to(p.device),
                )
            if box is not None:
                boxes = torch.as_tensor(p.transform.apply_boxes(box, p.original_size), dtype=torch.float).to(
                    p.device
                )
            low_res, iou = p.decode(coords, labels_t, boxes, None, multimask)
            scores = iou[0].float().cpu().numpy()
            i = int(np.argmax(scores)) if pick is None else pick
            # Every candidate upsampled, as `predict` does: upsampling one channel alone can
            # round differently (another kernel path) and move boundary pixels.
            logits = p.model.postprocess_masks(low_res.float(), p.input_size, size or p.original_size)
            mask = (logits[0, i] > p.mask_threshold).cpu().numpy()
            return scores, i, mask, low_res[0, i].float().cpu().numpy()

    def box_masks(self, name: str, path: Path, boxes: np.ndarray) -> list[tuple[np.ndarray, int, np.ndarray]]:
        """Each XYXY box (original pixels) on image `name` as a box drawn in the UI is
        segmented: (its HxW mask, the best candidate's mask_id 1-3, the three candidates'
        scores in mask_id order)."""
        emb, _ = self.embed(name, path)
        out = []
        for box in boxes:
            scores, i, mask, _ = self.predict(emb, None, None, np.asarray(box, float), True)
            out.append((mask, i + 1, scores))  # mask ids as the page numbers candidates
        return out

    def everything(
        self, name: str, path: Path, options: dict, decoder_precision: str = "float32"
    ) -> list[dict]:
        """Segment everything on image `name` (the generator's `options`) -> its masks as
        COCO annotations (RLE). Each mask's edge is kept for `soft_matte`."""

        def report(done: int, total: int) -> None:
            self.progress[name] = (done, total)

        self.progress[name] = (0, 0)
        with self._lock:  # the generator sets its own images; `_use` restores ours after
            key = _file_key(path)
            result = everything(
                self.predictor,
                load_image(path),
                progress=report,
                decoder_precision=decoder_precision,
                keep_logits=True,
                **options,
            )
        annotations = result.to_coco()["annotations"]
        run = EverythingEdges(name, key)
        for i, a in enumerate(annotations):
            counts = a["segmentation"]["counts"]
            if counts in run.by_counts:  # a mask found twice: the higher predicted IoU's edge
                continue
            run.by_counts[counts] = edge = result.crop_logits.read(i)
            run.nbytes += edge.low.nbytes
            if run.nbytes > self.edge_bytes:  # past the limit alone: not kept
                return annotations
        with self._lock:
            self._edges[next(self._runs)] = run
            while sum(r.nbytes for r in self._edges.values()) > self.edge_bytes:
                self._edges.popitem(last=False)  # the oldest runs
        return annotations

    def soft_matte(self, name: str, path: Path, mask: np.ndarray) -> np.ndarray | None:
        """`mask`'s soft matte (`CropEdge.matte`) when a kept segment-everything run of
        image `name`, its file unchanged since, made exactly this mask; else None."""
        counts, key = rle.encode(mask)["counts"], _file_key(path)
        with self._lock:
            runs = [run for run in reversed(self._edges.values()) if run.name == name and run.key == key]
        for run in runs:
            edge = run.by_counts.get(counts)
            if edge is not None:
                return edge.matte(mask)
        return None

    def _use(self, emb: Embedding) -> None:
        p = self.predictor
        if p.features is not emb.features:
            p.features, p.original_size, p.input_size = emb.features, emb.original_size, emb.input_size
            p.is_image_set = True

    def _evict(self) -> None:
        while len(self._cache) > self.cache_images or (
            len(self._cache) > 1 and sum(e.nbytes for e in self._cache.values()) > self.cache_bytes
        ):
            self._cache.popitem(last=False)

    def close(self) -> None:
        self._background.shutdown(wait=True, cancel_futures=True)


def _file_key(path: Path) -> tuple:
    st = path.stat()
    return (str(path), st.st_mtime_ns, st.st_size)
