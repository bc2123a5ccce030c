"""Binary masks: their IoU, and removing small islands and holes (OpenCV, the `amg` extra)."""

from __future__ import annotations

import numpy as np

from ..errors import missing_extra


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks; two empty masks agree (1.0)."""
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def _cv2():
    try:
        import cv2
    except ImportError:
        raise missing_extra("opencv-python-headless", "amg") from None
    return cv2


def remove_small_regions(mask: np.ndarray, area_thresh: float, mode: str) -> tuple[np.ndarray, bool]:
    """HxW bool mask -> (mask, changed). mode "holes" fills background components smaller
    than area_thresh; "islands" drops foreground components smaller than it (keeping the
    largest if all are small). 8-connectivity, as segment-anything."""
    if mode not in ("holes", "islands"):
        raise ValueError(f"mode must be 'holes' or 'islands', got {mode!r}")
    cv2 = _cv2()
    holes = mode == "holes"
    working = (holes ^ mask).astype(np.uint8)
    n_labels, regions, stats, _ = cv2.connectedComponentsWithStats(working, 8)
    sizes = stats[:, -1][1:]
    small = [i + 1 for i, s in enumerate(sizes) if s < area_thresh]
    if not small:
        return mask, False
    fill = [0, *small]
    if not holes:
        fill = [i for i in range(n_labels) if i not in fill] or [int(np.argmax(sizes)) + 1]
    return np.isin(regions, fill), True
