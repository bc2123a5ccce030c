"""COCO run-length encoding of binary masks, without pycocotools.

Runs are counted in column-major (Fortran) order, starting with a run of zeros, as
COCO does; the compressed form is COCO's LEB128-like string, byte-compatible with
`pycocotools.mask.encode`.
"""

from __future__ import annotations

import numpy as np
import torch


def mask_to_counts(mask: np.ndarray) -> np.ndarray:
    """HxW bool mask -> run lengths in column-major order, first run of zeros (maybe 0)."""
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    if flat.size == 0:
        return np.zeros(0, dtype=np.int64)
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds)
    if flat[0]:
        counts = np.concatenate([[0], counts])
    return counts


def counts_to_mask(counts: list[int], size: tuple[int, int]) -> np.ndarray:
    """Run lengths + (H, W) -> HxW bool mask."""
    h, w = size
    counts = np.asarray(counts, dtype=np.int64)
    if counts.sum() != h * w:
        raise ValueError(f"RLE counts sum to {counts.sum()}, expected {h * w} for size {size}")
    values = np.arange(len(counts)) % 2 == 1
    return np.repeat(values, counts).reshape((h, w), order="F")


def counts_to_string(counts: list[int] | np.ndarray) -> str:
    """COCO's compressed counts string, vectorised over the runs.

    Each run (from the fourth on, minus the run two back) is written in 5-bit groups,
    least significant first, as characters 48 + group, with bit 0x20 meaning "more".
    """
    c = np.asarray(counts, dtype=np.int64)
    if c.size == 0:
        return ""
    x = c.copy()
    x[3:] -= c[1:-2]
    groups, active = [], np.ones(len(x), dtype=bool)
    while active.any():
        low = x & 0x1F
        x = x >> 5  # arithmetic shift: negative values end in all-ones
        more = np.where(low & 0x10, x != -1, x != 0)
        groups.append(np.where(active, low | (more.astype(np.int64) << 5), -1))
        active &= more
    table = np.stack(groups, axis=1)  # runs x groups, -1 where a run has ended
    return (table[table >= 0] + 48).astype(np.uint8).tobytes().decode("ascii")


def string_to_counts(s: str) -> list[int]:
    counts: list[int] = []
    p = 0
    data = s.encode("ascii")
    while p < len(data):
        x = k = 0
        more = True
        while more:
            c = data[p] - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def masks_to_counts(masks: torch.Tensor) -> list[np.ndarray]:
    """NxHxW bool masks -> each one's run lengths (column-major), in one vectorised pass."""
    n, h, w = masks.shape
    flat = masks.transpose(1, 2).reshape(n, h * w)
    change = (flat[:, 1:] != flat[:, :-1]).nonzero().cpu().numpy()
    starts = np.searchsorted(change[:, 0], np.arange(n + 1))
    first = flat[:, 0].cpu().numpy()
    out = []
    for i in range(n):
        bounds = np.concatenate([[0], change[starts[i] : starts[i + 1], 1] + 1, [h * w]])
        runs = np.diff(bounds)
        out.append(np.concatenate([[0], runs]) if first[i] else runs)
    return out


def encode(mask: np.ndarray, compressed: bool = True) -> dict:
    """HxW bool mask -> {"size": [H, W], "counts": str (compressed) or list of ints}."""
    counts = mask_to_counts(mask)
    return {
        "size": list(mask.shape[:2]),
        "counts": counts_to_string(counts) if compressed else counts.tolist(),
    }


def decode(rle: dict) -> np.ndarray:
    """COCO RLE (compressed str/bytes or uncompressed list counts) -> HxW bool mask."""
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    if isinstance(counts, str):
        counts = string_to_counts(counts)
    return counts_to_mask(counts, tuple(rle["size"]))


def area(rle: dict) -> int:
    counts = rle["counts"]
    if isinstance(counts, (str, bytes)):
        counts = string_to_counts(counts if isinstance(counts, str) else counts.decode("ascii"))
    return int(sum(counts[1::2]))
