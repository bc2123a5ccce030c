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


def build_point_grid(n_per_side: int) -> np.ndarray:
    """n*n points at cell centres of the unit square, (x, y), row by row: (n*n)x2."""
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
            boxes.append([x0, y0, min(x0 + crop_w, im_w), min(y0 + crop_h, im_h)])
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

    Counts are exact integers (int32), as segment-anything computes them.
    """
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
