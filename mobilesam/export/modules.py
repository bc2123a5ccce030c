"""Export-only modules: what goes into encoder.onnx and decoder.onnx.

`SamOnnxDecoder` has segment-anything's ONNX interface (its `utils/onnx.py`), so tools and
web demos that load SAM's decoder file load ours: inputs `image_embeddings` 1x256x64x64,
`point_coords` 1xNx2 (model-input frame, 1024 pixels), `point_labels` 1xN (1 foreground,
0 background, -1 padding, 2/3 box corners), `mask_input` 1x1x256x256, `has_mask_input`
1, `orig_im_size` 2 (H, W, float); outputs `masks` (logits at orig_im_size),
`iou_predictions`, `low_res_masks`.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..modeling import fast_paths, mask_decoder, tiny_vit, transformer
from ..modeling.common import Conv2dBN, LayerNorm2d
from ..modeling.sam import Sam


def folded_copy(sam: Sam) -> Sam:
    """A copy of `sam` with each Conv2d+BatchNorm replaced by one convolution holding the
    folded weights, so the exported graph stores them as constants (which int8
    quantisation needs) instead of computing them on every run. Every fast path is off in
    the copy: export traces the plain reference path."""
    sam = fast_paths.configure(copy.deepcopy(sam).eval(), on=False)
    for module in list(sam.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, Conv2dBN):
                weight, bias = child.folded()
                c = child.c
                conv = nn.Conv2d(
                    c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding, c.dilation, c.groups
                )
                conv.weight.data.copy_(weight.detach())
                conv.bias.data.copy_(bias.detach())
                setattr(module, name, conv)  # its activation module follows, as upstream's
    return sam


def mobile_copy(sam: Sam) -> Sam:
    """`folded_copy` written in the operations XNNPACK (ExecuTorch's CPU backend) and Core
    ML take: TinyViT's window attention with separate q/k/v projections and 3-D batched
    matmuls (`_SplitAttention`), the decoder's attention without
    scaled_dot_product_attention (`_BmmAttention`), layer norms as matmuls
    (`_matmul_layer_norm`), the mask upscaling with its transposed convolutions
    (`_MobileMaskDecoder`). The same numbers up to float32 rounding."""
    sam = folded_copy(sam)
    for module in list(sam.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, tiny_vit.Attention):
                setattr(module, name, _SplitAttention(child))
            elif isinstance(child, transformer.Attention):
                child.__class__ = _BmmAttention
            elif isinstance(child, nn.LayerNorm | LayerNorm2d):
                child.__class__ = _MatmulLayerNorm if isinstance(child, nn.LayerNorm) else _ChannelsLastNorm2d
                c = child.weight.shape[0]
                child.register_buffer("mean_column", torch.full((c, 1), 1.0 / c), persistent=False)
    sam.mask_decoder.__class__ = _MobileMaskDecoder
    return sam


class _MobileMaskDecoder(mask_decoder.MaskDecoder):
    """The mask decoder upscaling with its transposed convolutions, as segment-anything
    writes it: the matmul-and-pixel-shuffle form views 8-D tensors, and XNNPACK takes at
    most 6 dimensions (Core ML 5)."""

    def upscale_and_project(self, tokens: torch.Tensor, hyper_in: torch.Tensor) -> torch.Tensor:
        return self.upscale_with_layers(tokens, hyper_in)


class _BmmAttention(transformer.Attention):
    """The decoder's attention as two 3-D batched matmuls and a softmax, where
    scaled_dot_product_attention would export as a decomposition XNNPACK cannot take."""

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        b, h = transformer._batch(q, k), self.num_heads
        d = q.shape[-1] // h

        def heads(t: torch.Tensor) -> torch.Tensor:
            n = t.shape[1]
            return t.expand(b, n, h * d).view(b, n, h, d).transpose(1, 2).reshape(b * h, n, d)

        weights = torch.bmm(heads(q) * d**-0.5, heads(k).transpose(1, 2)).softmax(dim=-1)
        out = torch.bmm(weights, heads(v))
        n = q.shape[1]
        return self.out_proj(out.view(b, h, n, d).transpose(1, 2).reshape(b, n, h * d))


class _SplitAttention(nn.Module):
    """tiny_vit.Attention with its fused q/k/v projection split in three (see `mobile_copy`)."""

    def __init__(self, attn: tiny_vit.Attention) -> None:
        super().__init__()
        self.num_heads, self.key_dim, self.norm, self.proj = (
            attn.num_heads,
            attn.key_dim,
            attn.norm,
            attn.proj,
        )
        h, d = attn.num_heads, attn.key_dim
        # The official layout interleaves per head: [q | k | v] for head 0, then head 1, ...
        weight = attn.qkv.weight.detach().view(h, 3, d, -1)
        bias = attn.qkv.bias.detach().view(h, 3, d)
        for i, name in enumerate(("q", "k", "v")):
            part = nn.Linear(weight.shape[-1], h * d)
            part.weight.data.copy_(weight[:, i].reshape(h * d, -1))
            part.bias.data.copy_(bias[:, i].reshape(h * d))
            setattr(self, name, part)
        self.attention_biases = attn.attention_biases
        self.register_buffer("bias_index", attn.attention_bias_idxs.reshape(-1).clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        h, d = self.num_heads, self.key_dim
        y = self.norm(x)

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, n, h, d).transpose(1, 2).reshape(b * h, n, d)

        q, k, v = heads(self.q(y) * d**-0.5), heads(self.k(y)), heads(self.v(y))
        bias = self.attention_biases.index_select(1, self.bias_index).view(1, h, n, n)
        attn = (torch.bmm(q, k.transpose(1, 2)).view(b, h, n, n) + bias).softmax(dim=-1)
        out = torch.bmm(attn.view(b * h, n, n), v).view(b, h, n, d)
        return self.proj(out.transpose(1, 2).reshape(b, n, h * d))


def _matmul_layer_norm(
    x: torch.Tensor, mean_column: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float
) -> torch.Tensor:
    """Layer norm over the last axis with its two means as matmuls by a 1/C column: XNNPACK
    has no layer norm, and this way the whole norm runs in it instead of leaving the
    delegate for ExecuTorch's portable kernel (the same numbers up to summation order)."""
    centred = x - x @ mean_column
    return centred * torch.rsqrt((centred * centred) @ mean_column + eps) * weight + bias


class _MatmulLayerNorm(nn.LayerNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _matmul_layer_norm(x, self.mean_column, self.weight, self.bias, self.eps)


class _ChannelsLastNorm2d(LayerNorm2d):
    """LayerNorm2d as `_matmul_layer_norm` over the last axis of the channels-last tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _matmul_layer_norm(x.permute(0, 2, 3, 1), self.mean_column, self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


class EncoderOnnx(nn.Module):
    """Preprocessed 1x3xSxS image (normalised, padded) -> 1x256x(S/16)x(S/16) embedding."""

    def __init__(self, sam: Sam) -> None:
        super().__init__()
        self.image_encoder = sam.image_encoder

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.image_encoder(image)


class RawImageEncoderOnnx(nn.Module):
    """HxWx3 uint8 RGB of any size -> embedding; resize, normalisation and padding in the graph.

    The resize is bilinear with antialiasing on float pixels, where the Python path
    resizes the uint8 image with Pillow; the two differ by rounding (see the export check).
    """

    def __init__(self, sam: Sam) -> None:
        super().__init__()
        self.image_encoder = sam.image_encoder
        self.img_size = sam.img_size
        self.register_buffer("pixel_mean", sam.pixel_mean.clone(), persistent=False)
        self.register_buffer("pixel_std", sam.pixel_std.clone(), persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        h, w = image.shape[0], image.shape[1]
        # Symbolic sizes, as transforms.get_preprocess_shape computes them (round half up,
        # at least 1: a 1x3000 strip).
        long_side = torch.sym_max(h, w)
        new_h = torch.sym_max(1, torch.sym_int(h * self.img_size / long_side + 0.5))
        new_w = torch.sym_max(1, torch.sym_int(w * self.img_size / long_side + 0.5))
        x = image.permute(2, 0, 1)[None].float()
        x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)
        x = (x.clamp(0, 255).round() - self.pixel_mean.view(1, -1, 1, 1)) / self.pixel_std.view(1, -1, 1, 1)
        x = F.pad(x, (0, self.img_size - x.shape[3], 0, self.img_size - x.shape[2]))
        return self.image_encoder(x)


class SamOnnxDecoder(nn.Module):
    """Prompt encoder + mask decoder + upsampling with segment-anything's ONNX interface."""

    def __init__(self, sam: Sam, return_single_mask: bool = False) -> None:
        super().__init__()
        self.prompt_encoder = sam.prompt_encoder
        self.mask_decoder = sam.mask_decoder
        self.img_size = sam.img_size
        self.return_single_mask = return_single_mask

    def _embed_points(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        pe = self.prompt_encoder
        emb = pe.pe_layer._encode((coords + 0.5) / self.img_size)
        labels = labels.unsqueeze(-1)
        emb = emb * (labels != -1) + pe.not_a_point_embed.weight * (labels == -1)
        for i, token in enumerate(pe.point_embeddings):  # 0/1 points, 2/3 box corners
            emb = emb + token.weight * (labels == i)
        return emb

    def _predict(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Low-res logits and predicted IoU of all four mask tokens."""
        sparse = self._embed_points(point_coords, point_labels)
        dense = self._embed_masks(mask_input, has_mask_input)
        return self.mask_decoder.predict_masks(
            image_embeddings, self.prompt_encoder.get_dense_pe(), sparse, dense
        )

    def _embed_masks(self, mask_input: torch.Tensor, has_mask_input: torch.Tensor) -> torch.Tensor:
        pe = self.prompt_encoder
        masked = has_mask_input * pe.mask_downscaling(mask_input)
        return masked + (1 - has_mask_input) * pe.no_mask_embed.weight.reshape(1, -1, 1, 1)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
        orig_im_size: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        masks, scores = self._predict(
            image_embeddings, point_coords, point_labels, mask_input, has_mask_input
        )
        if self.return_single_mask:
            masks, scores = self._select(masks, scores, point_coords.shape[1])
        return self._postprocess(masks, orig_im_size), scores, masks

    @staticmethod
    def _select(
        masks: torch.Tensor, scores: torch.Tensor, num_points: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """segment-anything's choice of one mask: the single-mask token for 3+ points
        (padding included), else the best-scoring multi-mask candidate."""
        reweight = torch.zeros_like(scores)
        reweight[:, 0] = 1000.0
        best = torch.argmax(scores + (num_points - 2.5) * reweight, dim=1)
        rows = torch.arange(masks.shape[0])
        return masks[rows, best][:, None], scores[rows, best][:, None]

    def _postprocess(self, masks: torch.Tensor, orig_im_size: torch.Tensor) -> torch.Tensor:
        masks = F.interpolate(
            masks, size=(self.img_size, self.img_size), mode="bilinear", align_corners=False
        )
        size = orig_im_size.to(torch.float32)
        resized = torch.floor(size * (self.img_size / torch.max(size)) + 0.5).clamp(min=1).to(torch.int64)
        masks = masks[..., : resized[0], : resized[1]]
        orig = orig_im_size.to(torch.int64)
        return F.interpolate(masks, size=(orig[0], orig[1]), mode="bilinear", align_corners=False)


class BatchDecoderOnnx(SamOnnxDecoder):
    """Many prompt sets of one image in one run, as the automatic mask generator needs.

    Inputs: `image_embeddings` 1x256xhxw, `point_coords` BxNx2 and `point_labels` BxN
    (the decoder.onnx conventions, padding included; no mask input). Outputs
    `iou_predictions` Bx4 and `low_res_masks` Bx4x(4h)x(4w) of all four mask tokens
    (the single-mask token first), with no upsampling to the image size.
    """

    def forward(  # type: ignore[override]
        self, image_embeddings: torch.Tensor, point_coords: torch.Tensor, point_labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        sparse = self._embed_points(point_coords, point_labels)
        dense = self.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
        masks, scores = self.mask_decoder.predict_masks(
            image_embeddings, self.prompt_encoder.get_dense_pe(), sparse, dense
        )
        return scores, masks


class LowResDecoder(SamOnnxDecoder):
    """decoder.pte: decoder.onnx's inputs without `orig_im_size` -> `iou_predictions` 1x4 and
    `low_res_masks` 1x4x(4h)x(4w) of all four mask tokens (single-mask first). The
    upsampling to the image is left to the caller: its output size depends on the input's
    values, which ExecuTorch's static memory plan cannot hold."""

    def forward(  # type: ignore[override]
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        masks, scores = self._predict(
            image_embeddings, point_coords, point_labels, mask_input, has_mask_input
        )
        return scores, masks
