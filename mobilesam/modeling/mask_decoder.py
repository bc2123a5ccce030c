"""SAM's mask decoder: image embedding + prompt tokens -> mask logits and predicted IoU."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .common import LayerNorm2d, Linear, linear
from .transformer import TwoWayTransformer


def _as_linear(deconv: nn.ConvTranspose2d) -> tuple[torch.Tensor, torch.Tensor]:
    """A 2x2 stride-2 ConvTranspose2d as a linear map: in -> (dy, dx, out), channel fastest."""
    cin, cout, kh, kw = deconv.weight.shape
    weight = deconv.weight.permute(2, 3, 1, 0).reshape(kh * kw * cout, cin)
    return weight, deconv.bias.repeat(kh * kw)


class MLP(nn.Module):
    """`num_layers` linear layers with ReLU between them (keys `layers.i`)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1)
        outs = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(Linear(i, o) for i, o in zip(dims, outs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x, "relu" if i < last else "none")
        return x


class MaskDecoder(nn.Module):
    def __init__(
        self,
        transformer_dim: int = 256,
        transformer: TwoWayTransformer | None = None,
        num_multimask_outputs: int = 3,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
    ) -> None:
        super().__init__()
        self.transformer_dim = transformer_dim
        self.transformer = transformer if transformer is not None else TwoWayTransformer()
        self.num_mask_tokens = num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3)
            for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(
            transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth
        )

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """image_embeddings: 1xCxhxw (one image) or BxCxhxw; image_pe: 1xCxhxw;
        sparse: BxNxC; dense: BxCxhxw.

        Returns low-res mask logits Bx(3 or 1)x4hx4w and predicted IoU Bx(3 or 1).
        Mask order is mask-token order: with multimask_output the three multi-mask
        tokens, otherwise the single-mask token.
        """
        masks, iou_pred = self.predict_masks(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings
        )
        sel = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, sel], iou_pred[:, sel]

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """All four mask tokens' logits Bx4x4hx4w and predicted IoU Bx4."""
        b = sparse_prompt_embeddings.shape[0]
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = torch.cat([output_tokens.expand(b, -1, -1), sparse_prompt_embeddings], dim=1)
        src = image_embeddings + dense_prompt_embeddings
        if src.shape[0] != b:
            src = src.expand(b, -1, -1, -1)
        pos_src = image_pe.expand(b, -1, -1, -1)
        _, _, h, w = src.shape
        hs, src = self.transformer(src, pos_src, tokens)
        iou_token_out = hs[:, 0, :]
        mask_tokens_out = hs[:, 1 : 1 + self.num_mask_tokens, :]
        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1
        )
        masks = self.upscale_and_project(src.view(b, h, w, -1), hyper_in)
        return masks, self.iou_prediction_head(iou_token_out)

    def upscale_and_project(self, tokens: torch.Tensor, hyper_in: torch.Tensor) -> torch.Tensor:
        """`output_upscaling` then the per-token dot product, channels-last.

        tokens: BxhxwxC image tokens; hyper_in: BxKxC' mask-token weights. Returns mask
        logits BxKx4hx4w. A 2x2 stride-2 transposed convolution maps each input pixel to
        a 2x2 output block, i.e. one matmul and a pixel shuffle; channels-last, the
        LayerNorm2d is a plain layer_norm and no feature map is ever transposed.
        """
        up1, norm, _, up2, _ = self.output_upscaling
        b, h, w, _ = tokens.shape
        x = linear(tokens, *_as_linear(up1), "none", self.training)  # B x h x w x (dy dx C)
        x = x.view(b, h, w, 2, 2, -1).transpose(2, 3).reshape(b, 2 * h, 2 * w, -1)
        x = F.gelu(F.layer_norm(x, x.shape[-1:], norm.weight, norm.bias, norm.eps))
        x = linear(x, *_as_linear(up2), "gelu", self.training)  # B x 2h x 2w x (dy dx C')
        masks = x.view(b, -1, hyper_in.shape[-1]) @ hyper_in.transpose(1, 2)  # B x (2h 2w dy dx) x K
        masks = masks.view(b, 2 * h, 2 * w, 2, 2, -1).permute(0, 5, 1, 3, 2, 4)
        return masks.reshape(b, -1, 4 * h, 4 * w)
