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
from os import PathLike

import numpy as np
import torch

from . import weights
from .automatic_mask_generator import SamAutomaticMaskGenerator
from .build import build_sam
from .errors import MobileSAMError, PromptError
from .image_io import ImageSource, load_image, shrink, source_name
from .modeling.sam import Sam, upscale_masks
from .onnx_predictor import OnnxPredictor
from .predictor import SamPredictor
from .prompts import Prompts, parse_float, parse_int, parse_prompts, pick_candidates, wants_multimask
from .result import SegmentationResult
from .runtime import tune_allocator
from .utils import rle


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


class MobileSAM:
    """A loaded model plus the embedding of the last image it saw.

    checkpoint: a path, or None for the published weights of `model_type` (downloaded
    once, cached). device: "cpu", "cuda", "mps" or None for the best available.
    precision: "float32" (default, matches the official outputs) or "bf16" (encoder in
    bfloat16: faster where the hardware has bf16 matmuls, close but not identical).
    Creating one calls `mobilesam.tune_allocator()` (faster CPU inference, see runtime.py).
    """

    def __init__(
        self,
        checkpoint: str | PathLike | None = None,
        model_type: str = "vit_t",
        device: str | torch.device | None = None,
        precision: str = "float32",
    ) -> None:
        if precision not in ("float32", "bf16"):
            raise MobileSAMError(f"precision must be 'float32' or 'bf16', got {precision!r}")
        tune_allocator()
        if checkpoint is None:
            checkpoint = weights.ensure_weights(model_type)
        self.device = resolve_device(device)
        self.model = build_sam(model_type, checkpoint).to(self.device)
        if precision == "bf16":
            # Opt-in: the encoder in bfloat16 (1.6x faster on an AVX512-BF16 CPU, masks
            # IoU 0.970-0.985 against float32 on the parity fixture); the decoder stays float32.
            self.model.image_encoder.to(torch.bfloat16)
        self.predictor = SamPredictor(self.model)
        self._image_key: tuple | None = None

    def _set_image(self, rgb: np.ndarray, percent: float) -> None:
        key = (hashlib.sha1(rgb.tobytes()).hexdigest(), rgb.shape, percent)
        if key == self._image_key:
            return  # same image, same scale: reuse the embedding
        self.predictor.set_image(shrink(rgb, percent))
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
        **everything: object,
    ) -> SegmentationResult:
        """Segment `image` from boxes and/or points (original-image pixels); with no
        prompt, segment everything (`everything` takes `segment_everything`'s options).

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
            if mask_id not in (None, ""):
                raise PromptError("mask_id needs a point or box prompt")
            result = self.segment_everything(rgb, input_size_percent=input_size_percent, **everything)
            result.file_name = source_name(image)
            return result
        if everything:
            raise PromptError(
                f"{', '.join(sorted(everything))}: segment-everything options, given with prompts"
            )
        mid = None if mask_id is None or mask_id == "" else parse_int(mask_id, "mask_id", 1, 3)
        percent = parse_float(input_size_percent, "input_size_percent", 1, 100)
        self._set_image(rgb, percent)

        coords, labels, boxes = self._model_prompts(prompts, (h, w))
        multimask = wants_multimask(prompts, mid)
        low_res, scores = self.predictor.decode(coords, labels, boxes, None, multimask)
        if multimask:
            pick = torch.as_tensor(pick_candidates(scores.float().cpu().numpy(), mid), device=scores.device)
            rows = torch.arange(len(scores), device=scores.device)
            low_res, scores = low_res[rows, pick][:, None], scores[rows, pick][:, None]
            ids = (pick + 1).cpu().numpy()
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
            file_name=source_name(image),
        )

    @torch.inference_mode()
    def segment_everything(self, image: ImageSource, **options: object) -> SegmentationResult:
        """All masks of `image` from a grid of point prompts; options and results: `everything`."""
        return everything(self.model, image, **options)

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


def everything(
    model: Sam | OnnxPredictor,
    image: ImageSource,
    points_per_side: object = 32,
    points_per_batch: object = 64,
    iou_thres: object = 0.88,
    stability_score_thres: object = 0.95,
    box_nms_thres: object = 0.7,
    crop_n_layers: object = 0,
    crop_nms_thres: object = 0.7,
    crop_overlap_ratio: object = 512 / 1500,
    crop_n_points_downscale_factor: object = 1,
    min_mask_region_area: object = 0,
    input_size_percent: object = 100,
) -> SegmentationResult:
    """All masks of `image` from a grid of point prompts (the automatic mask generator),
    with a PyTorch model or an `OnnxPredictor`.

    Names follow the Ikomia task (`iou_thres` is segment-anything's pred_iou_thresh,
    and so on); values may be strings. With input_size_percent < 100 the generator
    runs on the shrunk image and masks are scaled back up (nearest neighbour).
    Masks are ordered by predicted IoU, highest first.
    """
    rgb = load_image(image)
    percent = parse_float(input_size_percent, "input_size_percent", 1, 100)
    generator = SamAutomaticMaskGenerator(
        model,
        points_per_side=parse_int(points_per_side, "points_per_side", 1),
        points_per_batch=parse_int(points_per_batch, "points_per_batch", 1),
        pred_iou_thresh=parse_float(iou_thres, "iou_thres", 0, 1),
        stability_score_thresh=parse_float(stability_score_thres, "stability_score_thres", 0, 1),
        box_nms_thresh=parse_float(box_nms_thres, "box_nms_thres", 0, 1),
        crop_n_layers=parse_int(crop_n_layers, "crop_n_layers", 0),
        crop_nms_thresh=parse_float(crop_nms_thres, "crop_nms_thres", 0, 1),
        crop_overlap_ratio=parse_float(crop_overlap_ratio, "crop_overlap_ratio", 0, 1),
        crop_n_points_downscale_factor=parse_int(
            crop_n_points_downscale_factor, "crop_n_points_downscale_factor", 1
        ),
        min_mask_region_area=parse_int(min_mask_region_area, "min_mask_region_area", 0),
    )
    h, w = rgb.shape[:2]
    work = shrink(rgb, percent)
    records = generator.generate_records(work)
    small = work.shape[:2]
    masks = (
        np.stack([rle.bits_to_mask(generator.read_bits(b), small) for b in records.bits])
        if len(records)
        else np.zeros((0, h, w), bool)
    )
    if small != (h, w) and len(masks):
        rows = (np.arange(h) * small[0] // h)[:, None]
        cols = (np.arange(w) * small[1] // w)[None, :]
        masks = masks[:, rows, cols]
    scale = np.array([w / small[1], h / small[0]])
    return SegmentationResult(
        image=rgb,
        masks=masks,
        scores=records.iou_preds.numpy(),
        mask_ids=np.zeros(len(records), dtype=np.int64),
        low_res_logits=None,
        file_name=source_name(image),
        stability_scores=records.stability.numpy(),
        points=records.points.numpy() * scale,
        crop_boxes=records.crop_boxes.numpy() * np.tile(scale, 2),
    )
