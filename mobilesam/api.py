"""The high-level API: an image and prompts in, a result to overlay, save and export out.

    from mobilesam import MobileSAM
    sam = MobileSAM()                                   # published weights, cached
    result = sam.segment("truck.jpg", input_box=[[425, 600, 700, 875], [1240, 675, 1400, 750]])
    result.save_overlay("overlay.png"); result.save_masks("masks/"); result.save_json("masks.json")

Parameters carry the Ikomia MobileSAM task's names and accept strings as well as values.
`mask_id` (1-3) picks one of the three multi-mask candidates in SAM's mask-token order
(the order of `mask_decoder.mask_tokens[1:4]`, not sorted by score). Without it, a
single point returns the best-scoring candidate and other prompts the single-mask output.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import weights
from .build import build_sam
from .errors import MobileSAMError, PromptError
from .image_io import ImageSource, load_image
from .modeling.sam import upscale_masks
from .predictor import SamPredictor
from .prompts import Prompts, parse_float, parse_int, parse_prompts
from .runtime import tune_allocator
from .utils import rle
from .utils.boxes import masks_to_boxes, xyxy_to_xywh
from .utils.files import atomic_write, atomic_write_text
from .visualize import overlay


def resolve_device(device: str | torch.device | None) -> torch.device:
    """None -> cuda, else mps, else cpu; an unavailable device is a clear error."""
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise MobileSAMError(f"unknown device {device!r}; use cpu, cuda, cuda:N or mps") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise MobileSAMError("device 'cuda' requested but this PyTorch has no usable CUDA GPU")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise MobileSAMError("device 'mps' requested but Metal (MPS) is not available here")
    return dev


@dataclass
class SegmentationResult:
    """Masks for one image, in original-image pixels.

    image: HxWx3 uint8 RGB; masks: NxHxW bool; scores: N predicted IoU; mask_ids: N,
    the 1-based mask token each mask came from (0 = single-mask output);
    low_res_logits: Nx256x256, usable as a later `mask_input`.
    """

    image: np.ndarray
    masks: np.ndarray
    scores: np.ndarray
    mask_ids: np.ndarray
    low_res_logits: np.ndarray
    prompts: Prompts = field(default_factory=Prompts)
    file_name: str | None = None

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


class MobileSAM:
    """A loaded model plus the embedding of the last image it saw.

    checkpoint: a path, or None for the published weights of `model_type` (downloaded
    once, cached). device: "cpu", "cuda", "mps" or None for the best available.
    Creating one calls `mobilesam.tune_allocator()` (faster CPU inference, see runtime.py).
    """

    def __init__(
        self,
        checkpoint: str | PathLike | None = None,
        model_type: str = "vit_t",
        device: str | torch.device | None = None,
    ) -> None:
        tune_allocator()
        if checkpoint is None:
            checkpoint = weights.ensure_weights(model_type)
        self.device = resolve_device(device)
        self.model = build_sam(model_type, checkpoint).to(self.device)
        self.predictor = SamPredictor(self.model)
        self._image_key: tuple | None = None

    def _set_image(self, rgb: np.ndarray, percent: float) -> None:
        key = (hashlib.sha1(rgb.tobytes()).hexdigest(), rgb.shape, percent)
        if key == self._image_key:
            return  # same image, same scale: reuse the embedding
        if percent < 100:
            h, w = rgb.shape[:2]
            size = (max(1, round(w * percent / 100)), max(1, round(h * percent / 100)))
            rgb = np.asarray(Image.fromarray(rgb).resize(size, Image.BILINEAR))
        self.predictor.set_image(rgb)
        self._image_key = key

    @torch.inference_mode()
    def segment(
        self,
        image: ImageSource,
        input_box: object = None,
        input_point: object = None,
        input_point_label: object = None,
        mask_id: object = None,
        input_size_percent: object = 100,
    ) -> SegmentationResult:
        """Segment `image` from boxes and/or points (original-image pixels).

        input_box: [x0, y0, x1, y1] or a list of them -> one mask per box, all boxes in
        one batched decoder call; with points too, every box gets all the points.
        input_point: [[x, y], ...]; input_point_label: 1 foreground / 0 background
        (default all 1). input_size_percent (1-100) shrinks the image before encoding;
        masks still come back at the original size.
        """
        rgb = load_image(image)
        h, w = rgb.shape[:2]
        prompts = parse_prompts((h, w), input_box, input_point, input_point_label)
        if prompts.empty:
            raise PromptError("no prompt given: pass input_box and/or input_point")
        mid = None if mask_id is None or mask_id == "" else parse_int(mask_id, "mask_id", 1, 3)
        percent = parse_float(input_size_percent, "input_size_percent", 1, 100)
        self._set_image(rgb, percent)

        coords, labels, boxes = self._model_prompts(prompts, (h, w))
        single_point = prompts.boxes is None and len(prompts.points) == 1
        multimask = mid is not None or single_point
        low_res, scores = self.predictor.decode(coords, labels, boxes, None, multimask)
        if multimask:
            pick = torch.full((len(scores),), mid - 1) if mid is not None else scores.argmax(dim=1)
            rows = torch.arange(len(scores))
            low_res, scores = low_res[rows, pick][:, None], scores[rows, pick][:, None]
            ids = (pick + 1).numpy()
        else:
            ids = np.zeros(len(scores), dtype=np.int64)
        logits = upscale_masks(low_res, self.predictor.input_size, (h, w), self.model.img_size)
        return SegmentationResult(
            image=rgb,
            masks=(logits[:, 0] > self.model.mask_threshold).cpu().numpy(),
            scores=scores[:, 0].float().cpu().numpy(),
            mask_ids=ids,
            low_res_logits=low_res[:, 0].float().cpu().numpy(),
            prompts=prompts,
            file_name=Path(image).name if isinstance(image, (str, PathLike)) else None,
        )

    def _model_prompts(
        self, prompts: Prompts, size: tuple[int, int]
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """Original-pixel prompts -> tensors in the model-input frame, batched per box."""
        transform, dev = self.predictor.transform, self.device
        # From the original frame to the (possibly shrunk) encoded image's frame.
        small = self.predictor.original_size
        scale = np.array([small[1] / size[1], small[0] / size[0]])
        n = 1 if prompts.boxes is None else len(prompts.boxes)
        coords = labels = boxes = None
        if prompts.points is not None:
            pts = transform.apply_coords(prompts.points * scale, small)
            coords = torch.as_tensor(pts, dtype=torch.float, device=dev)[None].expand(n, -1, -1)
            labels = torch.as_tensor(prompts.labels, dtype=torch.int, device=dev)[None].expand(n, -1)
        if prompts.boxes is not None:
            bxs = transform.apply_boxes(prompts.boxes.reshape(-1, 2, 2) * scale, small)
            boxes = torch.as_tensor(bxs, dtype=torch.float, device=dev)
        return coords, labels, boxes
