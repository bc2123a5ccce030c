"""`SamAutomaticMaskGenerator`: segment everything from a grid of point prompts.

segment-anything's constructor arguments, defaults and output, with the same results
(float32 rounding aside) and far less time and memory:
- the decoder's prompt-independent work is done once per image (see `SamPredictor`);
- masks are filtered on predicted IoU while still 256x256 and wait there; they are
  then upsampled in NMS order, a few at a time (`mask_chunk`), with box NMS applied as
  they come, and one that NMS surely suppresses, as bounds on its box from its low-res
  logits prove (`utils.bounds`), is never upsampled;
- stability scores and boxes are computed for a chunk of masks at once; only the masks
  NMS keeps are packed into bits (H*W/8 bytes each, whatever their shape), and run
  lengths are computed for the masks of the output only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from .backend import Predictor
from .errors import PromptError
from .modeling.sam import Sam, low_res_region, upscale_masks
from .options import BY_GENERATOR, check_decoder_precision
from .predictor import SamPredictor
from .runtime import release_free_memory
from .utils import amg, bounds, rle
from .utils.nms import box_iou_one, nms

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")
DECODE_CHUNK = 8  # prompts decoded at once on a CPU: as fast per prompt as more, less memory
TRIM_EVERY = 4  # batches between heap trims (each ~40 ms; every batch cost 3% of a 32x32 run)
UPSAMPLE_BYTES = 256 << 20  # full-resolution logits upsampled at once, at most (1 mask if larger)
UPSAMPLE_BYTES_GPU = 1 << 30  # the same on a GPU: fewer, larger chunks (each chunk syncs a few times)
RESIDENT_BYTES_GPU = 2 << 30  # low-res candidates kept on a GPU (177 KB each); the rest go to the host
UNPACK_BYTES_GPU = 1 << 30  # binary masks unpacked at once on a GPU, at most (1 mask if larger)


@dataclass(frozen=True)
class CropLogits:
    """Where one mask's low-res logits are kept (a handle in its records' store) and how
    they map onto its crop: the top-left block of the low-res grid kept, the whole grid's
    size, and the crop's input size in the model frame."""

    handle: object
    block: tuple[int, int]
    low_size: tuple[int, int]
    input_size: tuple[int, int]


@dataclass
class MaskRecords:
    """Masks of one image, as packed bits plus per-mask tensors (N rows each).

    `store` keeps the packed bits (in memory, or a temporary file past a size); `bits`
    holds one handle per mask. With the generator's `keep_logits`, `logits` holds one
    `CropLogits` per mask (its low-res logits, in `store` too). Nothing here refers back
    to the generator.
    """

    store: rle.BitStore
    bits: list = field(default_factory=list)  # `rle.BitStore` handles of column-major packed pixels
    boxes: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 4, dtype=torch.long))  # XYXY
    iou_preds: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    points: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 2, dtype=torch.float64))
    stability: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    crop_boxes: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 4, dtype=torch.long))
    areas: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    logits: list = field(default_factory=list)  # `CropLogits` per mask, or empty

    def __len__(self) -> int:
        return len(self.bits)

    def read(self, i: int) -> np.ndarray:
        """Mask i's packed column-major bits (`rle.bits_to_mask` / `rle.bits_to_counts`)."""
        return self.store.read(self.bits[i])

    def read_logits(self, i: int) -> tuple[np.ndarray, tuple[int, int]]:
        """Mask i's low-res logits (the model's whole low-res grid, zero where the block
        kept stops) and the input size they map from, in its crop's frame."""
        kept = self.logits[i]
        low = np.zeros(kept.low_size, np.float32)
        block = self.store.read(kept.handle).view(np.float32).reshape(kept.block)
        low[: kept.block[0], : kept.block[1]] = block
        return low, kept.input_size

    def extend(self, other: MaskRecords) -> None:
        self.bits.extend(other.bits)
        self.logits.extend(other.logits)
        self.areas = torch.cat([self.areas, other.areas])
        self.boxes = torch.cat([self.boxes, other.boxes])
        self.iou_preds = torch.cat([self.iou_preds, other.iou_preds])
        self.points = torch.cat([self.points, other.points])
        self.stability = torch.cat([self.stability, other.stability])
        self.crop_boxes = torch.cat([self.crop_boxes, other.crop_boxes])

    def select(self, idx: torch.Tensor) -> None:
        """Keep rows `idx` (indices, in that order)."""
        self.bits = [self.bits[i] for i in idx.tolist()]
        if self.logits:
            self.logits = [self.logits[i] for i in idx.tolist()]
        self.areas = self.areas[idx]
        self.boxes, self.iou_preds = self.boxes[idx], self.iou_preds[idx]
        self.points, self.stability, self.crop_boxes = (
            self.points[idx],
            self.stability[idx],
            self.crop_boxes[idx],
        )


class SamAutomaticMaskGenerator:
    """Generate masks for a whole image (segment-anything's arguments and defaults).

    model: a `Sam` or any `backend.Predictor` (e.g. an `OnnxPredictor`).
    points_per_side: grid of n x n point prompts (or pass point_grids); points_per_batch:
    prompts per batch (decoded at most 8 at a time); pred_iou_thresh, stability_score_thresh: filters in [0, 1];
    box_nms_thresh, crop_nms_thresh: NMS IoU thresholds within and across crops;
    crop_n_layers: extra layers of 2^i x 2^i crops; min_mask_region_area: remove islands
    and holes smaller than this (needs the `amg` extra); output_mode: "binary_mask",
    "uncompressed_rle" or "coco_rle". mask_chunk: masks upsampled at once (None: 8 on a
    CPU, on a GPU as many as 1 GB of full-size logits hold);
    mask_memory_bytes: candidate masks beyond this go to a temporary file (and, apart,
    low-res logits waiting to be upsampled). skip_suppressed: never upsample a candidate
    that box NMS surely suppresses, as its low-res logits prove (`utils.bounds`; the
    same output, False upsamples every candidate). decoder_precision: "float32", or
    "bf16" for an approximate bfloat16 decoder (PyTorch backend; 1.5x faster on this
    project's AVX512-BF16 CPUs, its agreement in docs/performance.md). keep_logits: the
    records keep each mask's low-res logits (`MaskRecords.read_logits`, float32, up to
    256 KB a mask, spilled with the masks past mask_memory_bytes), for soft edges
    (`SegmentationResult.soft_mask`); the masks are the same either way.
    Numbers are checked against the bounds in options.py (32.0 and numpy integers are
    accepted where an integer is wanted, as segment-anything does).
    `progress`, if set to a function, is called after every batch of point prompts with
    (prompts done, prompts in all crops) — a progress bar's numbers. A crop's last batch
    is reported once its masks are selected (upsampled, filtered, NMS), and the very last
    (total, total) once the whole image is done (cross-crop NMS, small regions), so a bar
    reaches its end when the result does.
    """

    progress: Callable[[int, int], None] | None = None

    def __init__(
        self,
        model: Sam | Predictor,
        points_per_side: int | None = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: list[np.ndarray] | None = None,
        min_mask_region_area: int = 0,
        output_mode: str = "binary_mask",
        mask_chunk: int | None = None,
        mask_memory_bytes: int = 256 << 20,
        skip_suppressed: bool = True,
        decoder_precision: str = "float32",
        keep_logits: bool = False,
    ) -> None:
        if (points_per_side is None) == (point_grids is None):
            raise PromptError("exactly one of points_per_side and point_grids must be given")
        given = {
            "points_per_batch": points_per_batch,
            "pred_iou_thresh": pred_iou_thresh,
            "stability_score_thresh": stability_score_thresh,
            "box_nms_thresh": box_nms_thresh,
            "crop_n_layers": crop_n_layers,
            "crop_nms_thresh": crop_nms_thresh,
            "crop_overlap_ratio": crop_overlap_ratio,
            "crop_n_points_downscale_factor": crop_n_points_downscale_factor,
            "min_mask_region_area": min_mask_region_area,
        }
        if points_per_side is not None:
            given["points_per_side"] = points_per_side
        checked = {name: BY_GENERATOR[name].parse(value, name) for name, value in given.items()}
        if not float(stability_score_offset) >= 0.0:
            raise PromptError(f"stability_score_offset must be >= 0, got {stability_score_offset!r}")
        if output_mode not in OUTPUT_MODES:
            raise PromptError(f"output_mode must be one of {OUTPUT_MODES}, got {output_mode!r}")
        if mask_chunk is not None:
            _check_int("mask_chunk", mask_chunk, 1)
        check_decoder_precision(decoder_precision)
        crop_n_layers = checked["crop_n_layers"]
        if points_per_side is not None:
            point_grids = amg.build_all_layer_point_grids(
                checked["points_per_side"], crop_n_layers, checked["crop_n_points_downscale_factor"]
            )
        if len(point_grids) != crop_n_layers + 1:
            raise PromptError(f"point_grids needs one grid per crop layer ({crop_n_layers + 1})")
        point_grids = [_grid(g, i) for i, g in enumerate(point_grids)]
        if checked["min_mask_region_area"] > 0:
            from .utils.regions import require_cv2

            require_cv2()  # fail now, not after minutes of work, if the extra is missing
        self.predictor: Predictor = SamPredictor(model) if isinstance(model, Sam) else model
        self.point_grids = point_grids
        self.points_per_batch = checked["points_per_batch"]
        self.pred_iou_thresh = checked["pred_iou_thresh"]
        self.stability_score_thresh = checked["stability_score_thresh"]
        self.stability_score_offset = float(stability_score_offset)
        self.box_nms_thresh = checked["box_nms_thresh"]
        self.crop_n_layers = crop_n_layers
        self.crop_nms_thresh = checked["crop_nms_thresh"]
        self.crop_overlap_ratio = checked["crop_overlap_ratio"]
        self.crop_n_points_downscale_factor = checked["crop_n_points_downscale_factor"]  # in point_grids
        self.min_mask_region_area = checked["min_mask_region_area"]
        self.output_mode = output_mode
        self.mask_chunk = mask_chunk
        self.mask_memory_bytes = mask_memory_bytes
        self.skip_suppressed = bool(skip_suppressed)
        self.decoder_precision = decoder_precision
        self.keep_logits = bool(keep_logits)

    @torch.inference_mode()
    def generate(self, image: np.ndarray) -> list[dict]:
        """HxWx3 uint8 RGB -> one dict per mask, highest predicted IoU first: `segmentation`,
        `area`, `bbox` (XYWH), `predicted_iou`, `point_coords`, `stability_score`, `crop_box` (XYWH)."""
        records = self.generate_records(image)
        h, w = image.shape[:2]
        binary = self._binary_masks(records, (h, w)) if self.output_mode == "binary_mask" else None
        anns = []
        for i in range(len(records)):
            if binary is not None:
                seg = next(binary)
            else:
                counts = rle.bits_to_counts(records.read(i), (h, w))
                seg = rle.counts_to_rle(counts, (h, w), compressed=self.output_mode == "coco_rle")
            anns.append(
                {
                    "segmentation": seg,
                    "area": int(records.areas[i]),
                    "bbox": amg.xyxy_to_xywh(records.boxes[i].tolist()),
                    "predicted_iou": records.iou_preds[i].item(),
                    "point_coords": [records.points[i].tolist()],
                    "stability_score": records.stability[i].item(),
                    "crop_box": amg.xyxy_to_xywh(records.crop_boxes[i].tolist()),
                }
            )
        return anns

    def _binary_masks(self, records: MaskRecords, size: tuple[int, int]) -> Iterator[np.ndarray]:
        """The records' HxW bool masks in order: unpacked by the host's NumPy on a CPU, on
        the device elsewhere (in chunks of UNPACK_BYTES_GPU, then one copy to the host)."""
        device = torch.device(self.predictor.device)
        if not _unpack_on_device(device):
            yield from (rle.bits_to_mask(records.read(i), size) for i in range(len(records)))
            return
        per = max(1, UNPACK_BYTES_GPU // (size[0] * size[1]))
        for start in range(0, len(records), per):
            rows = np.stack([records.read(i) for i in range(start, min(start + per, len(records)))])
            yield from rle.bits_to_masks_torch(torch.from_numpy(rows).to(device), size).cpu().numpy()

    @torch.inference_mode()
    def generate_records(self, image: np.ndarray, small_regions: bool = True) -> MaskRecords:
        """The masks as packed bits and tensors, before formatting (highest score first).
        The generator keeps nothing of the image: the records hold their own mask store.
        small_regions=False skips the min_mask_region_area pass."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise PromptError(
                f"image must be an HxWx3 uint8 array, got shape {image.shape} dtype {image.dtype}"
            )
        orig_size = image.shape[:2]
        crop_boxes, layer_idxs = amg.generate_crop_boxes(
            orig_size, self.crop_n_layers, self.crop_overlap_ratio
        )
        records = MaskRecords(rle.BitStore(self.mask_memory_bytes))
        self._done, self._total = 0, sum(len(self.point_grids[layer]) for layer in layer_idxs)
        for crop_box, layer in zip(crop_boxes, layer_idxs):
            if len(self.point_grids[layer]):  # no point, no mask: the crop is not even encoded
                records.extend(self._process_crop(image, crop_box, layer, orig_size, records.store))
        if len(crop_boxes) > 1 and len(records):
            # Prefer masks from smaller crops: score = 1 / crop area.
            scores = 1 / amg.box_area(records.crop_boxes)
            records.select(nms(records.boxes.float(), scores, self.crop_nms_thresh))
        if small_regions and self.min_mask_region_area > 0:
            self._remove_small_regions(records, orig_size)
        if self._total:  # no prompt, no batch: no call
            self._report()
        return records

    def _report(self) -> None:
        if self.progress is not None:
            self.progress(self._done, self._total)

    def _process_crop(
        self,
        image: np.ndarray,
        crop_box: list[int],
        layer: int,
        orig_size: tuple[int, int],
        store: rle.BitStore,
    ) -> MaskRecords:
        x0, y0, x1, y1 = crop_box
        crop = image[y0:y1, x0:x1, :]
        crop_size = crop.shape[:2]
        self.predictor.set_image(crop)
        release_free_memory()  # the encoder's temporaries: the decoder needs other sizes
        points = self.point_grids[layer] * np.array(crop_size)[None, ::-1]
        resident = _resident_bytes(torch.device(self.predictor.device))
        candidates = _Candidates(self.predictor, crop_size, self.mask_memory_bytes, resident)
        for i, start in enumerate(range(0, len(points), self.points_per_batch)):
            batch = points[start : start + self.points_per_batch]
            self._decode_batch(batch, crop_size, candidates)
            self._done += len(batch)
            if start + self.points_per_batch < len(points):  # the last one: after selection
                self._report()
            if i % TRIM_EVERY == TRIM_EVERY - 1:
                release_free_memory()  # temporaries vary in size from batch to batch
        records = self._select(candidates, crop_size, crop_box, orig_size, store)
        if self._done < self._total:  # the image's last crop: after the whole image
            self._report()
        self.predictor.reset_image()
        records.boxes = amg.uncrop_boxes(records.boxes, crop_box)
        records.points = amg.uncrop_points(records.points, crop_box)
        return records

    def _decode_batch(self, points: np.ndarray, crop_size: tuple[int, int], candidates: _Candidates) -> None:
        """Decode a batch of point prompts; keep the candidates that pass the IoU filter."""
        p = self.predictor
        coords = torch.as_tensor(p.transform.apply_coords(points, crop_size), dtype=torch.float)
        # A GPU decodes the whole batch at once; a CPU is as fast with less memory in chunks.
        cpu = torch.device(p.device).type == "cpu"
        step = min(DECODE_CHUNK, self.points_per_batch) if cpu else self.points_per_batch
        for start in range(0, len(points), step):
            # (point, mask token) order, as segment-anything flattens them; may be empty.
            chunk = coords[start : start + step]
            if self.decoder_precision == "float32":  # the protocol's two-argument form
                low_res, iou, idx = p.decode_points(chunk, self.pred_iou_thresh)
            else:
                low_res, iou, idx = p.decode_points(chunk, self.pred_iou_thresh, self.decoder_precision)
            candidates.add(low_res, iou, torch.as_tensor(points[start : start + step][idx.cpu().numpy()]))

    def _select(
        self,
        candidates: _Candidates,
        crop_size: tuple[int, int],
        crop_box: list[int],
        orig_size: tuple[int, int],
        store: rle.BitStore,
    ) -> MaskRecords:
        """The candidates that pass the stability and crop-edge filters and box NMS, in NMS
        order (highest predicted IoU first, ties in decoding order).

        Greedy NMS, done while the candidates are upsampled in that order, a chunk at a
        time: a candidate is kept unless a kept one overlaps it above the threshold. With
        `skip_suppressed`, a candidate whose low-res box bounds already prove that is
        never upsampled (`utils.bounds`); the result is the same.
        """
        p = self.predictor
        cpu = torch.device(p.device).type == "cpu"
        # Masks upsampled at once: mask_chunk, fewer on huge images (each is H x W float32 logits).
        chunk = self.mask_chunk or (8 if cpu else 3 * self.points_per_batch)
        budget = UPSAMPLE_BYTES if cpu else UPSAMPLE_BYTES_GPU
        chunk = max(1, min(chunk, budget // (4 * crop_size[0] * crop_size[1])))
        order = torch.sort(candidates.iou, descending=True, stable=True).indices.tolist()
        kept_boxes = np.zeros((0, 4), np.float32)
        out = MaskRecords(store)
        pos = 0
        while pos < len(order):
            batch: list[int] = []
            while pos < len(order) and len(batch) < chunk:
                i = order[pos]
                pos += 1
                if not (
                    self.skip_suppressed and candidates.surely_suppressed(i, kept_boxes, self.box_nms_thresh)
                ):
                    batch.append(i)
            if not batch:
                break
            index = torch.tensor(batch)
            logits = candidates.upscale(batch)
            stability, masks_t, boxes, passed = self._filter(logits, crop_box, orig_size)
            keep = []
            for j, box in zip(passed.tolist(), boxes.float().numpy()):
                iou = box_iou_one(box, kept_boxes).astype(np.float64)
                if not np.any(iou > self.box_nms_thresh):
                    keep.append(j)
                    kept_boxes = np.concatenate([kept_boxes, box[None]])
            rows = torch.searchsorted(passed, torch.tensor(keep, dtype=torch.long))
            bits, areas = self._pack(masks_t[rows.to(masks_t.device)], crop_box, orig_size, store)
            chosen = index[keep]
            kept_logits = candidates.copy_logits(chosen.tolist(), store) if self.keep_logits else []
            out.extend(
                MaskRecords(
                    store,
                    bits,
                    boxes[rows],
                    candidates.iou[chosen].float(),
                    candidates.points[chosen],
                    stability[keep].float(),
                    torch.tensor([crop_box], dtype=torch.long).expand(len(bits), 4),
                    torch.from_numpy(areas),
                    kept_logits,
                )
            )
        return out

    def _filter(
        self, logits: torch.Tensor, crop_box: list[int], orig_size: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Full-size logits NxHxW (crop frame) -> every candidate's stability score (N), and
        for those that pass the stability and crop-edge filters: their column-major masks
        (MxWxH bool), boxes (Mx4 XYXY, crop frame) and positions (M, increasing)."""
        threshold = self.predictor.mask_threshold
        stability = amg.stability_score(logits, threshold, self.stability_score_offset).cpu()
        passed = torch.arange(len(logits))
        if self.stability_score_thresh > 0.0:
            passed = passed[stability >= self.stability_score_thresh]
            logits = logits[passed.to(logits.device)]
        masks = logits > threshold
        # Column-major, as RLE and packing read it; reducing uint8 views over the middle
        # axis is the fast way to get each mask's row and column projections.
        masks_t = masks.transpose(1, 2).contiguous()
        cols = masks.view(torch.uint8).amax(dim=1) > 0
        rows = masks_t.view(torch.uint8).amax(dim=1) > 0
        boxes = amg.boxes_from_projections(rows, cols).cpu()
        near = amg.is_box_near_crop_edge(boxes, crop_box, [0, 0, orig_size[1], orig_size[0]])
        if near.any():
            masks_t, boxes, passed = masks_t[~near.to(masks_t.device)], boxes[~near], passed[~near]
        return stability, masks_t, boxes, passed

    def _pack(
        self, masks_t: torch.Tensor, crop_box: list[int], orig_size: tuple[int, int], store: rle.BitStore
    ) -> tuple[list, np.ndarray]:
        """Column-major crop masks -> packed bits of the whole image (store handles) and areas."""
        x0, y0, x1, y1 = crop_box
        masks_t = amg.uncrop_masks(masks_t, [y0, x0, y1, x1], orig_size[1], orig_size[0])  # transposed frame
        if masks_t.device.type == "cpu":
            return rle.pack_columns(masks_t.numpy(), store)
        packed, areas = rle.pack_columns_torch(masks_t)  # on the device: only the bits cross to the host
        return store.add(packed.cpu().numpy()), areas.cpu().numpy()

    def _remove_small_regions(self, records: MaskRecords, size: tuple[int, int]) -> None:
        """Fill small holes, drop small islands, then NMS preferring untouched masks."""
        masks = (rle.bits_to_mask(records.read(i), size) for i in range(len(records)))
        nms_thresh = max(self.box_nms_thresh, self.crop_nms_thresh)
        keep, changed, boxes = amg.clean_small_regions(masks, self.min_mask_region_area, nms_thresh)
        for i in keep.tolist():
            if i in changed:  # re-encode only the masks that changed
                bits, area = rle.pack_columns(changed[i].T[None], records.store)
                records.bits[i], records.areas[i] = bits[0], int(area[0])
                records.boxes[i] = boxes[i]
        records.select(keep)

    # ---- segment-anything's intermediate steps, for code that calls or subclasses them ----

    @torch.inference_mode()
    def _generate_masks(self, image: np.ndarray) -> amg.MaskData:
        """Every mask before `min_mask_region_area`, as segment-anything's MaskData of numpy
        values: `rles` (uncompressed), `boxes` (XYXY), `iou_preds`, `points`,
        `stability_score`, `crop_boxes`."""
        records = self.generate_records(image, small_regions=False)
        size = image.shape[:2]
        rles = [
            rle.counts_to_rle(rle.bits_to_counts(records.read(i), size), size, compressed=False)
            for i in range(len(records))
        ]
        return amg.MaskData(
            rles=rles,
            boxes=records.boxes.numpy(),
            iou_preds=records.iou_preds.numpy(),
            points=records.points.numpy(),
            stability_score=records.stability.numpy(),
            crop_boxes=records.crop_boxes.numpy(),
        )

    @staticmethod
    def postprocess_small_regions(mask_data: amg.MaskData, min_area: int, nms_thresh: float) -> amg.MaskData:
        """segment-anything's step on MaskData: fill holes, drop islands smaller than
        `min_area`, NMS preferring unchanged masks; the changed masks' RLEs and boxes are redone."""
        if len(mask_data["rles"]) == 0:
            return mask_data
        masks = (amg.rle_to_mask(r) for r in mask_data["rles"])
        keep, changed, boxes = amg.clean_small_regions(masks, min_area, nms_thresh)
        for i in keep.tolist():
            if i in changed:
                mask_data["rles"][i] = amg.mask_to_rle_pytorch(torch.from_numpy(changed[i])[None])[0]
                mask_data["boxes"][i] = (
                    boxes[i].numpy() if isinstance(mask_data["boxes"], np.ndarray) else boxes[i]
                )
        mask_data.filter(keep)
        return mask_data


def _unpack_on_device(device: torch.device) -> bool:
    """Whether binary masks are unpacked on `device` (a GPU; on a CPU NumPy is faster)."""
    return device.type != "cpu"


def _resident_bytes(device: torch.device) -> int:
    """Bytes of low-res candidates to keep on `device`: none on a CPU (the host store is
    the same memory), RESIDENT_BYTES_GPU elsewhere (no copy to the host and back)."""
    return 0 if device.type == "cpu" else RESIDENT_BYTES_GPU


class _Candidates:
    """One crop's candidate masks as low-res logits (the `low_res_region` block), with their
    predicted IoU, point and box bounds, until `SamAutomaticMaskGenerator._select` upsamples
    the ones it needs. The logits stay on the predictor's device up to `resident_bytes`;
    the rest wait in a host store that spills to a temporary file."""

    def __init__(
        self, predictor: Predictor, crop_size: tuple[int, int], memory_bytes: int, resident_bytes: int = 0
    ) -> None:
        self.predictor, self.crop_size = predictor, crop_size
        self.store = rle.BitStore(memory_bytes)
        self.resident_bytes, self.resident_used = resident_bytes, 0
        self.handles: list = []  # per candidate: its block on the device, or a `store` handle
        self.iou = torch.zeros(0)
        self.points = torch.zeros(0, 2, dtype=torch.float64)
        self.inner = self.outer = np.zeros((0, 4), np.int64)
        self.known = np.zeros(0, bool)
        self.low_size: tuple[int, int] = (0, 0)
        self.block: tuple[int, int] = (0, 0)
        self.dtype = torch.float32

    def add(self, low_res: torch.Tensor, iou: torch.Tensor, points: torch.Tensor) -> None:
        """NxHxW low-res logits (model frame), their N predicted IoU and Nx2 points."""
        if len(low_res) == 0:
            return
        p = self.predictor
        self.low_size = (low_res.shape[-2], low_res.shape[-1])
        self.block = low_res_region(self.low_size, p.input_size, p.img_size)
        block = low_res[:, : self.block[0], : self.block[1]].contiguous()
        self.dtype = block.dtype
        inner, outer, known = bounds.box_bounds(  # on the device; the bounds come back
            block, self.low_size, p.input_size, self.crop_size, p.img_size, p.mask_threshold
        )
        nbytes = block.numel() * block.element_size()
        if self.resident_used + nbytes <= self.resident_bytes:
            self.resident_used += nbytes
            self.handles += list(block.unbind(0))
        else:
            block = block.cpu()
            self.handles += self.store.add(block.view(len(block), -1).view(torch.uint8).numpy())
        self.iou = torch.cat([self.iou, iou.cpu().float()])
        self.points = torch.cat([self.points, points.to(self.points.dtype)])
        self.inner = np.concatenate([self.inner, inner.numpy()])
        self.outer = np.concatenate([self.outer, outer.numpy()])
        self.known = np.concatenate([self.known, known.numpy()])

    def surely_suppressed(self, i: int, kept: np.ndarray, iou_threshold: float) -> bool:
        return bool(self.known[i]) and bounds.surely_suppressed(
            self.inner[i], self.outer[i], kept, iou_threshold
        )

    def copy_logits(self, index: list[int], store: rle.BitStore) -> list[CropLogits]:
        """Candidates `index`'s low-res blocks, as float32, copied into `store` (the
        records' own: the candidates' store goes with the crop)."""
        if not index:
            return []
        rows = []
        for i in index:
            row = self.handles[i]
            if not isinstance(row, torch.Tensor):
                row = torch.from_numpy(self.store.read(row).copy()).view(self.dtype)  # may be read-only
            rows.append(row.reshape(-1).float().cpu().numpy())
        handles = store.add(np.stack(rows).view(np.uint8))
        return [CropLogits(h, self.block, self.low_size, self.predictor.input_size) for h in handles]

    def upscale(self, index: list[int]) -> torch.Tensor:
        """Candidates `index` upsampled to full-size logits, NxHxW in the crop frame."""
        p = self.predictor
        rows = [self.handles[i] for i in index]
        stored = [j for j, row in enumerate(rows) if not isinstance(row, torch.Tensor)]
        if stored:  # from the host store, to the device
            raw = np.stack([self.store.read(rows[j]) for j in stored])
            loaded = torch.from_numpy(raw).view(self.dtype).view(len(stored), *self.block).to(p.device)
            for j, row in zip(stored, loaded):
                rows[j] = row
        block = torch.stack(rows)[:, None]
        return upscale_masks(block, p.input_size, self.crop_size, p.img_size, self.low_size)[:, 0]


def _grid(points: object, layer: int) -> np.ndarray:
    """A crop layer's point grid, checked: Nx2 (x, y) fractions of the crop, in [0, 1]."""
    try:
        grid = np.asarray(points, dtype=float)
    except (TypeError, ValueError):
        grid = np.full((1, 1), np.nan)
    if grid.ndim != 2 or grid.shape[1] != 2 or not ((grid >= 0) & (grid <= 1)).all():
        raise PromptError(
            f"point_grids[{layer}] must be an Nx2 array of (x, y) fractions of the crop, in "
            f"[0, 1]; got {str(points)[:80]}"
        )
    return grid


def _check_int(name: str, value: object, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise PromptError(f"{name} must be an integer >= {low}, got {value!r}")
