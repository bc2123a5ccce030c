"""Soft masks (8-bit alpha mattes) from the model's low-res logits, without torch.

A SAM mask is its upscaled logits above 0. Where the outline runs, the logits' sigmoid
is the model's own anti-aliased edge: a photo tool composites with it instead of the
hard mask's staircase. Elsewhere the logits can hover near 0 (shadows, thin parts) and
their sigmoid would leave faint halos and holes, so the soft values are kept only on
the outline itself: at pixels whose bilinear interpolation mixes low-res cells on both
sides of the threshold. Everywhere else the matte is the hard mask (255 inside, 0
outside), and on the outline it never contradicts it (>= 128 inside, <= 127 outside).
"""

from __future__ import annotations

import math

import numpy as np

from .boxes import masks_to_boxes

_BAND = 512  # rows of the matte computed at once


def _axis(in_n: int, out_n: int, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of output samples start..stop-1 when resizing in_n to
    out_n samples bilinearly with half-pixel centres and no antialiasing (torch's
    `interpolate(mode="bilinear", align_corners=False)`, downscaling included)."""
    src = np.maximum((np.arange(start, stop) + 0.5) * (in_n / out_n) - 0.5, 0.0)
    i0 = np.minimum(src.astype(np.int64), in_n - 1)
    i1 = np.minimum(i0 + 1, in_n - 1)
    return i0, i1, (src - i0).astype(np.float32)


def _blend(a: np.ndarray, rows: tuple, cols: tuple) -> np.ndarray:
    """Rows, then columns, of `a` interpolated at the (i0, i1, weight) of `_axis`."""
    r0, r1, rw = rows
    c0, c1, cw = cols
    a = np.asarray(a, dtype=np.float32)
    out = a[r0] * (1 - rw[:, None]) + a[r1] * rw[:, None]
    return out[:, c0] * (1 - cw) + out[:, c1] * cw


def resize_bilinear(
    a: np.ndarray, size: tuple[int, int], window: tuple[int, int, int, int] | None = None
) -> np.ndarray:
    """HxW float array -> the (h, w) = `size` bilinear resize (torch's `interpolate`,
    align_corners=False, no antialiasing), float32; `window` (x0, y0, x1, y1), exclusive
    ends: only that part of the result, computed alone."""
    h, w = size
    x0, y0, x1, y1 = window if window is not None else (0, 0, w, h)
    return _blend(a, _axis(a.shape[0], h, y0, y1), _axis(a.shape[1], w, x0, x1))


def upscale_logits(
    low_res: np.ndarray,
    input_size: tuple[int, int],
    original_size: tuple[int, int],
    window: tuple[int, int, int, int] | None = None,
) -> np.ndarray:
    """hxw low-res logits (256x256 for a 1024-pixel model) -> logits in the original
    image frame, as `modeling.sam.upscale_masks` computes them (upsampled to the square
    model input, padding cropped off, resized to `original_size` (H, W)) up to float
    rounding; `window` (x0, y0, x1, y1): only that part of the HxW result, from only the
    part of the model-input upsampling that it reads."""
    h, w = original_size
    x0, y0, x1, y1 = window if window is not None else (0, 0, w, h)
    side = 4 * low_res.shape[0]  # the model input: the low-res grid is a quarter of it
    rows, cols = _axis(input_size[0], h, y0, y1), _axis(input_size[1], w, x0, x1)
    top, bottom, left, right = rows[0][0], rows[1][-1] + 1, cols[0][0], cols[1][-1] + 1
    model = _blend(
        low_res, _axis(low_res.shape[0], side, top, bottom), _axis(low_res.shape[1], side, left, right)
    )
    return _blend(model, (rows[0] - top, rows[1] - top, rows[2]), (cols[0] - left, cols[1] - left, cols[2]))


def soft_mask(
    low_res: np.ndarray, mask: np.ndarray, input_size: tuple[int, int], threshold: float = 0.0
) -> np.ndarray:
    """HxW uint8 alpha: `mask` (HxW bool, the low-res logits `low_res` above `threshold`
    once upscaled to the image of `input_size` in the model frame) with the logits'
    sigmoid on its outline (see the module's docstring). An empty mask gives zeros."""
    mask = np.asarray(mask, dtype=bool)
    out = np.zeros(mask.shape, dtype=np.uint8)
    if not mask.any():
        return out
    h, w = mask.shape
    # A pixel's support reaches about two low-res cells from it; a cell is this many pixels.
    margin = math.ceil(2 * 4 * max(h / input_size[0], w / input_size[1])) + 1
    bx0, by0, bx1, by1 = (int(v) for v in masks_to_boxes(mask[None])[0])
    y0, y1 = max(0, by0 - margin), min(h, by1 + margin + 1)
    x0, x1 = max(0, bx0 - margin), min(w, bx1 + margin + 1)
    above_low = (low_res > threshold).astype(np.float32)
    for top in range(y0, y1, _BAND):  # in bands of rows: memory stays a few arrays of one band
        window = (x0, top, x1, min(y1, top + _BAND))
        # The share of each pixel's interpolation drawn from cells above the threshold:
        # strictly between 0 and 1 exactly where the cells mixed lie on both sides of it.
        above = upscale_logits(above_low, input_size, (h, w), window)
        edge = (above > 1e-6) & (above < 1 - 1e-6)
        inside = mask[top : window[3], x0:x1]
        band = out[top : window[3], x0:x1]
        band[inside] = 255
        logits = upscale_logits(low_res, input_size, (h, w), window)[edge] - threshold
        soft = 127.5 * (1 + np.tanh(logits / 2))  # 255 * sigmoid, without exp's overflow
        inner = inside[edge]
        band[edge] = np.rint(np.where(inner, np.maximum(soft, 128), np.minimum(soft, 127)))
    return out
