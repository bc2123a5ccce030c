"""SAM's two-way transformer: prompt tokens and image tokens attend to each other."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .common import Linear, MLPBlock


@dataclass(frozen=True)
class ImageProjections:
    """A block's projections of the image tokens: token->image keys and values, image->token queries."""

    t2i_k: torch.Tensor
    t2i_v: torch.Tensor
    i2t_q: torch.Tensor


@dataclass(frozen=True)
class ImageContext:
    """Prompt-independent transformer inputs for one image (BxHWxC tensors, B usually 1)."""

    keys: torch.Tensor
    key_pe: torch.Tensor
    first: ImageProjections
    size: tuple[int, int]  # (h, w) of the image token grid


class Attention(nn.Module):
    """Multi-head attention with separate q/k/v projections, optionally to a smaller width."""

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        self.num_heads = num_heads
        internal = embedding_dim // downsample_rate
        if internal % num_heads:
            raise ValueError("num_heads must divide embedding_dim // downsample_rate")
        self.q_proj = Linear(embedding_dim, internal)
        self.k_proj = Linear(embedding_dim, internal)
        self.v_proj = Linear(embedding_dim, internal)
        self.out_proj = Linear(internal, embedding_dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.view(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.attend(self.q_proj(q), self.k_proj(k), self.v_proj(v))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Attention on already projected BxNxC inputs (a batch of 1 broadcasts) -> out_proj."""
        b = max(q.shape[0], k.shape[0])
        # Expanded views, not broadcasting: SDPA's fast CPU kernel wants equal batch sizes
        # and falls back to a much slower path otherwise.
        q, k, v = (t.expand(b, -1, -1) for t in (q, k, v))
        out = F.scaled_dot_product_attention(self._heads(q), self._heads(k), self._heads(v))
        b, h, n, d = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, h * d))


class TwoWayAttentionBlock(nn.Module):
    """Token self-attention, token->image, MLP on tokens, image->token."""

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int,
        attention_downsample_rate: int = 2,
        skip_first_layer_pe: bool = False,
    ) -> None:
        super().__init__()
        self.self_attn = Attention(embedding_dim, num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm2 = nn.LayerNorm(embedding_dim)
        self.mlp = MLPBlock(embedding_dim, mlp_dim, "relu")
        self.norm3 = nn.LayerNorm(embedding_dim)
        self.norm4 = nn.LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.skip_first_layer_pe = skip_first_layer_pe

    def project_image(self, keys: torch.Tensor, key_pe: torch.Tensor) -> ImageProjections:
        """The projections of this block that read only the image tokens."""
        k = keys + key_pe
        t2i, i2t = self.cross_attn_token_to_image, self.cross_attn_image_to_token
        return ImageProjections(t2i.k_proj(k), t2i.v_proj(keys), i2t.q_proj(k))

    def forward(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        query_pe: torch.Tensor,
        key_pe: torch.Tensor,
        image_proj: ImageProjections | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """image_proj: `project_image(keys, key_pe)` computed earlier, when the keys are the
        same for many prompts (the first block, without a mask prompt)."""
        if self.skip_first_layer_pe:
            # The first layer replaces the tokens (no residual): they carry their own PE.
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)

        proj = image_proj if image_proj is not None else self.project_image(keys, key_pe)
        t2i, i2t = self.cross_attn_token_to_image, self.cross_attn_image_to_token
        queries = self.norm2(queries + t2i.attend(t2i.q_proj(queries + query_pe), proj.t2i_k, proj.t2i_v))
        queries = self.norm3(queries + self.mlp(queries))
        tokens = queries + query_pe
        keys = self.norm4(keys + i2t.attend(proj.i2t_q, i2t.k_proj(tokens), i2t.v_proj(queries)))
        return queries, keys


class TwoWayTransformer(nn.Module):
    def __init__(
        self,
        depth: int = 2,
        embedding_dim: int = 256,
        num_heads: int = 8,
        mlp_dim: int = 2048,
        attention_downsample_rate: int = 2,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(embedding_dim, num_heads, mlp_dim, attention_downsample_rate, i == 0)
            for i in range(depth)
        )
        self.final_attn_token_to_image = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    def prepare(self, image_embedding: torch.Tensor, image_pe: torch.Tensor) -> ImageContext:
        """Everything that depends on the image only: tokens, their PE, first-block projections."""
        # Contiguous once here, instead of a hidden copy in every projection of the keys.
        keys = image_embedding.flatten(2).transpose(1, 2).contiguous()
        key_pe = image_pe.flatten(2).transpose(1, 2).contiguous()
        size = (image_embedding.shape[-2], image_embedding.shape[-1])
        return ImageContext(keys, key_pe, self.layers[0].project_image(keys, key_pe), size)

    def forward(
        self,
        image_embedding: torch.Tensor,
        image_pe: torch.Tensor,
        point_embedding: torch.Tensor,
        context: ImageContext | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """image_embedding, image_pe: BxCxHxW (B or 1); point_embedding: BxNxC.

        With `context` (from `prepare`, reusable across prompts of one image) the image
        arguments are not read. Returns the processed tokens BxNxC and image tokens Bx(HW)xC.
        """
        if context is None:
            context = self.prepare(image_embedding, image_pe)
        keys, key_pe = context.keys, context.key_pe
        queries = point_embedding
        for i, layer in enumerate(self.layers):
            queries, keys = layer(queries, keys, point_embedding, key_pe, context.first if i == 0 else None)
        attn = self.final_attn_token_to_image(queries + point_embedding, keys + key_pe, keys)
        return self.norm_final_attn(queries + attn), keys
