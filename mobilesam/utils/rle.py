"""COCO run-length encoding of binary masks, without pycocotools.

Runs are counted in column-major (Fortran) order, starting with a run of zeros, as
COCO does; the compressed form is COCO's LEB128-like string, byte-compatible with
`pycocotools.mask.encode`.
"""

from __future__ import annotations

import numpy as np


def mask_to_counts(mask: np.ndarray) -> list[int]:
    """HxW bool mask -> run lengths in column-major order, first run of zeros (maybe 0)."""
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    if flat.size == 0:
        return []
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds)
    if flat[0]:
        counts = np.concatenate([[0], counts])
    return counts.tolist()


def counts_to_mask(counts: list[int], size: tuple[int, int]) -> np.ndarray:
    """Run lengths + (H, W) -> HxW bool mask."""
    h, w = size
    counts = np.asarray(counts, dtype=np.int64)
    if counts.sum() != h * w:
        raise ValueError(f"RLE counts sum to {counts.sum()}, expected {h * w} for size {size}")
    values = np.arange(len(counts)) % 2 == 1
    return np.repeat(values, counts).reshape((h, w), order="F")


def counts_to_string(counts: list[int]) -> str:
    """COCO's compressed counts string (differences against the run two back, 5-bit groups)."""
    out = []
    for i, x in enumerate(counts):
        if i > 2:
            x -= counts[i - 2]
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


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


def encode(mask: np.ndarray, compressed: bool = True) -> dict:
    """HxW bool mask -> {"size": [H, W], "counts": str (compressed) or list of ints}."""
    counts = mask_to_counts(mask)
    return {"size": list(mask.shape[:2]), "counts": counts_to_string(counts) if compressed else counts}


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
