"""Draw masks and prompts over an image; cut an object out of it."""

from __future__ import annotations

import colorsys
import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .errors import PromptError
from .utils.boxes import masks_to_boxes

POSITIVE_COLOR = (0, 220, 0)
NEGATIVE_COLOR = (230, 0, 0)
BOX_COLOR = (0, 170, 255)
_BAND = 256  # rows blended at once


def palette(n: int) -> np.ndarray:
    """n distinct, saturated RGB colours (golden-ratio hue steps): nx3 uint8."""
    colors = [colorsys.hsv_to_rgb((0.1 + i * 0.618033988749895) % 1.0, 0.75, 1.0) for i in range(n)]
    return (np.array(colors, dtype=np.float64).reshape(n, 3) * 255).round().astype(np.uint8)


def paint_order(masks: np.ndarray) -> np.ndarray:
    """Indices of NxHxW masks, largest first, so that smaller masks are painted over them."""
    return np.argsort([-m.sum() for m in masks], kind="stable")


def mask_edges(mask: np.ndarray, width: int = 2) -> np.ndarray:
    """Pixels of an HxW bool mask that have a neighbour outside it, within `width` pixels."""
    inner = mask.copy()
    for _ in range(width):
        shrunk = inner.copy()
        shrunk[1:, :] &= inner[:-1, :]
        shrunk[:-1, :] &= inner[1:, :]
        shrunk[:, 1:] &= inner[:, :-1]
        shrunk[:, :-1] &= inner[:, 1:]
        inner = shrunk
    return mask & ~inner


def cutout(image: np.ndarray, mask: np.ndarray, crop: bool = True, feather: float = 0) -> Image.Image:
    """HxWx3 uint8 RGB `image` and HxW bool `mask` -> RGBA: the image's pixels inside the
    mask (alpha 255), nothing outside (alpha 0, colour 0), cropped to the mask's extent
    unless `crop` is False. A uint8 `mask` is a soft one, the alpha itself (0-255).
    `feather`: a soft edge, the alpha blurred by a Gaussian of that standard deviation in
    pixels (half-transparent on the mask's outline; the crop grows by 3 of them each side,
    within the image). An empty mask is a ValueError: there is nothing to cut out."""
    if not mask.any():
        raise ValueError("nothing to cut out: the mask is empty")
    if isinstance(feather, bool) or not isinstance(feather, (int, float)) or not 0 <= feather <= 256:
        raise ValueError(f"feather must be a number of pixels in [0, 256], got {feather!r}")
    if crop:
        x0, y0, x1, y1 = masks_to_boxes(mask[None])[0]
        m = math.ceil(3 * feather)
        h, w = mask.shape
        x0, y0, x1, y1 = max(0, x0 - m), max(0, y0 - m), min(w - 1, x1 + m), min(h - 1, y1 + m)
        image, mask = image[y0 : y1 + 1, x0 : x1 + 1], mask[y0 : y1 + 1, x0 : x1 + 1]
    alpha = Image.fromarray(mask if mask.dtype == np.uint8 else mask.astype(np.uint8) * 255)
    if feather:
        alpha = alpha.filter(ImageFilter.GaussianBlur(feather))
    rgba = np.dstack([image, np.asarray(alpha)])
    rgba[rgba[..., 3] == 0] = 0
    return Image.fromarray(rgba, "RGBA")


def overlay(
    image: np.ndarray,
    masks: Sequence[np.ndarray],
    alpha: float = 0.5,
    contours: bool = True,
    colors: np.ndarray | None = None,
    boxes: np.ndarray | None = None,
    points: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    areas: np.ndarray | None = None,
    mask_boxes: np.ndarray | None = None,
) -> Image.Image:
    """Blend N HxW bool masks over an HxWx3 uint8 image, one colour each.

    masks: an NxHxW array or any sequence of HxW masks (read one at a time, so a result
    holding packed masks never builds them all). Masks are painted largest first so
    small ones stay visible; each touches only its bounding box (`mask_boxes`, Nx4
    inclusive XYXY, and `areas` are computed when not given). Boxes (Kx4 XYXY) and
    points (Mx2, labels 1 green / 0 red) are drawn on top, in image pixels.
    """
    if not 0 <= alpha <= 1:  # outside, the blend wraps around uint8: colours of nothing
        raise PromptError(f"alpha (the masks' opacity) must be between 0 and 1, got {alpha}")
    out = np.array(image, dtype=np.uint8, copy=True)
    h, w = image.shape[:2]
    if colors is None:
        colors = palette(len(masks))
    if areas is None:
        areas = np.array([int(np.count_nonzero(m)) for m in masks], dtype=np.int64)
    margin = 2 if contours else 0
    for i in np.argsort(-np.asarray(areas), kind="stable"):
        if areas[i] == 0:
            continue
        m = np.asarray(masks[i], dtype=bool).reshape(h, w)
        x0, y0, x1, y1 = (mask_boxes[i] if mask_boxes is not None else masks_to_boxes(m[None])[0]).tolist()
        # The box plus a margin, so the edge test sees the pixels just outside the mask.
        ys, xs = (
            slice(max(0, y0 - margin), min(h, y1 + 1 + margin)),
            slice(max(0, x0 - margin), min(w, x1 + 1 + margin)),
        )
        crop, region = m[ys, xs], out[ys, xs]
        color = colors[i].astype(np.float32) * np.float32(alpha)
        edge = (colors[i] * 0.6).round().astype(np.uint8)
        edges = mask_edges(crop) if contours else None
        for r in range(0, crop.shape[0], _BAND):  # bands of rows: the float32 copies stay small
            band, inside = region[r : r + _BAND], crop[r : r + _BAND, :, None]
            blended = (band * np.float32(1 - alpha) + color).round().astype(np.uint8)
            np.copyto(band, blended, where=inside)
            if edges is not None:
                np.copyto(band, edge, where=edges[r : r + _BAND, :, None])
    img = Image.fromarray(out)
    draw = ImageDraw.Draw(img)
    size = max(3, round(max(image.shape[:2]) / 150))
    for box in [] if boxes is None else boxes:
        draw.rectangle([float(v) for v in box], outline=BOX_COLOR, width=max(2, size // 2))
    if points is not None:
        labels = np.ones(len(points), dtype=int) if labels is None else labels
        for (x, y), label in zip(points, labels):
            fill = POSITIVE_COLOR if label == 1 else NEGATIVE_COLOR
            draw.ellipse(
                [x - size, y - size, x + size, y + size], fill=fill, outline=(255, 255, 255), width=2
            )
    return img
