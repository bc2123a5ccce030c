"""Stability scores of candidate masks, counted fast.

segment-anything scores a candidate by counting its full-resolution logits above
`threshold + offset` and `threshold - offset`. PyTorch's CPU sum over booleans is about
30x slower than NumPy's `count_nonzero` (2.4 vs 0.08 ms per 1800x1200 mask here), and
that count ran twice for each of the ~2,000 candidates of a 32x32 grid.
"""

from __future__ import annotations

import numpy as np
import torch

from .amg import stability_score


def scores(logits: torch.Tensor, threshold: float, offset: float) -> torch.Tensor:
    """Stability scores of NxHxW logits: IoU of the masks at threshold +/- offset, as
    segment-anything computes them (int32 counts, float32 ratio; 0/0 is nan)."""
    if logits.device.type != "cpu" or logits.dtype != torch.float32 or not logits.is_contiguous():
        return stability_score(logits, threshold, offset)
    values = logits.numpy()
    inter = np.array([np.count_nonzero(v > threshold + offset) for v in values], np.int32)
    union = np.array([np.count_nonzero(v > threshold - offset) for v in values], np.int32)
    return torch.from_numpy(inter) / torch.from_numpy(union)
