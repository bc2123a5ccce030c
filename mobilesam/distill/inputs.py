"""SAM's image preprocessing split in two: uint8 resize and pad on the CPU (DataLoader
workers), normalisation on the device. Together they equal `Sam.preprocess` after
`ResizeLongestSide`: normalise, then zero-pad at the bottom and right.

Resized on the device instead (`resize_on`: the default on a GPU), the workers only
decode and `resize_and_pad` resizes there with the device twin of PIL's resize (99.9%
of pixels equal, the rest 1 apart): 13 instead of 31 ms of a worker per 2250x1500 JPEG.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from ..errors import ImageLoadError, MobileSAMError
from ..transforms import PIXEL_MEAN, PIXEL_STD, ResizeLongestSide
from .sources import ImageRef

RESIZE_ON = ("workers", "device")


def resize_on(choice: str | None, device: torch.device) -> str:
    """Where images are resized: "workers" (PIL, exactly as SAM) or "device"
    (`resize_and_pad`); None: the device when it is a GPU, where the workers then only decode."""
    if choice is None:
        return "device" if device.type == "cuda" else "workers"
    if choice not in RESIZE_ON:
        raise MobileSAMError(f"resize must be one of {RESIZE_ON}, got {choice!r}")
    return choice


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


def resize_and_pad(
    images: list[torch.Tensor], img_size: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoded HxWx3 uint8 images of any sizes -> what `pad_image` after `apply_image`
    makes of each, stacked: B x 3 x S x S uint8 and B x 2 (h, w), resized on `device`."""
    transform = ResizeLongestSide(img_size)
    out = torch.zeros(len(images), 3, img_size, img_size, dtype=torch.uint8, device=device)
    sizes = torch.zeros(len(images), 2, dtype=torch.long)
    for i, image in enumerate(images):
        resized = transform.apply_image_uint8_torch(image.to(device, non_blocking=True))[0]
        h, w = resized.shape[1:]
        out[i, :, :h, :w] = resized
        sizes[i] = torch.tensor([h, w])
    return out, sizes.to(device)


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
    """i -> (id, padded uint8 image, (h, w), "") or (id, None, None, error) for a bad image;
    with `resize=False`, (id, the decoded HxWx3 uint8 image, None, "") for `resize_and_pad`."""

    def __init__(self, refs: list[ImageRef], img_size: int, resize: bool = True) -> None:
        self.refs, self.img_size, self.resize = refs, img_size, resize
        self.transform = ResizeLongestSide(img_size)

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, i: int) -> tuple:
        ref = self.refs[i]
        try:
            if not self.resize:
                return ref.id, torch.from_numpy(np.array(ref.open())), None, ""
            image, size = pad_image(self.transform.apply_image(ref.open()), self.img_size)
        except (ImageLoadError, ValueError) as exc:
            return ref.id, None, None, str(exc)
        return ref.id, image, size, ""
