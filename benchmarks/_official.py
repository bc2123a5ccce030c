"""Import the official MobileSAM package (`mobile_sam`) for side-by-side measurements.

The official code imports a few helpers from timm and torchvision, which have no
builds for every torch. Where they are missing, minimal stand-ins with the same
behaviour at inference are registered first. Used by the benchmarks only.
"""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn


def _shim_timm() -> None:
    class DropPath(nn.Module):
        def __init__(self, drop_prob: float = 0.0) -> None:
            super().__init__()
            self.drop_prob = drop_prob

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x  # identity at inference, which is all the benchmarks run

    layers = types.ModuleType("timm.models.layers")
    layers.DropPath = DropPath
    layers.to_2tuple = lambda x: tuple(x) if isinstance(x, (tuple, list)) else (x, x)
    layers.trunc_normal_ = nn.init.trunc_normal_
    registry = types.ModuleType("timm.models.registry")
    registry.register_model = lambda fn: fn
    models = types.ModuleType("timm.models")
    models.layers, models.registry = layers, registry
    timm = types.ModuleType("timm")
    timm.models = models
    sys.modules.update(
        {"timm": timm, "timm.models": models, "timm.models.layers": layers, "timm.models.registry": registry}
    )


def _shim_torchvision() -> None:
    def resize(img: Image.Image, size: list[int]) -> Image.Image:
        return img.resize((size[1], size[0]), Image.BILINEAR)  # torchvision's PIL path

    def box_area(boxes: torch.Tensor) -> torch.Tensor:
        return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])

    def batched_nms(
        boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float
    ) -> torch.Tensor:
        if boxes.numel() == 0:
            return torch.empty(0, dtype=torch.long)
        offset = idxs.to(boxes) * (boxes.max() + 1)
        b = boxes + offset[:, None]
        order = scores.sort(descending=True, stable=True).indices
        keep = []
        suppressed = torch.zeros(len(b), dtype=torch.bool)
        area = box_area(b)
        for i in order.tolist():
            if suppressed[i]:
                continue
            keep.append(i)
            lt = torch.maximum(b[i, :2], b[:, :2])
            rb = torch.minimum(b[i, 2:], b[:, 2:])
            inter = (rb - lt).clamp(min=0).prod(dim=1)
            suppressed |= inter / (area[i] + area - inter) > iou_threshold
        return torch.tensor(keep, dtype=torch.long)

    functional = types.ModuleType("torchvision.transforms.functional")
    functional.resize = resize
    functional.to_pil_image = lambda arr: Image.fromarray(np.asarray(arr))
    transforms = types.ModuleType("torchvision.transforms")
    transforms.functional = functional
    boxes_mod = types.ModuleType("torchvision.ops.boxes")
    boxes_mod.batched_nms, boxes_mod.box_area = batched_nms, box_area
    ops = types.ModuleType("torchvision.ops")
    ops.boxes = boxes_mod
    tv = types.ModuleType("torchvision")
    tv.transforms, tv.ops = transforms, ops
    sys.modules.update(
        {
            "torchvision": tv,
            "torchvision.transforms": transforms,
            "torchvision.transforms.functional": functional,
            "torchvision.ops": ops,
            "torchvision.ops.boxes": boxes_mod,
        }
    )


def import_official(path: str | Path) -> types.ModuleType:
    """`mobile_sam` from the folder that contains it (e.g. an unpacked mobilesam-mirror wheel)."""
    for name, shim in (("timm", _shim_timm), ("torchvision", _shim_torchvision)):
        try:
            importlib.import_module(name)
        except Exception:
            shim()
    sys.path.insert(0, str(Path(path)))
    return importlib.import_module("mobile_sam")
