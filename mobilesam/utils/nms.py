"""Greedy non-maximum suppression without torchvision, with torchvision's semantics.

Boxes are visited in decreasing score (a stable sort, so ties keep their input order);
a box is dropped when its IoU with a kept, higher-scoring box is above the threshold.
IoU is computed in float32 and compared in float64, as torchvision's CPU kernel does.
One difference: two boxes of zero area (a one-pixel-wide mask in SAM's inclusive-max
boxes, e.g. on a 1x1 image) have IoU 1 if they are the same box, 0 otherwise, where
torchvision divides 0 by 0 and keeps every copy.
"""

from __future__ import annotations

import numpy as np
import torch


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Nx4 XYXY boxes, N scores -> indices of the kept boxes, highest score first."""
    if len(boxes) == 0:
        return torch.zeros(0, dtype=torch.long)
    order = torch.sort(scores.cpu(), descending=True, stable=True).indices.numpy()
    b = boxes.detach().cpu().float().numpy()[order]
    suppressed = np.zeros(len(b), dtype=bool)
    keep = []
    for i in range(len(b)):
        if suppressed[i]:
            continue
        keep.append(i)
        rest = np.flatnonzero(~suppressed[i + 1 :]) + i + 1
        if rest.size == 0:
            break
        suppressed[rest[box_iou_one(b[i], b[rest]).astype(np.float64) > iou_threshold]] = True
    return torch.as_tensor(order[keep], dtype=torch.long)


def box_iou_one(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """float32 IoU of one XYXY box (4,) with each of Kx4 float32 boxes, as `nms` computes
    it (compare it in float64 with the threshold)."""
    x0, y0, x1, y1 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    w = np.maximum(np.minimum(box[2], x1) - np.maximum(box[0], x0), np.float32(0))
    h = np.maximum(np.minimum(box[3], y1) - np.maximum(box[1], y0), np.float32(0))
    inter = w * h
    union = (box[2] - box[0]) * (box[3] - box[1]) + (x1 - x0) * (y1 - y0) - inter
    same = np.all(boxes == box, axis=1).astype(np.float32)
    return np.divide(inter, union, out=same, where=union > 0)
