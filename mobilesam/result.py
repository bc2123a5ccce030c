"""`SegmentationResult`: masks for one image, to overlay, save and export.

Needs no torch: the ONNX runtime path builds the same results.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

import numpy as np
from PIL import Image

from .prompts import Prompts
from .utils import rle
from .utils.boxes import masks_to_boxes, xyxy_to_xywh
from .utils.files import atomic_write, atomic_write_text
from .visualize import overlay, paint_order


@dataclass
class SegmentationResult:
    """Masks for one image, in original-image pixels.

    image: HxWx3 uint8 RGB; masks: NxHxW bool; scores: N predicted IoU; mask_ids: N,
    the 1-based mask token each mask came from (0 = single-mask output, or segment
    everything); low_res_logits: Nx256x256, usable as a later `mask_input` (prompts only).
    """

    image: np.ndarray
    masks: np.ndarray
    scores: np.ndarray
    mask_ids: np.ndarray
    low_res_logits: np.ndarray | None
    prompts: Prompts = field(default_factory=Prompts)
    file_name: str | None = None
    # Segment-everything only: each mask's stability score, prompt point and crop (XYXY).
    stability_scores: np.ndarray | None = None
    points: np.ndarray | None = None
    crop_boxes: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.masks)

    @property
    def boxes(self) -> np.ndarray:
        """Nx4 XYXY bounding boxes of the masks (inclusive pixel bounds)."""
        return masks_to_boxes(self.masks)

    def overlay(self, alpha: float = 0.5, contours: bool = True, draw_prompts: bool = True) -> Image.Image:
        p = self.prompts if draw_prompts else Prompts()
        return overlay(self.image, self.masks, alpha, contours, None, p.boxes, p.points, p.labels)

    def save_overlay(self, path: str | PathLike, **kwargs: object) -> Path:
        img = self.overlay(**kwargs)
        fmt = Image.registered_extensions().get(Path(path).suffix.lower(), "PNG")
        return atomic_write(path, lambda f: img.save(f, format=fmt))

    def save_masks(self, directory: str | PathLike, prefix: str = "mask") -> list[Path]:
        """One 8-bit PNG per mask (255 inside), named `{prefix}_{i:03d}.png`."""
        out = []
        for i, m in enumerate(self.masks):
            img = Image.fromarray(m.astype(np.uint8) * 255)
            out.append(
                atomic_write(Path(directory) / f"{prefix}_{i:03d}.png", lambda f, im=img: im.save(f, "PNG"))
            )
        return out

    def label_map(self) -> np.ndarray:
        """HxW uint16: 0 background, i+1 where mask i is on top (smaller masks over larger)."""
        labels = np.zeros(self.image.shape[:2], dtype=np.uint16)
        for i in paint_order(self.masks):
            labels[self.masks[i]] = i + 1
        return labels

    def save_label_map(self, path: str | PathLike) -> Path:
        """Label map PNG: 8-bit if there are fewer than 256 masks, else 16-bit."""
        labels = self.label_map()
        img = Image.fromarray(labels.astype(np.uint8)) if len(self.masks) < 256 else Image.fromarray(labels)
        return atomic_write(path, lambda f: img.save(f, "PNG"))

    def to_coco(self, image_id: int = 1, first_annotation_id: int = 1) -> dict:
        """COCO-style dict: one image, one annotation per mask with compressed RLE."""
        h, w = self.masks.shape[1:] if len(self.masks) else self.image.shape[:2]
        boxes = xyxy_to_xywh(self.boxes)
        anns = []
        for i, m in enumerate(self.masks):
            ann = {
                "id": first_annotation_id + i,
                "image_id": image_id,
                "category_id": 1,
                "segmentation": rle.encode(m),
                "area": int(m.sum()),
                "bbox": [int(v) for v in boxes[i]],
                "iscrowd": 0,
                "score": float(self.scores[i]),
                "mask_id": int(self.mask_ids[i]),
            }
            if self.stability_scores is not None:  # segment everything
                ann["stability_score"] = float(self.stability_scores[i])
                ann["point_coords"] = [self.points[i].tolist()]
                ann["crop_box"] = xyxy_to_xywh(self.crop_boxes[i : i + 1])[0].tolist()
            else:
                ann["prompt"] = self._prompt_of(i)
            anns.append(ann)
        image = {"id": image_id, "width": int(w), "height": int(h), "file_name": self.file_name}
        return {"images": [image], "annotations": anns, "categories": [{"id": 1, "name": "object"}]}

    def _prompt_of(self, i: int) -> dict:
        p = self.prompts
        prompt: dict = {}
        if p.boxes is not None:
            prompt["box"] = p.boxes[i].tolist()
        if p.points is not None:
            prompt["points"] = p.points.tolist()
            prompt["labels"] = p.labels.tolist()
        return prompt

    def save_json(self, path: str | PathLike, image_id: int = 1) -> Path:
        return atomic_write_text(path, json.dumps(self.to_coco(image_id)))
