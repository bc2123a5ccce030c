"""SAM's mask decoder: image embedding + prompt tokens -> mask logits and predicted IoU."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from . import fast_paths
from .common import LayerNorm2d, fused_activation, layer_act, linear
from .fast_paths import needs_grad, observed, tracing, unmodified
from .transformer import ImageContext, TwoWayTransformer


def _as_linear(deconv: nn.ConvTranspose2d) -> tuple[torch.Tensor, torch.Tensor]:
    """A 2x2 stride-2 ConvTranspose2d as a linear map: in -> (dy, dx, out), channel fastest."""
    cin, cout, kh, kw = deconv.weight.shape
    weight = deconv.weight.permute(2, 3, 1, 0).reshape(kh * kw * cout, cin)
    return weight, deconv.bias.repeat(kh * kw)


class MLP(nn.Module):
    """`num_layers` linear layers with ReLU between them (keys `layers.i`), and a sigmoid
    on the output with `sigmoid_output`, as upstream's."""

    FAST_PATHS = ("onednn",)

    def __init__(
        self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int, sigmoid_output: bool = False
    ) -> None:
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1)
        outs = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims, outs))
        self.sigmoid_output = sigmoid_output
        self.onednn = fast_paths.default("onednn")

    @property
    def num_layers(self) -> int:
        """Upstream's attribute: the number of linear layers."""
        return len(self.layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = self.num_layers - 1
        for i, layer in enumerate(self.layers):
            x = layer_act(layer, x, "relu" if i < last else "none", self.onednn)
        return torch.sigmoid(x) if self.sigmoid_output else x


class MaskDecoder(nn.Module):
    FAST_PATHS = ("onednn",)  # the upscaler's matmuls (its sub-modules have their own flags)

    def __init__(
        self,
        transformer_dim: int = 256,
        transformer: TwoWayTransformer | None = None,
        num_multimask_outputs: int = 3,
        activation: type[nn.Module] = nn.GELU,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
    ) -> None:
        super().__init__()
        self.transformer_dim = transformer_dim
        self.transformer = transformer if transformer is not None else TwoWayTransformer()
        self.num_multimask_outputs = num_multimask_outputs
        self.num_mask_tokens = num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4),
            activation(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            activation(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3)
            for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(
            transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth
        )
        self.onednn = fast_paths.default("onednn")

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
        context: ImageContext | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """image_embeddings: 1xCxhxw (one image) or BxCxhxw; image_pe: 1xCxhxw;
        sparse: BxNxC; dense: BxCxhxw. `context` (from `prepare`) replaces the image and
        dense arguments with work done once per image.

        Returns low-res mask logits Bx(3 or 1)x4hx4w and predicted IoU Bx(3 or 1).
        Mask order is mask-token order: with multimask_output the three multi-mask
        tokens, otherwise the single-mask token.
        """
        sel = slice(1, None) if multimask_output else slice(0, 1)
        return self.predict_masks(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings, context, sel
        )

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        context: ImageContext | None = None,
        tokens_out: slice = slice(None),
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask logits BxKx4hx4w and predicted IoU BxK of the mask tokens `tokens_out`
        (default all four; only those are projected and upscaled)."""
        hs, src, size = self.run_transformer(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings, context
        )
        masks = self.masks_from_tokens(hs, src, size, tokens_out)
        return masks, self.iou_prediction_head(hs[:, 0, :])[:, tokens_out]

    def run_transformer(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        context: ImageContext | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        """Output tokens Bx5xC (IoU token first, then the mask tokens), image tokens
        Bx(hw)xC and the grid size (h, w). `iou_prediction_head(tokens[:, 0])` scores the
        masks before any of them is computed."""
        b = sparse_prompt_embeddings.shape[0]
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = torch.cat([output_tokens.expand(b, -1, -1), sparse_prompt_embeddings], dim=1)
        if image_embeddings is not None and observed(self.transformer):
            # Hooks in the transformer (a FLOP counter, a feature extractor) see upstream's
            # call: the image and its positions per prompt, every token to the end.
            src = (image_embeddings + dense_prompt_embeddings).expand(b, -1, -1, -1)
            hs, src = self.transformer(src, image_pe.expand(b, -1, -1, -1), tokens)
            return hs, src, (image_embeddings.shape[-2], image_embeddings.shape[-1])
        if context is None:
            context = self.prepare(image_embeddings, image_pe, dense_prompt_embeddings)
        # The prompt tokens' outputs are never read: the last attention skips them.
        hs, src = self.transformer(None, None, tokens, context, tokens_out=output_tokens.shape[0])
        return hs, src, context.size

    def masks_from_tokens(
        self, hs: torch.Tensor, src: torch.Tensor, size: tuple[int, int], tokens_out: slice = slice(None)
    ) -> torch.Tensor:
        """Low-res mask logits BxKx4hx4w of the mask tokens `tokens_out` (see `run_transformer`).
        B may be 0 (every prompt of a chunk filtered out): the result is then 0xKx4hx4w."""
        mask_tokens_out = hs[:, 1 : 1 + self.num_mask_tokens, :]
        tokens = src.view(src.shape[0], *size, src.shape[-1])
        mlps = self.output_hypernetworks_mlps
        watched = observed(mlps)
        if watched or needs_grad(*mlps.parameters()):
            # Training: every token's MLP runs, as upstream's, so the tokens not asked for get
            # zero gradients rather than none (DistributedDataParallel wants them all). With
            # hooks (a FLOP counter), every mask is made, as upstream makes them.
            hyper_in = torch.stack([mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(mlps)], dim=1)
            if watched:
                return self.upscale_and_project(tokens, hyper_in)[:, tokens_out]
            hyper_in = hyper_in[:, tokens_out]
        else:
            chosen = range(self.num_mask_tokens)[tokens_out]
            hyper_in = torch.stack([mlps[i](mask_tokens_out[:, i, :]) for i in chosen], dim=1)
        return self.upscale_and_project(tokens, hyper_in)

    def prepare(
        self, image_embeddings: torch.Tensor, image_pe: torch.Tensor, dense_prompt_embeddings: torch.Tensor
    ) -> ImageContext:
        """The decoder's prompt-independent work, reusable for every prompt of an image whose
        dense embedding is the same (no mask prompt): pass it as `context`."""
        return self.transformer.prepare(image_embeddings + dense_prompt_embeddings, image_pe)

    def upscale_and_project(self, tokens: torch.Tensor, hyper_in: torch.Tensor) -> torch.Tensor:
        """`output_upscaling` then the per-token dot product, channels-last.

        tokens: BxhxwxC image tokens; hyper_in: BxKxC' mask-token weights. Returns mask
        logits BxKx4hx4w. A 2x2 stride-2 transposed convolution maps each input pixel to
        a 2x2 output block, i.e. one matmul and a pixel shuffle; channels-last, the
        LayerNorm2d is a plain layer_norm and no feature map is ever transposed.
        """
        up1, norm, act1, up2, act2 = self.output_upscaling
        b, h, w, _ = tokens.shape
        k = hyper_in.shape[1]
        if not (
            unmodified(up1, nn.ConvTranspose2d)
            and unmodified(norm, LayerNorm2d)
            and unmodified(up2, nn.ConvTranspose2d)
            and fused_activation(act1) == fused_activation(act2) == "gelu"
        ):  # an adapter wraps a layer, a hook watches one, another activation: as upstream
            return self.upscale_with_layers(tokens, hyper_in)
        c1, c2 = up1.out_channels, up2.out_channels
        # Both pixel shuffles wait until the end, on the small K-channel result: LayerNorm2d
        # and GELU act per pixel, so they do not care where the pixels sit. Every view names
        # its sizes (no -1), so a batch of 0 goes through.
        x = linear(tokens, *_as_linear(up1), "none", self.onednn).view(b, h, w, 2, 2, c1)
        x = F.gelu(F.layer_norm(x, (c1,), norm.weight, norm.bias, norm.eps))
        x = linear(x, *_as_linear(up2), "gelu", self.onednn)  # B h w dy1 dx1 (dy2 dx2 C')
        # Mask-major product (each mask's logits contiguous), so that the shuffle below
        # moves neighbouring columns (dx2 = 0, 1) together.
        masks = torch.bmm(hyper_in, x.view(b, h * w * 16, c2).transpose(1, 2))
        return _pixel_shuffle(masks, b, k, h, w)

    def upscale_with_layers(self, tokens: torch.Tensor, hyper_in: torch.Tensor) -> torch.Tensor:
        """`upscale_and_project` as segment-anything writes it: `output_upscaling`'s layers
        called on the channels-first tokens, then the per-token product. For layers an
        adapter wraps, and for exports to runtimes of at most 6 dimensions."""
        upscaled = self.output_upscaling(tokens.permute(0, 3, 1, 2))
        b, c, h, w = upscaled.shape
        return (hyper_in @ upscaled.reshape(b, c, h * w)).view(b, hyper_in.shape[1], h, w)


def _pixel_shuffle(masks: torch.Tensor, b: int, k: int, h: int, w: int) -> torch.Tensor:
    """BxKx(h w dy1 dx1 dy2 dx2) logits -> BxKx4hx4w (row 4h + 2dy1 + dy2, column 4w + 2dx1 + dx2).

    The two columns of each dx2 pair are neighbours before and after, so the permutation
    moves them as one integer of twice the width: 16x fewer, longer elements, the same
    bits (12x faster here than the 8-D float permute, which autograd, tracing and empty
    batches still use).
    """
    pair = {4: torch.int64, 2: torch.int32}.get(masks.element_size())
    plain = masks.numel() == 0 or tracing() or needs_grad(masks)
    if pair is None or plain:
        masks = masks.view(b, k, h, w, 2, 2, 2, 2).permute(0, 1, 2, 4, 6, 3, 5, 7)
        return masks.reshape(b, k, 4 * h, 4 * w)
    pairs = masks.view(pair).view(b * k * h, w, 2, 2, 2)  # (w dy1 dx1 dy2) of dx2 pairs
    pairs = pairs.permute(0, 2, 4, 1, 3).contiguous()  # (dy1 dy2 w dx1)
    return pairs.view(masks.dtype).view(b, k, 4 * h, 4 * w)
