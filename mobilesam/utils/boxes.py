"""Box helpers for binary masks."""

from __future__ import annotations

import numpy as np


def masks_to_boxes(masks: np.ndarray) -> np.ndarray:
    """NxHxW bool masks -> Nx4 int64 XYXY boxes, inclusive pixel bounds; empty masks give 0s."""
    masks = np.asarray(masks, dtype=bool)
    _, h, w = masks.shape
    rows = masks.any(axis=2)  # N x H
    cols = masks.any(axis=1)  # N x W
    has = rows.any(axis=1)
    y0 = np.where(has, rows.argmax(axis=1), 0)
    y1 = np.where(has, h - 1 - rows[:, ::-1].argmax(axis=1), 0)
    x0 = np.where(has, cols.argmax(axis=1), 0)
    x1 = np.where(has, w - 1 - cols[:, ::-1].argmax(axis=1), 0)
    return np.stack([x0, y0, x1, y1], axis=1).astype(np.int64)


def xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    """Inclusive XYXY pixel boxes -> XYWH with width = x1 - x0, segment-anything's convention
    (`generate()` output, one pixel short of the mask's extent)."""
    boxes = np.asarray(boxes)
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


def xyxy_to_coco_bbox(boxes: np.ndarray, areas: np.ndarray) -> np.ndarray:
    """Inclusive XYXY pixel boxes -> COCO XYWH, the mask's extent as pycocotools' `toBbox`
    gives it (width = x1 - x0 + 1); an empty mask (area 0) gives [0, 0, 0, 0]."""
    xywh = xyxy_to_xywh(boxes) + np.array([0, 0, 1, 1])
    return np.where(np.asarray(areas)[:, None] > 0, xywh, 0)
