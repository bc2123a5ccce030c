"""segment-anything's `utils/onnx.py` module path: `SamOnnxModel`, the decoder that the ONNX
notebooks and web demos export (`torch.onnx.export(SamOnnxModel(sam, True), ...)`).

Same constructor, inputs and outputs as upstream's: `image_embeddings`, `point_coords`
(model frame, box corners labelled 2/3, padding -1), `point_labels`, `mask_input`,
`has_mask_input`, `orig_im_size` -> `masks` (logits at orig_im_size), `iou_predictions`,
`low_res_masks`; `use_stability_score` replaces the scores by stability scores;
`return_extra_metrics` adds stability scores and areas. Built on `export.modules`.
"""

from __future__ import annotations

import torch

from ..export.modules import SamOnnxDecoder
from ..modeling.sam import Sam
from .amg import stability_score

__all__ = ["SamOnnxModel"]


class SamOnnxModel(SamOnnxDecoder):
    def __init__(
        self,
        model: Sam,
        return_single_mask: bool,
        use_stability_score: bool = False,
        return_extra_metrics: bool = False,
    ) -> None:
        super().__init__(model, return_single_mask)
        self.model = model
        self.mask_threshold = model.mask_threshold
        self.use_stability_score = use_stability_score
        self.stability_score_offset = 1.0
        self.return_extra_metrics = return_extra_metrics
        # Eval mode from the start: torch.onnx.export puts a module back in the mode it
        # found it in, and a wrapper left in training mode would switch the whole model
        # (its batch norms included) to training mode after the export.
        self.eval()

    def forward(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
        orig_im_size: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        masks, scores = self._predict(
            image_embeddings, point_coords, point_labels, mask_input, has_mask_input
        )
        if self.use_stability_score:
            scores = stability_score(masks, self.mask_threshold, self.stability_score_offset)
        if self.return_single_mask:
            masks, scores = self._select(masks, scores, point_coords.shape[1])
        upscaled = self._postprocess(masks, orig_im_size)
        if self.return_extra_metrics:
            stability = stability_score(upscaled, self.mask_threshold, self.stability_score_offset)
            areas = (upscaled > self.mask_threshold).sum(dim=(-1, -2))
            return upscaled, scores, stability, areas, masks
        return upscaled, scores, masks
