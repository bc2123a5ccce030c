"""The one interface between a model backend and everything built on it.

The automatic mask generator, the high-level API (`highlevel.Segmenter`, behind
`MobileSAM` and `OnnxPredictor.segment`) and the folder job talk to a `Predictor`; the
PyTorch `SamPredictor` and the onnxruntime `OnnxPredictor` implement it. Nothing here
needs torch.

Frames: "model frame" means pixels of the resized image (`transform.apply_coords`),
whose longest side is `img_size`; "original" means pixels of the image given to
`set_image`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from .transforms import ResizeLongestSide


@dataclass
class PromptMasks:
    """One mask per prompt set, packed (`PromptMasks.pack`): bits, a list of B column-major
    packed HxW masks (`utils.rle.bits_to_mask`), areas B, boxes Bx4 inclusive XYXY;
    scores B float32 (predicted IoU), mask_ids B int64 (1-3 the multi-mask token, 0 the
    single-mask output), low_res Bx256x256 float32 logits (a later `mask_input`)."""

    bits: list
    areas: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    mask_ids: np.ndarray
    low_res: np.ndarray

    @staticmethod
    def pack(masks: np.ndarray, scores: np.ndarray, mask_ids: np.ndarray, low_res: np.ndarray) -> PromptMasks:
        """From BxHxW bool masks (dense only for the few packed at once)."""
        from .utils import rle
        from .utils.boxes import masks_to_boxes

        bits, areas = rle.pack_columns(np.ascontiguousarray(masks.transpose(0, 2, 1)))
        return PromptMasks(bits, areas, masks_to_boxes(masks), scores, mask_ids, low_res)

    @staticmethod
    def concatenate(parts: list[PromptMasks]) -> PromptMasks:
        fields = ("areas", "boxes", "scores", "mask_ids", "low_res")
        joined = {f: np.concatenate([getattr(p, f) for p in parts]) for f in fields}
        return PromptMasks(bits=[b for p in parts for b in p.bits], **joined)


class Predictor(Protocol):
    """What the generator, the high-level API and the batch job need from a backend."""

    img_size: int  # longest side of the model input
    mask_threshold: float  # logits above it are inside a mask
    transform: ResizeLongestSide
    original_size: tuple[int, int] | None  # (H, W) of the set image
    input_size: tuple[int, int] | None  # (h, w) of the set image in the model frame
    device: Any  # where `decode_points` returns its tensors (a torch.device or "cpu")

    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        """Embed an HxWx3 uint8 image."""

    def reset_image(self) -> None:
        """Forget the set image."""

    def decode_sets(
        self,
        coords: np.ndarray | None,
        labels: np.ndarray | None,
        boxes: np.ndarray | None,
        out_size: tuple[int, int],
        multimask: bool,
        mask_id: int | None,
        mask_input: np.ndarray | None = None,
    ) -> PromptMasks:
        """B prompt sets in the model frame, all with the same number of points: coords
        BxNx2 and labels BxN (1 foreground, 0 background) or None, boxes Bx4 XYXY or None,
        mask_input Bx256x256 float32 low-res logits (a mask prompt per set) or None.
        One mask per set at `out_size` (H, W): with `multimask`, candidate `mask_id` (1-3)
        or else the best-scoring of three; without, the single-mask output."""

    def decode_points(
        self, coords: Any, pred_iou_thresh: float, precision: str = "float32"
    ) -> tuple[Any, Any, Any]:
        """N single foreground points (torch Nx2, model frame) -> the multi-mask candidates
        whose predicted IoU is above `pred_iou_thresh` (all of them if it is 0): low-res
        logits Mx256x256, predicted IoU M and each one's point index M (torch tensors on
        `device`), in (point, mask token) order. `precision`: "float32", or "bf16" where
        the backend offers an approximate bfloat16 decoder (else a PromptError)."""
