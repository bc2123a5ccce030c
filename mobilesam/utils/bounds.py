"""Bounds on a mask's box from its low-res logits, and the NMS decisions they settle.

Segment everything upsamples every candidate to the image's full size to get its box,
stability score and pixels, then box NMS throws most of them away. A full-size pixel
is a bilinear blend (non-negative weights) of a few low-res logits around its preimage,
so, without upsampling anything:
- it can be above the threshold only if one of those logits is (the *outer* box holds
  every pixel that can be on);
- it is surely above the threshold if all of them are (the *inner* box spans pixels
  that surely are on).
The mask's box lies between the two, which bounds its IoU with any other box from
below; a candidate whose bound already exceeds the NMS threshold against a kept,
higher-scoring box is suppressed whatever its pixels are, and is never upsampled.

The logits are compared with a margin of 1e-5 of their magnitude, far above the float
rounding of the two interpolations, and every cell a pixel can read counts, whether
its weight is zero or not, with source coordinates taken either side of their float32
rounding.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from . import amg

RELATIVE_MARGIN = 1e-5  # of the largest |logit|: float rounding of two interpolations is ~1e-7
IOU_MARGIN = 1e-6  # NMS computes IoU in float32 (relative error ~3e-7); the bound must clear it


class _Axis:
    """One axis of `upscale_masks`: `out` full-size pixels from `inp` model-input pixels
    (the first ones of `img_size`) from `cells` low-res cells (the first ones of `low`).

    Each interpolation reads, for output pixel i, the source pixels floor(s) and
    floor(s) + 1 at s = (i + 0.5) * scale - 0.5 (clamped at the edges); PyTorch computes
    s in float32, so s is taken `eps` either side. `lo[y]..hi[y]` are the low-res cells
    full-size pixel y can read (a superset of those with a non-zero weight). Pixels with
    the same cells form runs: `run_lo`, `run_hi` their cells, `run_first`, `run_last`
    their first and last pixel.
    """

    def __init__(self, out: int, inp: int, low: int, img_size: int, cells: int) -> None:
        def taps(s: np.ndarray, eps: float, size: int) -> tuple[np.ndarray, np.ndarray]:
            first = np.floor(np.maximum(s - eps, 0.0))
            last = np.floor(np.maximum(s + eps, 0.0)) + 1
            return np.clip(first, 0, size - 1), np.clip(last, 0, size - 1)

        s2 = (np.arange(out) + 0.5) * (inp / out) - 0.5
        j_lo, j_hi = taps(s2, 1e-3 + 1e-6 * max(inp, out), inp)
        scale = low / img_size
        lo, _ = taps((j_lo + 0.5) * scale - 0.5, 1e-3, cells)
        _, hi = taps((j_hi + 0.5) * scale - 0.5, 1e-3, cells)
        self.lo, self.hi = lo.astype(np.int64), hi.astype(np.int64)
        starts = np.flatnonzero(np.r_[True, (self.lo[1:] != self.lo[:-1]) | (self.hi[1:] != self.hi[:-1])])
        self.run_lo, self.run_hi = self.lo[starts], self.hi[starts]
        self.run_first = starts
        # Cell d of each run (its last cell once past it): AND over these is AND over the run.
        longest = int((self.run_hi - self.run_lo).max(initial=0)) + 1
        self.steps = [np.minimum(self.run_lo + d, self.run_hi) for d in range(longest)]
        self.run_last = np.r_[starts[1:] - 1, out - 1]
        self.out = out
        self._on: dict[torch.device, dict[str, torch.Tensor | list[torch.Tensor]]] = {}

    def on(self, device: torch.device) -> dict:
        """This axis's index tables as tensors on `device` (made once per device)."""
        if device not in self._on:
            arrays = {k: getattr(self, k) for k in ("lo", "hi", "run_lo", "run_first", "run_last")}
            tables: dict = {k: torch.from_numpy(v).to(device) for k, v in arrays.items()}
            tables["steps"] = [torch.from_numpy(step).to(device) for step in self.steps]
            self._on[device] = tables
        return self._on[device]

    def outer(self, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The first and last full-size pixel that can read a cell in lo..hi."""
        tables = self.on(lo.device)
        first = torch.searchsorted(tables["hi"], lo, side="left")
        last = torch.searchsorted(tables["lo"], hi, side="right") - 1
        return first.clamp(0, self.out - 1), last.clamp(0, self.out - 1)

    def run_all(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        """Bool tensor -> along `dim`, whether all of each run's cells are True (cells -> runs)."""
        steps = self.on(x.device)["steps"]
        out = x.index_select(dim, steps[0])
        for step in steps[1:]:
            out &= x.index_select(dim, step)
        return out

    def any_run_all(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """NxMxL bool (L cells on the last axis) -> whether, for each of the M rows, all
        cells of some run are True (NxM), and for each run, whether all its cells are
        True in some row (NxR). Windows by shifted slices: gathers along the last axis are slow."""
        n, m, cells = x.shape
        row_any = torch.zeros(n, m, dtype=torch.bool, device=x.device)
        run_any = torch.zeros(n, len(self.run_lo), dtype=torch.bool, device=x.device)
        lengths = self.run_hi - self.run_lo + 1
        for k in np.unique(lengths):
            every = x[..., : cells - k + 1].clone()
            for d in range(1, int(k)):
                every &= x[..., d : cells - k + 1 + d]
            sel = np.flatnonzero(lengths == k)
            starts = torch.from_numpy(self.run_lo[sel]).to(x.device)
            is_start = torch.zeros(cells - k + 1, dtype=torch.uint8, device=x.device)
            is_start[starts] = 1
            every = every.view(torch.uint8)
            row_any |= (every & is_start).amax(dim=2) > 0
            run_any[:, torch.from_numpy(sel).to(x.device)] = (every.amax(dim=1) > 0)[:, starts]
        return row_any, run_any


@functools.lru_cache(maxsize=8)
def _axis(out: int, inp: int, low: int, img_size: int, cells: int) -> _Axis:
    """`_Axis`, made once per crop and not once per decoded chunk (read-only once made)."""
    return _Axis(out, inp, low, img_size, cells)


def box_bounds(
    low_res: torch.Tensor,
    low_size: tuple[int, int],
    input_size: tuple[int, int],
    out_size: tuple[int, int],
    img_size: int,
    threshold: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bounds on the box of each mask `upscale_masks(low_res, input_size, out_size,
    img_size, low_size) > threshold`, computed on the low-res logits.

    low_res: Nxrxc logits, the top-left `low_res_region` block of a `low_size` grid.
    Returns Nx4 int64 XYXY boxes (inclusive max, `out_size` frame) `inner` and `outer`,
    and N bool `known`: where known, the mask's box contains `inner` and lies inside
    `outer`; elsewhere (a mask that may be empty, non-finite logits) nothing is claimed.
    Computed on `low_res`'s device (a GPU's logits stay there); returned on the CPU.
    """
    rows, cols = low_res.shape[1:]
    ys = _axis(out_size[0], input_size[0], low_size[0], img_size, rows)
    xs = _axis(out_size[1], input_size[1], low_size[1], img_size, cols)
    low_res = low_res.float()
    # Per mask: a NaN makes every comparison False, an infinity an infinite margin;
    # either way nothing is sure and the mask's bounds are not known.
    least, most = torch.aminmax(low_res.flatten(1), dim=1)
    margin = (RELATIVE_MARGIN * (1.0 + torch.maximum(least.abs(), most.abs())))[:, None, None]

    # Cells that may be above the threshold: their span, in cells, then in pixels.
    maybe = (low_res > threshold - margin).view(torch.uint8)  # uint8 reductions: faster than bool
    maybe_rows = maybe.amax(dim=2) > 0
    c_lo, r_lo, c_hi, r_hi = amg.boxes_from_projections(maybe_rows, maybe.amax(dim=1) > 0).T.contiguous()
    y0, y1 = ys.outer(r_lo, r_hi)
    x0, x1 = xs.outer(c_lo, c_hi)
    outer = torch.stack([x0, y0, x1, y1], dim=1)

    # Runs of pixels (rows x columns) whose every readable cell is above the threshold:
    # their span, in runs, then in pixels.
    row_any, col_any = xs.any_run_all(ys.run_all(low_res > threshold + margin, 1))
    sc_lo, sr_lo, sc_hi, sr_hi = amg.boxes_from_projections(row_any, col_any).T.contiguous()
    y, x = ys.on(low_res.device), xs.on(low_res.device)
    inner = torch.stack(
        [x["run_first"][sc_lo], y["run_first"][sr_lo], x["run_last"][sc_hi], y["run_last"][sr_hi]], dim=1
    )
    known = row_any.any(dim=1) & maybe_rows.any(dim=1)
    return inner.cpu(), outer.cpu(), known.cpu()


def surely_suppressed(inner: np.ndarray, outer: np.ndarray, kept: np.ndarray, iou_threshold: float) -> bool:
    """Whether a mask whose box lies between `inner` and `outer` (XYXY) has, whatever its
    pixels, IoU above `iou_threshold` with one of the `kept` boxes (Kx4), as `nms` computes it.

    IoU(box, k) >= area(inner & k) / (area(outer) + area(k) - area(inner & k)): the
    intersection only grows and the box's area only shrinks between the bounds."""
    if len(kept) == 0:
        return False
    inner, outer, kept = (np.asarray(a, dtype=np.float64) for a in (inner, outer, kept))
    w = np.maximum(np.minimum(inner[2], kept[:, 2]) - np.maximum(inner[0], kept[:, 0]), 0.0)
    h = np.maximum(np.minimum(inner[3], kept[:, 3]) - np.maximum(inner[1], kept[:, 1]), 0.0)
    inter = w * h
    outer_area = (outer[2] - outer[0]) * (outer[3] - outer[1])
    kept_area = (kept[:, 2] - kept[:, 0]) * (kept[:, 3] - kept[:, 1])
    union = outer_area + kept_area - inter
    bound = np.divide(inter, union, out=np.zeros_like(inter), where=inter > 0)
    return bool(np.any(bound > iou_threshold + IOU_MARGIN))
