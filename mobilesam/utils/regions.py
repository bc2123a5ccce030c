"""Binary masks: their IoU, growing them by a radius, and removing small islands and
holes (OpenCV, the `amg` extra)."""

from __future__ import annotations

import math

import numpy as np

from ..errors import missing_extra
from .boxes import masks_to_boxes


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks; two empty masks agree (1.0)."""
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def dilate(mask: np.ndarray, radius: float) -> np.ndarray:
    """HxW bool mask grown by a disc: every pixel within `radius` pixels (centre to centre,
    Euclidean) of a mask pixel, as a new array. Inpainting wants such a margin round an
    object (its shadow, its blurred edge). Works inside the mask's extent plus the radius,
    one row offset at a time, so it costs about (2 * radius + 1) passes over that window."""
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 2:
        raise ValueError(f"mask must be HxW, got shape {m.shape}")
    if isinstance(radius, bool) or not isinstance(radius, (int, float)) or not 0 <= radius < math.inf:
        raise ValueError(f"radius must be a number of pixels >= 0, got {radius!r}")
    out = m.copy()
    r = int(radius)  # offsets between pixel centres are whole pixels
    if r == 0 or not m.any():
        return out
    h, w = m.shape
    bx0, by0, bx1, by1 = (int(v) for v in masks_to_boxes(m[None])[0])
    y0, y1 = max(0, by0 - r), min(h, by1 + r + 1)
    x0, x1 = max(0, bx0 - r), min(w, bx1 + r + 1)
    grown, dst, reach, n = m[y0:y1, x0:x1].copy(), out[y0:y1, x0:x1], 0, y1 - y0
    for dy in range(min(r, n - 1), -1, -1):  # the widest row of the disc last
        half = math.floor(math.sqrt(radius * radius - dy * dy) + 1e-9)  # its half-width at dy
        while reach < half:  # grow sideways; a step up to reach + 1 leaves no gap
            s = min(reach + 1, half - reach)
            g = grown.copy()
            g[:, s:] |= grown[:, :-s]
            g[:, :-s] |= grown[:, s:]
            grown, reach = g, reach + s
        dst[dy:] |= grown[: n - dy]
        dst[: n - dy] |= grown[dy:]
    return out


def require_cv2():
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
    cv2 = require_cv2()
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


def farthest_from_boundary(mask: np.ndarray) -> tuple[int, int]:
    """(x, y) of the pixel of a non-empty HxW bool mask farthest from its boundary (exact
    Euclidean distance to the nearest pixel outside it, the image's edge counting as
    outside): the middle of its largest inscribed disc, the usual first click of
    interactive segmentation benchmarks. Ties go to the first in row-major order. Needs
    OpenCV (the amg extra)."""
    x, y, _ = deepest_point(mask)
    return x, y


def deepest_point(mask: np.ndarray) -> tuple[int, int, float]:
    """`farthest_from_boundary`'s (x, y) and that distance in pixels (1 for a lone pixel)."""
    if not mask.any():
        raise ValueError("an empty mask has no inside")
    cv2 = require_cv2()
    x0, y0, x1, y1 = masks_to_boxes(mask[None])[0]
    crop = mask[y0 : y1 + 1, x0 : x1 + 1]  # outside its extent the distance only grows
    padded = np.pad(crop, 1).astype(np.uint8)  # the edge of the crop (and image) is outside
    distance = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return int(x0 + x), int(y0 + y), float(distance[y, x])
