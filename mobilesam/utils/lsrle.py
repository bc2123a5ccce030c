"""Label Studio's brush RLE: how Label Studio stores a brush mask (`value.rle` of a
`brushlabels` region).

The mask is an RGBA image flattened row by row (each pixel's value 4 times), packed
with thi.ng's rle-pack: a bit stream of 32 bits for the number of values, 5 bits for the
word size less one (8), 4 x 4 bits for the four run-length field widths less one (3,
4, 8, 16), then one record per run: a 1 bit (a repeated value), 2 bits choosing the
field width, the run's length less one in that many bits, the 8-bit value. A run longer
than 65536 is several records. The stream is zero-padded to whole bytes (by 8 bits when
it already ends on one, as label-studio-converter's `mask2rle` does), and stored as a
list of byte values. Written byte for byte as `mask2rle` of the mask times 255, in
numpy.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConvertError
from .rle import flat_runs

_WIDTHS = np.array([3, 4, 8, 16])
_LONGEST = 1 << 16  # the longest run one record holds
_HEADER_BITS = 32 + 5 + 4 * 4


def encode(mask: np.ndarray) -> list[int]:
    """HxW bool mask -> Label Studio's brush RLE (255 inside)."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2 or mask.size == 0:
        raise ValueError(f"a brush RLE encodes an HxW mask with pixels, got shape {mask.shape}")
    runs = flat_runs(mask.ravel()) * 4  # RGBA: every pixel's value 4 times
    values = np.zeros(len(runs), dtype=np.int64)
    values[1::2] = 255  # runs alternate, starting with a (maybe empty) run of zeros
    values, runs = values[runs > 0], runs[runs > 0]
    # Runs past 65536 values: records of 65536, then the rest (1 to 65536).
    full = (runs - 1) // _LONGEST
    records = np.repeat(np.arange(len(runs)), full + 1)
    last = np.cumsum(full + 1) - 1
    lengths = np.full(len(records), _LONGEST, dtype=np.int64)
    lengths[last] = runs - full * _LONGEST
    values = values[records]
    kind = np.searchsorted(1 << _WIDTHS, lengths)  # the narrowest field the length - 1 fits
    width = _WIDTHS[kind]
    code = (1 << (10 + width)) | (kind << (8 + width)) | ((lengths - 1) << 8) | values
    bits = 11 + width
    header = (len(mask.ravel()) * 4, 32), (7, 5), *((w - 1, 4) for w in _WIDTHS)
    codes = np.concatenate([[c for c, _ in header], code]).astype(np.uint64)
    bits = np.concatenate([[b for _, b in header], bits])
    # Each code left-aligned in 32 bits, then the first `bits` of each, in order.
    aligned = (codes << (32 - bits).astype(np.uint64)).astype(">u4")
    table = np.unpackbits(aligned.view(np.uint8)).reshape(-1, 32)
    stream = table[np.arange(32) < bits[:, None]]
    stream = np.concatenate([stream, np.zeros(8 - len(stream) % 8, dtype=np.uint8)])
    return np.packbits(stream).tolist()


def decode(data: list[int] | bytes, size: tuple[int, int]) -> np.ndarray:
    """Label Studio's brush RLE of an image of `size` (H, W) -> HxW bool mask (alpha > 0).
    Data that is no brush RLE of that size is a `ConvertError`."""
    h, w = size
    try:
        raw = np.asarray(data, dtype=np.int64)
        if raw.ndim != 1 or ((raw < 0) | (raw > 255)).any():
            raise ValueError
    except (TypeError, ValueError):
        raise ConvertError("a brush RLE is a list of byte values (0-255)") from None
    bits = (
        format(int.from_bytes(raw.astype(np.uint8).tobytes(), "big"), f"0{8 * len(raw)}b") if len(raw) else ""
    )
    try:
        num, word = int(bits[:32], 2), int(bits[32:37], 2) + 1
        widths = [int(bits[37 + 4 * k : 41 + 4 * k], 2) + 1 for k in range(4)]
    except ValueError:
        raise ConvertError("the brush RLE ends in the middle of a record") from None
    if num != h * w * 4:
        raise ConvertError(f"the brush RLE holds {num} values, not the {h * w * 4} of a {h}x{w} RGBA image")
    values, lengths = [], []
    i, at = 0, _HEADER_BITS
    try:
        while i < num:  # one record: a run of one value, or that many values as they are
            repeated, width = bits[at] == "1", widths[int(bits[at + 1 : at + 3], 2)]
            n = int(bits[at + 3 : at + 3 + width], 2) + 1
            at += 3 + width
            for _ in range(1 if repeated else n):
                values.append(int(bits[at : at + word], 2))
                at += word
            lengths += [n] if repeated else [1] * n
            i += n
    except (IndexError, ValueError):
        raise ConvertError("the brush RLE ends in the middle of a record") from None
    if at > len(bits):
        raise ConvertError("the brush RLE ends in the middle of a record")
    out = np.repeat(np.asarray(values, dtype=np.uint8 if word <= 8 else np.int64), lengths)
    return out[3:num:4].reshape(h, w) > 0  # the alpha channel
