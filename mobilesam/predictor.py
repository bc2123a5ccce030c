"""`SamPredictor`: embed an image once, then segment it from prompts, many times.

Same names, arguments, shapes and semantics as segment-anything's predictor, so code
written for segment-anything or MobileSAM runs unchanged. The numpy layer (`set_image`,
`predict`) works in original-image pixels; the torch layer (`set_torch_image`,
`predict_torch`) takes prompts already in the resized frame (`self.transform`).
"""

from __future__ import annotations

import numpy as np
import torch

from .image_io import rgb_array
from .modeling.sam import Sam
from .prompts import point_arrays
from .transforms import ResizeLongestSide


class SamPredictor:
    def __init__(self, sam_model: Sam) -> None:
        self.model = sam_model
        self.transform = ResizeLongestSide(sam_model.img_size)
        self.reset_image()

    @torch.inference_mode()
    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        """Embed an HxWx3 uint8 image in `image_format` ("RGB" or "BGR")."""
        image = rgb_array(image, image_format)  # the model takes RGB
        resized = self.transform.apply_image(image)
        tensor = torch.as_tensor(resized, device=self.device).permute(2, 0, 1).contiguous()[None]
        self.set_torch_image(tensor, image.shape[:2])

    @torch.inference_mode()
    def set_torch_image(self, transformed_image: torch.Tensor, original_image_size: tuple[int, ...]) -> None:
        """Embed a 1x3xhxw image already resized so that max(h, w) == img_size."""
        shape = tuple(transformed_image.shape)
        if len(shape) != 4 or shape[1] != 3 or max(shape[2:]) != self.model.img_size:
            raise ValueError(
                f"set_torch_image expects 1x3xHxW with longest side {self.model.img_size}, got {shape}"
            )
        self.reset_image()
        self.original_size = tuple(int(s) for s in original_image_size)
        self.input_size = (int(shape[2]), int(shape[3]))
        input_image = self.model.preprocess(transformed_image.float())
        # A bfloat16 encoder (MobileSAM(precision="bf16")) feeds the float32 decoder.
        dtype = next(self.model.image_encoder.parameters()).dtype
        self.features = self.model.image_encoder(input_image.to(dtype)).float()
        pe = self.model.prompt_encoder
        self.image_pe = pe.get_dense_pe()
        # The decoder's work that is the same for every prompt without a mask input.
        self.context = self.model.mask_decoder.prepare(self.features, self.image_pe, pe.dense_no_mask(1))
        self.is_image_set = True

    def predict(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Segment the set image from prompts in original-image pixels.

        point_coords: Nx2 (x, y); point_labels: N (1 foreground, 0 background);
        box: 4 XYXY; mask_input: 1x256x256 low-res logits from an earlier call.
        Returns masks CxHxW (bool, or float logits with return_logits), scores C and
        low-res logits Cx256x256, with C = 3 if multimask_output else 1, in mask-token order.
        """
        self._require_image()
        coords_t = labels_t = box_t = mask_t = None
        if point_coords is not None:
            coords, labels = point_arrays(point_coords, point_labels)
            coords = self.transform.apply_coords(coords, self.original_size)
            coords_t = torch.as_tensor(coords, dtype=torch.float, device=self.device)[None]
            labels_t = torch.as_tensor(labels, dtype=torch.int, device=self.device)[None]
        if box is not None:
            box = np.asarray(box, dtype=float)
            if box.size != 4:
                raise ValueError(f"box must hold 4 numbers (x0, y0, x1, y1), got shape {box.shape}")
            box = self.transform.apply_boxes(box, self.original_size)
            box_t = torch.as_tensor(box, dtype=torch.float, device=self.device)[None, :].reshape(1, 4)
        if mask_input is not None:
            mask_t = torch.as_tensor(mask_input, dtype=torch.float, device=self.device)[None]
        masks, iou, low_res = self.predict_torch(
            coords_t, labels_t, box_t, mask_t, multimask_output, return_logits
        )
        return masks[0].cpu().numpy(), iou[0].cpu().numpy(), low_res[0].cpu().numpy()

    @torch.inference_mode()
    def predict_torch(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Batched prompts in the resized frame (apply `self.transform` first).

        point_coords: BxNx2; point_labels: BxN; boxes: Bx4; mask_input: Bx1x256x256.
        Returns masks BxCxHxW, scores BxC, low-res logits BxCx256x256.
        """
        self._require_image()
        low_res, iou = self.decode(point_coords, point_labels, boxes, mask_input, multimask_output)
        masks = self.model.postprocess_masks(low_res, self.input_size, self.original_size)
        if not return_logits:
            masks = masks > self.model.mask_threshold
        return masks, iou, low_res

    @torch.inference_mode()
    def decode(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt encoder + mask decoder only: low-res logits BxCx256x256 and scores BxC."""
        points = (point_coords, point_labels) if point_coords is not None else None
        sparse, dense = self.model.prompt_encoder(points, boxes, mask_input)
        context = self.context if mask_input is None else None
        return self.model.mask_decoder(self.features, self.image_pe, sparse, dense, multimask_output, context)

    def get_image_embedding(self) -> torch.Tensor:
        """The set image's embedding, 1x256x64x64."""
        self._require_image()
        return self.features

    @property
    def device(self) -> torch.device:
        return self.model.device

    def reset_image(self) -> None:
        self.is_image_set = False
        self.features = None
        self.image_pe = None
        self.context = None
        self.original_size = None
        self.input_size = None

    def _require_image(self) -> None:
        if not self.is_image_set:
            raise RuntimeError("An image must be set with .set_image(...) before mask prediction.")
