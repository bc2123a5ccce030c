"""SAM's image preprocessing split in two: uint8 resize and pad on the CPU (DataLoader
workers), normalisation on the device. Together they equal `Sam.preprocess` after
`ResizeLongestSide`: normalise, then zero-pad at the bottom and right."""

from __future__ import annotations

import os

import numpy as np
import torch

from ..errors import ImageLoadError
from ..transforms import PIXEL_MEAN, PIXEL_STD, ResizeLongestSide
from .sources import ImageRef


def default_workers(device: torch.device, processes: int = 1) -> int:
    """Decoding processes when none are asked for: 8 per GPU process within the CPU count,
    none on the CPU, where they would compete with the model for the cores."""
    return min(8, (os.cpu_count() or 1) // processes) if device.type == "cuda" else 0


def pad_image(rgb: np.ndarray, img_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Resized HxWx3 uint8 -> (3 x S x S uint8 zero-padded at the bottom/right, tensor([h, w]))."""
    h, w = rgb.shape[:2]
    out = torch.zeros(3, img_size, img_size, dtype=torch.uint8)
    out[:, :h, :w] = torch.from_numpy(rgb).permute(2, 0, 1)
    return out, torch.tensor([h, w])


def sam_input(images: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """Padded uint8 B x 3 x S x S -> SAM's input: (pixel - mean) / std inside each image's
    (h, w) (`sizes`, B x 2), zeros in the padding. Runs on the training device."""
    mean = torch.tensor(PIXEL_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(PIXEL_STD, device=images.device).view(1, 3, 1, 1)
    return (images.float() - mean) / std * inside(sizes, images.shape[-1])[:, None]


def inside(sizes: torch.Tensor, s: int) -> torch.Tensor:
    """B x S x S: True inside each image's (h, w), False in the padding."""
    r = torch.arange(s, device=sizes.device)
    return (r[None, :, None] < sizes[:, 0, None, None]) & (r[None, None, :] < sizes[:, 1, None, None])


class DecodedImages(torch.utils.data.Dataset):
    """i -> (id, padded uint8 image, (h, w), "") or (id, None, None, error) for a bad image."""

    def __init__(self, refs: list[ImageRef], img_size: int) -> None:
        self.refs, self.img_size = refs, img_size
        self.transform = ResizeLongestSide(img_size)

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, i: int) -> tuple:
        ref = self.refs[i]
        try:
            image, size = pad_image(self.transform.apply_image(ref.load()), self.img_size)
        except (ImageLoadError, ValueError) as exc:
            return ref.id, None, None, str(exc)
        return ref.id, image, size, ""
