"""`Sam`: image encoder + prompt encoder + mask decoder, with pre- and post-processing."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import PromptError
from ..transforms import PIXEL_MEAN, PIXEL_STD
from .image_encoder import ImageEncoderViT
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder
from .tiny_vit import TinyViT


def normalize_and_pad(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, size: int) -> torch.Tensor:
    """Bx3xhxw RGB in [0, 255] (longest side already `size`) -> normalised Bx3xSxS, zero-padded
    at the bottom and right."""
    x = (x - mean.view(-1, 1, 1)) / std.view(-1, 1, 1)
    h, w = x.shape[-2:]
    return F.pad(x, (0, size - w, 0, size - h))


def low_res_region(low_size: tuple[int, int], input_size: tuple[int, int], img_size: int) -> tuple[int, int]:
    """The rows and columns of hxw low-res logits that `upscale_masks` reads: a top-left
    block (the logits over the image, plus one row and column for the edge handling)
    when the low-res grid scales to the model input by a whole factor, else all of it."""
    h, w = low_size
    if img_size % w == 0 and h == w:
        scale = img_size // w
        return min(h, -(-input_size[0] // scale) + 1), min(w, -(-input_size[1] // scale) + 1)
    return h, w


def upscale_masks(
    masks: torch.Tensor,
    input_size: tuple[int, int],
    original_size: tuple[int, int],
    img_size: int,
    low_size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Low-res logits BxCx256x256 -> BxCxHxW logits in the original image frame.

    Upsample to the padded model input, crop the padding, resize to the original size
    (bilinear both times, as segment-anything does). `low_size`: the low-res size, when
    `masks` holds only its `low_res_region` block.
    """
    h, w = masks.shape[-2:] if low_size is None else low_size
    if img_size % w == 0 and h == w:
        # Only the rows and columns that survive the crop: with the same scale factor the
        # interpolation weights are the same, so this equals upsampling everything and
        # cropping, bit for bit (one extra source row/column keeps the edge handling).
        rows, cols = low_res_region((h, w), input_size, img_size)
        masks = F.interpolate(
            masks[..., :rows, :cols], scale_factor=img_size // w, mode="bilinear", align_corners=False
        )
    else:
        masks = F.interpolate(masks, (img_size, img_size), mode="bilinear", align_corners=False)
    masks = masks[..., : input_size[0], : input_size[1]]
    return F.interpolate(masks, original_size, mode="bilinear", align_corners=False)


class Sam(nn.Module):
    mask_threshold: float = 0.0
    image_format: str = "RGB"

    def __init__(
        self,
        image_encoder: TinyViT | ImageEncoderViT,
        prompt_encoder: PromptEncoder,
        mask_decoder: MaskDecoder,
        pixel_mean: tuple[float, float, float] = PIXEL_MEAN,
        pixel_std: tuple[float, float, float] = PIXEL_STD,
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        # Not in the official checkpoints: constants, not weights. 3x1x1 as upstream's, so
        # that code normalising a CxHxW image with them as upstream does gets the same.
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def img_size(self) -> int:
        return self.image_encoder.img_size

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Bx3xhxw float RGB in [0, 255] -> normalised, padded Bx3xSxS model input."""
        return normalize_and_pad(x, self.pixel_mean, self.pixel_std, self.img_size)

    def postprocess_masks(
        self, masks: torch.Tensor, input_size: tuple[int, ...], original_size: tuple[int, ...]
    ) -> torch.Tensor:
        """Low-res logits -> logits at original_size=(H, W); input_size is the resized (h, w)."""
        return upscale_masks(masks, tuple(input_size), tuple(original_size), self.img_size)

    @torch.no_grad()
    def forward(self, batched_input: list[dict], multimask_output: bool) -> list[dict]:
        """segment-anything's end-to-end call, for code written against it; without autograd,
        as upstream's (training code calls the three modules itself).

        Each input dict holds `image` (3xhxw, already resized), `original_size`, and any of
        `point_coords` (BxNx2), `point_labels` (BxN), `boxes` (Bx4), `mask_inputs`
        (Bx1x256x256), all in the resized frame. Each output holds `masks` (bool),
        `iou_predictions` and `low_res_logits`.
        """
        if not batched_input:
            return []
        for i, record in enumerate(batched_input):
            self._check_record(i, record)
        images = torch.stack([self.preprocess(x["image"][None])[0] for x in batched_input])
        embeddings = self.image_encoder(images)
        outputs = []
        for record, emb in zip(batched_input, embeddings):
            points = None
            if "point_coords" in record:
                points = (record["point_coords"], record["point_labels"])
            sparse, dense = self.prompt_encoder(points, record.get("boxes"), record.get("mask_inputs"))
            low_res, iou = self.mask_decoder(
                emb[None], self.prompt_encoder.get_dense_pe(), sparse, dense, multimask_output
            )
            masks = self.postprocess_masks(low_res, record["image"].shape[-2:], record["original_size"])
            outputs.append(
                {"masks": masks > self.mask_threshold, "iou_predictions": iou, "low_res_logits": low_res}
            )
        return outputs

    def _check_record(self, i: int, record: dict) -> None:
        if "image" not in record or "original_size" not in record:
            raise PromptError(
                f"batched_input[{i}] needs 'image' and 'original_size', got keys {sorted(record)}"
            )
        shape = tuple(record["image"].shape)
        if len(shape) != 3 or shape[0] != 3 or max(shape[1:]) > self.img_size:
            raise PromptError(
                f"batched_input[{i}]['image'] must be 3xhxw with sides up to {self.img_size} "
                f"(ResizeLongestSide({self.img_size}).apply_image, then permute(2, 0, 1)), got {shape}"
            )
