"""Pure helpers of the automatic mask generator: point grids, crops, stability, boxes.

Semantics follow segment-anything's `utils/amg.py`, so results match it exactly; the
mask-sized computations are vectorised over a batch of masks.
"""

from __future__ import annotations

import math
from itertools import product

import numpy as np
import torch
import torch.nn.functional as F

from ..modeling.fast_paths import tracing


def build_point_grid(n_per_side: int) -> np.ndarray:
    """n*n points at cell centres of the unit square, (x, y), row by row: (n*n)x2; none
    for n = 0 (a crop layer that `crop_n_points_downscale_factor` leaves without points)."""
    if n_per_side == 0:
        return np.zeros((0, 2))
    offset = 1 / (2 * n_per_side)
    side = np.linspace(offset, 1 - offset, n_per_side)
    xs = np.tile(side[None, :], (n_per_side, 1))
    ys = np.tile(side[:, None], (1, n_per_side))
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def build_all_layer_point_grids(n_per_side: int, n_layers: int, scale_per_layer: int) -> list[np.ndarray]:
    """One grid per crop layer, `scale_per_layer` times coarser per layer."""
    return [build_point_grid(int(n_per_side / (scale_per_layer**i))) for i in range(n_layers + 1)]


def generate_crop_boxes(
    im_size: tuple[int, int], n_layers: int, overlap_ratio: float
) -> tuple[list[list[int]], list[int]]:
    """Crop boxes (XYXY) and their layer: the whole image, then 2^i x 2^i overlapping crops."""
    im_h, im_w = im_size
    short_side = min(im_h, im_w)
    boxes, layers = [[0, 0, im_w, im_h]], [0]

    def crop_len(orig_len: int, n_crops: int, overlap: int) -> int:
        return math.ceil((overlap * (n_crops - 1) + orig_len) / n_crops)

    for i_layer in range(n_layers):
        n_crops = 2 ** (i_layer + 1)
        overlap = int(overlap_ratio * short_side * (2 / n_crops))
        crop_w = crop_len(im_w, n_crops, overlap)
        crop_h = crop_len(im_h, n_crops, overlap)
        x0s = [int((crop_w - overlap) * i) for i in range(n_crops)]
        y0s = [int((crop_h - overlap) * i) for i in range(n_crops)]
        for x0, y0 in product(x0s, y0s):
            x1, y1 = min(x0 + crop_w, im_w), min(y0 + crop_h, im_h)
            if x1 > x0 and y1 > y0:  # only images a few pixels across get empty crops
                boxes.append([x0, y0, x1, y1])
                layers.append(i_layer + 1)
    return boxes, layers


def iou_filter(iou: torch.Tensor, thresh: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """NxC predicted IoU -> the rows (prompts) with a candidate above `thresh` (every
    candidate if thresh is 0), which of their candidates pass (RxC bool), and the prompt
    index of each passing candidate in (prompt, candidate) order. Empty when none passes."""
    keep = iou > thresh if thresh > 0.0 else torch.ones_like(iou, dtype=torch.bool)
    rows = keep.any(dim=1).nonzero()[:, 0]
    kept = keep[rows]
    return rows, kept, rows[:, None].expand(-1, kept.shape[1])[kept]


def stability_score(logits: torch.Tensor, mask_threshold: float, offset: float) -> torch.Tensor:
    """IoU of the masks thresholded at threshold +/- offset: Nx...xHxW -> N...

    Counts are exact integers (int32), as segment-anything computes them (0/0 is nan).
    Contiguous float32 CPU logits are counted by NumPy's `count_nonzero`: PyTorch's sum
    over booleans is about 30x slower here (2.4 vs 0.08 ms per 1800x1200 mask), and
    segment everything counts twice for each of ~2,000 candidates. The same integers;
    anything else (other devices and dtypes, views, autograd, tracing) counts in torch.
    """
    if (
        logits.device.type == "cpu"
        and logits.dtype == torch.float32
        and logits.is_contiguous()
        and not logits.requires_grad
        and not tracing()
    ):
        rows = logits.numpy().reshape(-1, logits.shape[-2] * logits.shape[-1])
        inter = np.array([np.count_nonzero(r > mask_threshold + offset) for r in rows], np.int32)
        union = np.array([np.count_nonzero(r > mask_threshold - offset) for r in rows], np.int32)
        return (torch.from_numpy(inter) / torch.from_numpy(union)).reshape(logits.shape[:-2])
    return _stability_score_torch(logits, mask_threshold, offset)


def _stability_score_torch(logits: torch.Tensor, mask_threshold: float, offset: float) -> torch.Tensor:
    inter = (logits > (mask_threshold + offset)).sum(dim=(-1, -2), dtype=torch.int32)
    union = (logits > (mask_threshold - offset)).sum(dim=(-1, -2), dtype=torch.int32)
    return inter / union


def boxes_from_projections(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Per-mask "any pixel on" over rows (NxH) and columns (NxW) -> Nx4 XYXY int64
    (inclusive max); empty masks give zeros, as segment-anything's batched_mask_to_box."""
    h, w = rows.shape[1], cols.shape[1]
    ar_h = torch.arange(h, device=rows.device)
    ar_w = torch.arange(w, device=cols.device)
    boxes = torch.stack(
        [
            torch.where(cols, ar_w, w).amin(dim=1),
            torch.where(rows, ar_h, h).amin(dim=1),
            torch.where(cols, ar_w, -1).amax(dim=1),
            torch.where(rows, ar_h, -1).amax(dim=1),
        ],
        dim=1,
    )
    return boxes * rows.any(dim=1, keepdim=True)


def masks_to_boxes_torch(masks: torch.Tensor) -> torch.Tensor:
    """NxHxW bool -> Nx4 XYXY int64 (inclusive max); empty masks give zeros."""
    if masks.shape[0] == 0:
        return torch.zeros(0, 4, dtype=torch.long, device=masks.device)
    return boxes_from_projections(masks.any(dim=2), masks.any(dim=1))


def is_box_near_crop_edge(
    boxes: torch.Tensor, crop_box: list[int], orig_box: list[int], atol: float = 20.0
) -> torch.Tensor:
    """Boxes (crop frame, Nx4) touching a crop edge that is not also an image edge."""
    crop = torch.as_tensor(crop_box, dtype=torch.float, device=boxes.device)
    orig = torch.as_tensor(orig_box, dtype=torch.float, device=boxes.device)
    boxes = uncrop_boxes(boxes, crop_box).float()
    near_crop = torch.isclose(boxes, crop[None, :], atol=atol, rtol=0)
    near_image = torch.isclose(boxes, orig[None, :], atol=atol, rtol=0)
    return torch.any(near_crop & ~near_image, dim=1)


def uncrop_boxes(boxes: torch.Tensor, crop_box: list[int]) -> torch.Tensor:
    x0, y0 = crop_box[:2]
    return boxes + torch.tensor([x0, y0, x0, y0], device=boxes.device)


def uncrop_points(points: torch.Tensor, crop_box: list[int]) -> torch.Tensor:
    x0, y0 = crop_box[:2]
    return points + torch.tensor([x0, y0], device=points.device, dtype=points.dtype)


def uncrop_masks(masks: torch.Tensor, crop_box: list[int], orig_h: int, orig_w: int) -> torch.Tensor:
    """NxhxW masks of a crop -> NxHxW masks of the whole image (zero outside the crop)."""
    x0, y0, x1, y1 = crop_box
    if (x0, y0, x1, y1) == (0, 0, orig_w, orig_h):
        return masks
    pad_x, pad_y = orig_w - (x1 - x0), orig_h - (y1 - y0)
    return F.pad(masks, (x0, pad_x - x0, y0, pad_y - y0), value=0)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def xyxy_to_xywh(box: list[float]) -> list[float]:
    return [box[0], box[1], box[2] - box[0], box[3] - box[1]]


# ---- segment-anything's helper names, for code that imports or subclasses them ---------


class MaskData:
    """segment-anything's container of per-mask values: named lists, arrays or tensors
    with one row per mask, filtered and concatenated together."""

    def __init__(self, **kwargs: object) -> None:
        for value in kwargs.values():
            _check_mask_data_value(value)
        self._stats = dict(kwargs)

    def __setitem__(self, key: str, value: object) -> None:
        _check_mask_data_value(value)
        self._stats[key] = value

    def __delitem__(self, key: str) -> None:
        del self._stats[key]

    def __getitem__(self, key: str) -> object:
        return self._stats[key]

    def items(self):
        return self._stats.items()

    def filter(self, keep: torch.Tensor) -> None:
        """Keep the rows where `keep` is True (bool) or the rows `keep` lists (indices)."""
        keep = torch.as_tensor(keep)
        for k, v in self._stats.items():
            if v is None:
                continue
            if isinstance(v, torch.Tensor):
                self._stats[k] = v[keep.to(v.device)]
            elif isinstance(v, np.ndarray):
                self._stats[k] = v[keep.cpu().numpy()]
            elif keep.dtype == torch.bool:
                self._stats[k] = [a for a, kept in zip(v, keep.tolist()) if kept]
            else:
                self._stats[k] = [v[i] for i in keep.tolist()]

    def cat(self, new_stats: MaskData) -> None:
        for k, v in new_stats.items():
            if k not in self._stats or self._stats[k] is None:
                self._stats[k] = list(v) if isinstance(v, list) else v
            elif isinstance(v, torch.Tensor):
                self._stats[k] = torch.cat([self._stats[k], v], dim=0)
            elif isinstance(v, np.ndarray):
                self._stats[k] = np.concatenate([self._stats[k], v], axis=0)
            else:
                self._stats[k] = self._stats[k] + list(v)

    def to_numpy(self) -> None:
        for k, v in self._stats.items():
            if isinstance(v, torch.Tensor):
                self._stats[k] = v.detach().cpu().numpy()


def _check_mask_data_value(value: object) -> None:
    if value is not None and not isinstance(value, (list, np.ndarray, torch.Tensor)):
        raise TypeError("MaskData only holds lists, numpy arrays and torch tensors")


def batch_iterator(batch_size: int, *args: object):
    """Yield lists of `batch_size`-long slices of each argument (all of the same length)."""
    if not args or any(len(a) != len(args[0]) for a in args):
        raise ValueError("batch_iterator needs arguments of one length")
    n = len(args[0])
    for start in range(0, n, batch_size):
        yield [a[start : start + batch_size] for a in args]


def calculate_stability_score(
    masks: torch.Tensor, mask_threshold: float, threshold_offset: float
) -> torch.Tensor:
    """segment-anything's name for `stability_score`."""
    return stability_score(masks, mask_threshold, threshold_offset)


def batched_mask_to_box(masks: torch.Tensor) -> torch.Tensor:
    """...xHxW bool -> ...x4 XYXY (inclusive max); empty masks give [0, 0, 0, 0]."""
    if masks.numel() == 0:  # empty is a normal size
        return torch.zeros(*masks.shape[:-2], 4, dtype=torch.long, device=masks.device)
    flat = masks.reshape(-1, *masks.shape[-2:])
    return masks_to_boxes_torch(flat).reshape(*masks.shape[:-2], 4)


def box_xyxy_to_xywh(box_xyxy: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """One XYXY box -> XYWH, a tensor or (as `_generate_masks` returns them) a numpy row."""
    box = box_xyxy.clone() if isinstance(box_xyxy, torch.Tensor) else np.copy(box_xyxy)
    box[2] = box[2] - box[0]
    box[3] = box[3] - box[1]
    return box


uncrop_boxes_xyxy = uncrop_boxes


def mask_to_rle_pytorch(tensor: torch.Tensor) -> list[dict]:
    """BxHxW bool -> uncompressed COCO RLE per mask (column-major, starting with zeros)."""
    from . import rle

    return [rle.encode(m, compressed=False) for m in tensor.cpu().numpy()]


def rle_to_mask(rle_dict: dict) -> np.ndarray:
    """Uncompressed COCO RLE -> HxW bool."""
    from . import rle

    return rle.counts_to_mask(rle_dict["counts"], tuple(rle_dict["size"]))


def area_from_rle(rle_dict: dict) -> int:
    return int(sum(rle_dict["counts"][1::2]))


def coco_encode_rle(uncompressed_rle: dict) -> dict:
    """Uncompressed RLE -> COCO's compressed RLE (counts as a str, pycocotools' encoding)."""
    from . import rle

    return rle.counts_to_rle(uncompressed_rle["counts"], uncompressed_rle["size"])


def clean_small_regions(
    masks, min_area: int, nms_thresh: float
) -> tuple[torch.Tensor, dict[int, np.ndarray], torch.Tensor]:
    """segment-anything's min_mask_region_area pass over HxW bool masks (an iterable): fill
    holes and drop islands smaller than `min_area`, then NMS at `nms_thresh` preferring
    untouched masks. Returns the kept indices, the changed masks by index, and every
    mask's box after the change (Nx4 XYXY)."""
    changed: dict[int, np.ndarray] = {}
    boxes, scores = [], []
    for i, mask in enumerate(masks):
        mask, holes = remove_small_regions(mask, min_area, "holes")
        mask, islands = remove_small_regions(mask, min_area, "islands")
        boxes.append(masks_to_boxes_torch(torch.from_numpy(mask)[None])[0])
        scores.append(0.0 if holes or islands else 1.0)
        if holes or islands:
            changed[i] = mask
    if not boxes:
        return torch.zeros(0, dtype=torch.long), changed, torch.zeros(0, 4, dtype=torch.long)
    from .nms import nms

    boxes = torch.stack(boxes)
    return nms(boxes.float(), torch.tensor(scores), nms_thresh), changed, boxes


def remove_small_regions(mask: np.ndarray, area_thresh: float, mode: str) -> tuple[np.ndarray, bool]:
    """Remove islands ("islands") or fill holes ("holes") smaller than `area_thresh` (OpenCV)."""
    from .regions import remove_small_regions as remove

    return remove(mask, area_thresh, mode)
