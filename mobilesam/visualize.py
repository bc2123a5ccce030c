"""Draw masks and prompts over an image."""

from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image, ImageDraw

POSITIVE_COLOR = (0, 220, 0)
NEGATIVE_COLOR = (230, 0, 0)
BOX_COLOR = (0, 170, 255)


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


def overlay(
    image: np.ndarray,
    masks: np.ndarray,
    alpha: float = 0.5,
    contours: bool = True,
    colors: np.ndarray | None = None,
    boxes: np.ndarray | None = None,
    points: np.ndarray | None = None,
    labels: np.ndarray | None = None,
) -> Image.Image:
    """Blend NxHxW bool masks over an HxWx3 uint8 image, one colour each.

    Masks are painted largest first so small ones stay visible. Boxes (Kx4 XYXY) and
    points (Mx2, labels 1 green / 0 red) are drawn on top, in image pixels.
    """
    out = image.astype(np.float32).copy()
    masks = np.asarray(masks, dtype=bool).reshape(-1, *image.shape[:2])
    if colors is None:
        colors = palette(len(masks))
    for i in paint_order(masks):
        m = masks[i]
        out[m] = (1 - alpha) * out[m] + alpha * colors[i]
        if contours:
            out[mask_edges(m)] = colors[i] * 0.6
    img = Image.fromarray(out.round().clip(0, 255).astype(np.uint8))
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
