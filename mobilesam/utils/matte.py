"""Soft masks (8-bit alpha mattes) from the model's low-res logits, without torch.

A SAM mask is its upscaled logits above 0. Where the outline runs, the logits' sigmoid
is the model's own anti-aliased edge: a photo tool composites with it instead of the
hard mask's staircase. Elsewhere the logits can hover near 0 (shadows, thin parts) and
their sigmoid would leave faint halos and holes, so the soft values are kept only on
the outline itself: at pixels whose bilinear interpolation mixes low-res cells on both
sides of the threshold, and only where the mask given has an edge near them (a pixel of
the other side within about the interpolation's reach). Everywhere else the matte is
the hard mask (255 inside, 0 outside), and on the outline it never contradicts it
(>= 128 inside, <= 127 outside). So a mask edited after the model (islands removed,
holes filled: segment everything's min_mask_region_area) leaves no ghost of the
logits' edges.
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
    sides = _Sides(mask, (x0, y0, x1, y1), margin)
    rows = max(1, _BAND // margin) * margin  # whole tiles of `sides` per band
    for top in range(y0, y1, rows):  # in bands of rows: memory stays a few arrays of one band
        window = (x0, top, x1, min(y1, top + rows))
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
        sides.harden_lonely(band, edge, inside, top)  # edges of the logits, not of the mask
    return out


class _Sides:
    """Where a mask's pixels have no pixel of its other side near: the mask's window cut
    into tiles of `reach` x `reach` pixels, and a pixel's neighbourhood its tile and the 8
    around it (the other side within one to two tiles). Beyond the image is neither side:
    a mask cut by the frame has no edge there."""

    def __init__(self, mask: np.ndarray, window: tuple[int, int, int, int], reach: int) -> None:
        x0, y0, x1, y1 = window
        self.origin, self.reach = (y0, x0), reach
        h, w = mask.shape
        th, tw = -(-(y1 - y0) // reach), -(-(x1 - x0) // reach)
        # The tiles and one more all round: how many of each one's pixels are in the mask,
        # and how many in the image (beyond the window, which holds the whole mask, the
        # image's pixels are outside the mask).
        top, left = y0 - reach, x0 - reach
        padded = np.zeros(((th + 2) * reach, (tw + 2) * reach), bool)
        ay0, ax0 = max(0, top), max(0, left)
        ay1, ax1 = min(h, top + padded.shape[0]), min(w, left + padded.shape[1])
        padded[ay0 - top : ay1 - top, ax0 - left : ax1 - left] = mask[ay0:ay1, ax0:ax1]
        rows = padded.reshape(th + 2, reach, padded.shape[1]).sum(axis=1, dtype=np.int32)
        count = rows.reshape(th + 2, tw + 2, reach).sum(axis=2)
        in_image = np.outer(_in_range(top, th + 2, reach, h), _in_range(left, tw + 2, reach, w))
        has_in = _grow(count > 0)[1:-1, 1:-1]
        has_out = _grow(count < in_image)[1:-1, 1:-1]
        # 1: inside pixels here have no outside near; 2: outside pixels no inside near.
        self.code = (~has_out).astype(np.uint8) + 2 * (~has_in).astype(np.uint8)

    def harden_lonely(self, band: np.ndarray, edge: np.ndarray, inside: np.ndarray, top: int) -> None:
        """Set the `edge` pixels of `band` (the matte's rows from `top`, which starts a row
        of tiles, over the window's columns) that have no pixel of the other side near
        to the hard mask (`inside`: 255, else 0). A band with none (a mask as the model
        made it, as a rule) costs one pass over its edge."""
        r, (bh, bw) = self.reach, band.shape
        ty = (top - self.origin[0]) // r
        code = self.code[ty : ty + -(-bh // r)]
        padded = np.zeros((code.shape[0] * r, code.shape[1] * r), bool)
        padded[:bh, :bw] = edge
        if not (_tiles_any(padded, r) & (code > 0)).any():
            return
        code = np.repeat(np.repeat(code, r, axis=0), r, axis=1)[:bh, :bw]
        lonely = edge & np.where(inside, code == 1, code == 2)
        band[lonely] = 255 * inside[lonely]


def _in_range(start: int, k: int, reach: int, n: int) -> np.ndarray:
    """How many of each of `k` runs of `reach` pixels from `start` lie in [0, n)."""
    starts = start + reach * np.arange(k)
    return np.clip(np.minimum(starts + reach, n) - np.maximum(starts, 0), 0, None)


def _tiles_any(a: np.ndarray, reach: int) -> np.ndarray:
    """Per tile of `reach` x `reach` (a's sides are multiples of it): any pixel set."""
    th, tw = a.shape[0] // reach, a.shape[1] // reach
    return a.reshape(th, reach, a.shape[1]).any(axis=1).reshape(th, tw, reach).any(axis=2)


def _grow(flags: np.ndarray) -> np.ndarray:
    """Flags OR-ed with their 8 neighbours' (beyond the grid: unset)."""
    padded = np.pad(flags, 1)
    h, w = flags.shape
    out = np.zeros_like(flags)
    for dy in range(3):
        for dx in range(3):
            out |= padded[dy : dy + h, dx : dx + w]
    return out
