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
    x0, y0, x1, y1 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    areas = (x1 - x0) * (y1 - y0)
    suppressed = np.zeros(len(b), dtype=bool)
    keep = []
    for i in range(len(b)):
        if suppressed[i]:
            continue
        keep.append(i)
        rest = np.flatnonzero(~suppressed[i + 1 :]) + i + 1
        if rest.size == 0:
            break
        w = np.maximum(np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]), np.float32(0))
        h = np.maximum(np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]), np.float32(0))
        inter = w * h
        union = areas[i] + areas[rest] - inter
        same = np.all(b[rest] == b[i], axis=1).astype(np.float32)
        iou = np.divide(inter, union, out=same, where=union > 0)
        suppressed[rest[iou.astype(np.float64) > iou_threshold]] = True
    return torch.as_tensor(order[keep], dtype=torch.long)
