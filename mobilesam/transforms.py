"""Resize-longest-side transform for images, points and boxes (segment-anything's)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:  # the numpy methods work without torch installed (the ONNX runtime path)
    import torch


# SAM's normalisation of RGB pixels in [0, 255].
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


def get_preprocess_shape(oldh: int, oldw: int, long_side_length: int) -> tuple[int, int]:
    """(h, w) after scaling so that the longer side is `long_side_length`, rounded half up,
    and at least 1: a 1x5000 strip becomes 1x1024 (segment-anything's rounding makes it
    0x1024, which no resize accepts)."""
    scale = long_side_length * 1.0 / max(oldh, oldw)
    return max(1, int(oldh * scale + 0.5)), max(1, int(oldw * scale + 0.5))


class ResizeLongestSide:
    """Resize images to a longest side of `target_length` and map coordinates the same way.

    Coordinates are (x, y) in pixels; `original_size` is (H, W).
    """

    def __init__(self, target_length: int) -> None:
        self.target_length = target_length

    get_preprocess_shape = staticmethod(get_preprocess_shape)

    def apply_image(self, image: np.ndarray | Image.Image) -> np.ndarray:
        """HxWx3 uint8 -> hxwx3 uint8, bilinear through PIL (what segment-anything does).
        An RGB PIL image is resized as it is, without a round trip through an array."""
        if not isinstance(image, Image.Image):
            image = Image.fromarray(image)
        h, w = get_preprocess_shape(image.height, image.width, self.target_length)
        return np.array(image.resize((w, h), Image.BILINEAR))

    def _scale(self, original_size: tuple[int, int]) -> tuple[float, float]:
        old_h, old_w = original_size
        new_h, new_w = get_preprocess_shape(old_h, old_w, self.target_length)
        return new_w / old_w, new_h / old_h

    def apply_coords(self, coords: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        """...x2 (x, y) in the original frame -> float64 in the resized frame (a copy)."""
        sx, sy = self._scale(original_size)
        coords = np.array(coords, dtype=float, copy=True)
        coords[..., 0] *= sx
        coords[..., 1] *= sy
        return coords

    def apply_boxes(self, boxes: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        """Bx4 XYXY in the original frame -> Bx4 in the resized frame."""
        return self.apply_coords(np.asarray(boxes).reshape(-1, 2, 2), original_size).reshape(-1, 4)

    def apply_image_torch(self, image: torch.Tensor) -> torch.Tensor:
        """BxCxHxW float -> resized with antialiased bilinear interpolation."""
        import torch.nn.functional as F

        h, w = get_preprocess_shape(image.shape[2], image.shape[3], self.target_length)
        return F.interpolate(image, (h, w), mode="bilinear", align_corners=False, antialias=True)

    def apply_image_uint8_torch(self, image: torch.Tensor) -> torch.Tensor:
        """HxWx3 uint8 on any device -> 1x3xhxw float32 holding uint8 values, resized there.

        The device twin of `apply_image` (PIL): antialiased bilinear (plain bilinear when
        enlarging), done as PIL does it, the width first, rounded to whole values, then the
        height, rounded again. 99.9% of pixels equal PIL's, the rest differ by 1 (PIL's
        fixed-point weights); tests/test_engine.py measures the masks.
        """
        import torch.nn.functional as F

        h, w = get_preprocess_shape(image.shape[0], image.shape[1], self.target_length)
        x = image.permute(2, 0, 1)[None].float()
        for size in ((x.shape[2], w), (h, w)):
            if tuple(x.shape[2:]) != size:
                x = F.interpolate(x, size, mode="bilinear", align_corners=False, antialias=True)
                x = x.add_(0.5).floor_().clamp_(0, 255)
        return x

    def apply_coords_torch(self, coords: torch.Tensor, original_size: tuple[int, int]) -> torch.Tensor:
        sx, sy = self._scale(original_size)
        coords = coords.float().clone()
        coords[..., 0] *= sx
        coords[..., 1] *= sy
        return coords

    def apply_boxes_torch(self, boxes: torch.Tensor, original_size: tuple[int, int]) -> torch.Tensor:
        return self.apply_coords_torch(boxes.reshape(-1, 2, 2), original_size).reshape(-1, 4)
