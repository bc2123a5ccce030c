"""COCO run-length encoding of binary masks, without pycocotools.

Runs are counted in column-major (Fortran) order, starting with a run of zeros, as
COCO does; the compressed form is COCO's LEB128-like string, byte-compatible with
`pycocotools.mask.encode`.
"""

from __future__ import annotations

import mmap
import tempfile
from typing import TYPE_CHECKING

import numpy as np

from ..errors import PromptError

if TYPE_CHECKING:  # numpy only, except `pack_columns_torch`
    import torch


def mask_to_counts(mask: np.ndarray) -> np.ndarray:
    """HxW bool mask -> run lengths in column-major order, first run of zeros (maybe 0)."""
    return flat_runs(np.asarray(mask, dtype=bool).ravel(order="F"))


def flat_runs(flat: np.ndarray) -> np.ndarray:
    """Run lengths of a flat bool array, starting with a (maybe empty) run of False."""
    if flat.size == 0:
        return np.zeros(0, dtype=np.int64)
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate([[0], change, [flat.size]]))
    return np.concatenate([[0], runs]) if flat[0] else runs


def counts_to_mask(counts: list[int], size: tuple[int, int]) -> np.ndarray:
    """Run lengths + (H, W) -> HxW bool mask."""
    h, w = size
    counts = np.asarray(counts, dtype=np.int64)
    if counts.sum() != h * w:
        raise PromptError(f"RLE counts sum to {counts.sum()}, expected {h * w} for size {size}")
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


def string_to_counts(s: str) -> np.ndarray:
    """COCO's compressed counts string -> run lengths (int64), vectorised over the
    characters (the inverse of `counts_to_string`). A string that is not such an
    encoding (characters outside '0'..'o', a last run cut short) is a ValueError."""
    c = np.frombuffer(s.encode("ascii"), dtype=np.uint8).astype(np.int64) - 48
    if c.size == 0:
        return np.zeros(0, dtype=np.int64)
    if c.min() < 0 or c.max() > 63 or c[-1] & 0x20:
        raise ValueError("not a COCO compressed RLE counts string")
    last = (c & 0x20) == 0  # the last character of each run
    run = np.concatenate([[0], np.cumsum(last)[:-1]])  # run index of each character
    first = np.concatenate([[0], np.flatnonzero(last)[:-1] + 1])  # each run's first character
    k = np.arange(c.size) - first[run]  # 5-bit group index inside the run
    if k.max() > 11:
        raise ValueError("a run of the RLE string is too long")
    x = np.zeros(len(first), dtype=np.int64)
    np.add.at(x, run, (c & 0x1F) << (5 * k))
    negative = (c[last] & 0x10) != 0  # sign-extend from the last group
    x[negative] -= np.int64(1) << (5 * (k[last][negative] + 1))
    # From the fourth run on, each is stored as the difference to the run two back.
    counts = x.copy()
    counts[1::2] = np.cumsum(x[1::2])
    counts[2::2] = np.cumsum(x[2::2])
    return counts


class BitStore:
    """Append-only storage for packed masks: in memory up to `memory_bytes`, then in an
    anonymous temporary file, so holding every candidate mask of a large run stays cheap.

    Memory blocks are anonymous memory maps, outside the malloc heap: thousands of
    long-lived buffers allocated between the large short-lived tensors of each step
    would fragment the heap. `add` returns handles; `read` gives a handle's bytes.
    """

    def __init__(self, memory_bytes: int = 256 << 20, block_bytes: int = 32 << 20) -> None:
        self.memory_bytes, self.block_bytes = memory_bytes, block_bytes
        self._block = np.zeros(0, dtype=np.uint8)
        self._used = self._in_memory = 0
        self._file: tempfile._TemporaryFileWrapper | None = None

    def add(self, rows: np.ndarray) -> list[np.ndarray | tuple[int, int]]:
        """Store each row of a 2-D uint8 array; returns a handle per row."""
        out: list[np.ndarray | tuple[int, int]] = []
        for row in rows:
            if self._in_memory + row.nbytes > self.memory_bytes:
                if self._file is None:
                    # Lives as long as the store; deleted by the OS when closed or collected.
                    self._file = tempfile.TemporaryFile(prefix="mobilesam-masks-")  # noqa: SIM115
                offset = self._file.seek(0, 2)
                self._file.write(row.tobytes())
                out.append((offset, row.nbytes))
                continue
            if self._used + row.nbytes > self._block.nbytes:
                self._block = np.frombuffer(mmap.mmap(-1, max(self.block_bytes, row.nbytes)), dtype=np.uint8)
                self._used = 0
            view = self._block[self._used : self._used + row.nbytes]
            view[:] = row
            out.append(view)
            self._used += row.nbytes
            self._in_memory += row.nbytes
        return out

    def read(self, handle: np.ndarray | tuple[int, int]) -> np.ndarray:
        if isinstance(handle, np.ndarray):
            return handle
        offset, nbytes = handle
        self._file.seek(offset)
        return np.frombuffer(self._file.read(nbytes), dtype=np.uint8)


def pack_columns(masks: np.ndarray, store: BitStore | None = None) -> tuple[list, np.ndarray]:
    """NxWxH bool masks, already column-major (transposed) -> each one's pixels as packed
    bits (H*W/8 bytes, whatever the content; `store` handles if a store is given) and the areas."""
    if masks.shape[0] == 0:
        return [], np.zeros(0, dtype=np.int64)
    packed = np.packbits(masks.reshape(masks.shape[0], -1), axis=1)
    areas = _POPCOUNT[packed].sum(axis=1, dtype=np.int64)
    return (store.add(packed) if store is not None else list(packed)), areas


def pack_columns_torch(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`pack_columns` on the masks' device (a GPU: only the packed bits, 8x smaller, need to
    reach the host): NxWxH bool -> N x ceil(W*H/8) uint8 as `np.packbits` packs them, and
    the int64 areas."""
    import torch

    flat = masks.reshape(masks.shape[0], masks.shape[1] * masks.shape[2])
    pad = -flat.shape[1] % 8
    if pad:
        flat = torch.nn.functional.pad(flat, (0, pad))
    weights = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8, device=masks.device)
    packed = (flat.view(flat.shape[0], flat.shape[1] // 8, 8).to(torch.uint8) * weights).sum(
        dim=2, dtype=torch.uint8
    )
    return packed, flat.sum(dim=1, dtype=torch.int64)


def bits_to_masks_torch(bits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """`bits_to_mask` for many masks on the bits' device (a GPU unpacks and transposes
    them, work the host does at ~1.5 ms per 1800x1200 mask): N x ceil(H*W/8) uint8
    packed column-major bits -> NxHxW bool, row-major."""
    import torch

    h, w = size
    shifts = torch.arange(7, -1, -1, dtype=torch.uint8, device=bits.device)
    flat = ((bits[..., None] >> shifts) & 1).view(bits.shape[0], bits.shape[1] * 8)[:, : h * w]
    return flat.view(bits.shape[0], w, h).transpose(1, 2).contiguous().bool()


def bits_to_counts(bits: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Packed column-major bits of an (H, W) mask -> its run lengths."""
    return flat_runs(np.unpackbits(bits, count=size[0] * size[1]).view(bool))


def bits_to_mask(bits: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    return np.ascontiguousarray(np.unpackbits(bits, count=h * w).view(bool).reshape(w, h).T)


_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def encode(mask: np.ndarray, compressed: bool = True) -> dict:
    """HxW bool mask -> {"size": [H, W], "counts": str (compressed) or list of ints}."""
    return counts_to_rle(mask_to_counts(mask), mask.shape[:2], compressed)


def counts_to_rle(counts: list[int] | np.ndarray, size: tuple[int, int], compressed: bool = True) -> dict:
    """Run lengths of an (H, W) mask -> COCO RLE: counts as pycocotools' string, or a list."""
    return {
        "size": [int(s) for s in size],
        "counts": counts_to_string(counts) if compressed else np.asarray(counts).tolist(),
    }


def decode(rle: dict) -> np.ndarray:
    """COCO RLE (compressed str/bytes or uncompressed list counts) -> HxW bool mask."""
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    if isinstance(counts, str):
        counts = string_to_counts(counts)
    return counts_to_mask(counts, tuple(rle["size"]))


def runs(rle: dict) -> np.ndarray:
    """A COCO RLE's run lengths (compressed or not), not checked: see `covers`."""
    counts = rle["counts"]
    if isinstance(counts, (str, bytes)):
        return string_to_counts(counts if isinstance(counts, str) else counts.decode("ascii"))
    return np.asarray(counts, dtype=np.int64)


def area(rle: dict) -> int:
    return int(runs(rle)[1::2].sum())


def area_bbox(rle: dict) -> tuple[int, list[int]]:
    """A COCO RLE's pixel count and COCO XYWH box (its extent, as pycocotools' `toBbox`;
    [0, 0, 0, 0] when empty), from the runs alone: no HxW mask is built, which is what
    made a folder's export slow."""
    counts = runs(rle)
    h = int(rle["size"][0])
    ends = np.cumsum(counts)
    on = counts[1::2] > 0
    first, last = (ends - counts)[1::2][on], ends[1::2][on] - 1  # each run of ones, flat column-major
    if not len(first):
        return 0, [0, 0, 0, 0]
    x0, x1 = int(first[0] // h), int(last[-1] // h)
    one_column = first // h == last // h  # a run that crosses columns covers rows 0 and h - 1
    y0 = int(np.where(one_column, first % h, 0).min())
    y1 = int(np.where(one_column, last % h, h - 1).max())
    return int(counts[1::2].sum()), [x0, y0, x1 - x0 + 1, y1 - y0 + 1]


def covers(counts: np.ndarray, size: tuple[int, int]) -> bool:
    """Whether run lengths are an RLE of an HxW mask: none negative, H x W pixels in all."""
    h, w = size
    return bool(counts.sum() == h * w and (counts >= 0).all())
