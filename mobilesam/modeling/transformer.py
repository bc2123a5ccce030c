"""SAM's two-way transformer: prompt tokens and image tokens attend to each other."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import fast_paths
from .common import MLPBlock, layer_act, linear
from .fast_paths import hooked, needs_grad, onednn_applies, tracing, unmodified


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
    first: ImageProjections | None  # None where the first block calls its attentions itself
    size: tuple[int, int]  # (h, w) of the image token grid


class Attention(nn.Module):
    """Multi-head attention with separate q/k/v projections, optionally to a smaller width.

    Fast paths (fast_paths.py): `few_token` lets the decoder use `attend_to_image` and
    `attend_few_keys`; `onednn` runs their per-prompt products as oneDNN linears.
    """

    FAST_PATHS = ("onednn", "few_token")

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        self.num_heads = num_heads
        internal = embedding_dim // downsample_rate
        if internal % num_heads:
            raise ValueError("num_heads must divide embedding_dim // downsample_rate")
        self.embedding_dim, self.internal_dim = embedding_dim, internal
        self.q_proj = nn.Linear(embedding_dim, internal)
        self.k_proj = nn.Linear(embedding_dim, internal)
        self.v_proj = nn.Linear(embedding_dim, internal)
        self.out_proj = nn.Linear(internal, embedding_dim)
        self.onednn = fast_paths.default("onednn")
        self.few_token = fast_paths.default("few_token")

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return self._separate_heads(x, self.num_heads)

    @staticmethod
    def _separate_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
        """Upstream's helper: BxNxC -> B x heads x N x C/heads."""
        b, n, c = x.shape
        return x.reshape(b, n, num_heads, c // num_heads).transpose(1, 2)

    @staticmethod
    def _recombine_heads(x: torch.Tensor) -> torch.Tensor:
        """Upstream's helper: B x heads x N x D -> B x N x heads*D."""
        b, h, n, d = x.shape
        return x.transpose(1, 2).reshape(b, n, h * d)

    def project(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """One of the four projections, `layer`, applied to x (with the `onednn` flag)."""
        return layer_act(layer, x, onednn=self.onednn)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.attend(
            self.project(self.q_proj, q), self.project(self.k_proj, k), self.project(self.v_proj, v)
        )

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Attention on already projected BxNxC inputs (a batch of 1 broadcasts) -> out_proj."""
        b = _batch(q, k)
        # Expanded views, not broadcasting: SDPA's fast CPU kernel wants equal batch sizes
        # and falls back to a much slower path otherwise.
        q, k, v = (t.expand(b, -1, -1) for t in (q, k, v))
        out = F.scaled_dot_product_attention(self._heads(q), self._heads(k), self._heads(v))
        return self.project(self.out_proj, self._recombine_heads(out))

    def few(self, n: int) -> bool:
        """Whether to use `attend_few_keys` / `attend_to_image` for n prompt tokens: the
        `few_token` flag is on, the n tokens of every head laid side by side are no wider
        than the projections, nothing traces (the token count is a dynamic shape there),
        the four projections are plain nn.Linear layers, unwrapped and without hooks (the
        shortcuts read their weights), and no hook watches this module (the shortcuts are
        not calls of it)."""
        return (
            self.few_token
            and not tracing()
            and n * self.num_heads <= self.internal_dim
            and all(unmodified(p, nn.Linear) for p in (self.q_proj, self.k_proj, self.v_proj, self.out_proj))
            and not hooked(self)
        )

    def attend_to_image(self, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """`forward(q, keys, values)` for few queries (prompt tokens attending to image tokens).

        q: BxnxC; keys, values: BxNxC unprojected (a batch of 1 broadcasts). Instead of
        projecting the N image tokens, each head's query goes through that head's key
        projection (q_h K_h^T = (q_h W_h) X^T; the key bias adds the same to every score
        of a row, which softmax ignores), and the values are projected after the
        weighted sum (P (X W_h^T + b) = (P X) W_h^T + b, rows of P summing to 1): two
        matmuls of hn x C x N instead of two N x C x C' projections.
        """
        b, n, _ = q.shape
        h = self.num_heads
        d = self.q_proj.out_features // h
        qh = self.project(self.q_proj, q).view(b, n, h, d)
        wk = self.k_proj.weight.view(h, d, -1)
        # Sizes named, not -1, so an empty batch (B = 0) goes through.
        qk = torch.einsum("bnhd,hdc->bhnc", qh, wk).reshape(b, h * n, wk.shape[-1]) * d**-0.5
        scores = self._per_prompt(qk, keys.transpose(1, 2), None)
        if needs_grad(self.k_proj.bias):
            # Training: the key bias gets the gradient upstream's scores give it (zero but for
            # rounding; DistributedDataParallel wants one for every parameter), and the scores
            # keep their values (x - x is exactly 0), no larger for the per-row constant.
            bias_scores = torch.einsum("bnhd,hd->bhn", qh, self.k_proj.bias.view(h, d)).reshape(b, h * n, 1)
            scores = scores + (bias_scores - bias_scores.detach()) * d**-0.5
        weights = scores.softmax(dim=-1)
        mixed = (weights @ values).view(b, h, n, values.shape[-1])  # B x h x n x C
        wv = self.v_proj.weight.view(h, d, -1)
        out = torch.einsum("bhnc,hdc->bnhd", mixed, wv).reshape(b, n, h * d) + self.v_proj.bias
        return self.project(self.out_proj, out)

    def attend_few_keys(
        self,
        x: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        q_projected: bool,
        residual: torch.Tensor | None = None,
        overwrite: bool = False,
    ) -> torch.Tensor:
        """`forward` for many queries and few keys (image tokens attending to prompt tokens).

        x: BxNxC queries (1xNxC broadcasts), already projected if `q_projected`; k, v:
        projected BxMxC'. Each head's keys and values go into a block-diagonal matrix
        (C' x hM and hM x C'), so the per-head scores of all heads are one matmul, and
        the query and output projections fold into those small matrices: two matmuls
        of N x C x hM instead of N x C x C' projections plus a per-head attention with
        its transposes. The same result up to float rounding; cheaper while hM <= C'.
        `residual` (BxNxC or 1xNxC): returned plus the attention output, in one product;
        with `overwrite` the caller hands a BxNxC residual over and the sum is written into
        it (no 4 MB copy per prompt) where autograd does not need it.
        """
        b, m, c = k.shape
        h = self.num_heads
        d = c // h
        eye = torch.eye(h, dtype=k.dtype, device=k.device)
        # k_bd[b, h*d + j, g*m + i] = k[b, i, h*d + j] if h == g (scaled); v_bd likewise.
        k_bd = k.view(b, m, h, d).permute(0, 2, 3, 1)[:, :, :, None, :] * eye[:, None, :, None]
        k_bd = k_bd.reshape(b, c, h * m) * d**-0.5
        v_bd = v.view(b, m, h, d).permute(0, 2, 1, 3)[:, :, :, None, :] * eye[:, None, :, None]
        v_bd = v_bd.reshape(b, h * m, c)
        # Scores transposed, hM x N per prompt: the softmax over each head's M keys then
        # reduces across rows of N contiguous scores, which vectorises (over M contiguous
        # scores it ran 3x slower); the products take the transposed weights as they are.
        k_bd_t = k_bd.transpose(1, 2)
        if q_projected:
            scores = self._per_prompt(k_bd_t, x.transpose(1, 2), None)
        else:
            scores = self._per_prompt(k_bd_t @ self.q_proj.weight, x.transpose(1, 2), None)
            scores = scores + (self.q_proj.bias @ k_bd)[:, :, None]
        n = scores.shape[2]  # named, not -1: an empty batch (B = 0) goes through
        weights = _softmax_few(scores.view(b, h, m, n), dim=2).view(b, h * m, n).transpose(1, 2)
        values = v_bd @ self.out_proj.weight.t()
        if residual is None or torch.is_autocast_enabled(weights.device.type):
            # Under autocast the fused product would round the float32 residual to bf16.
            out = self._per_prompt(weights, values, self.out_proj.bias)
            return out if residual is None else residual + out
        # Each head's weights sum to 1, so the output bias rides in the values (bias / h on
        # every row) and the residual in the product's accumulator: one batched matmul
        # writes input + update, with no per-prompt outputs to stack and no separate add.
        values = (values + self.out_proj.bias / h).expand(weights.shape[0], -1, -1)
        owned = overwrite and residual.shape == (weights.shape[0], n, values.shape[-1])
        if owned and not needs_grad(residual, weights, values):
            return residual.baddbmm_(weights, values)
        return torch.baddbmm(residual, weights, values)

    def _per_prompt(self, x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """x[i] @ w[i] + bias[i] for each prompt i: x BxNxK, w BxKxM, bias BxM or M (None:
        no bias); a batch of 1 broadcasts on either side, as in the matmul. With the
        `onednn` flag where the kernel applies, one oneDNN `linear` per prompt (twice as
        fast as bmm for these narrow shapes here), or one for all if w is shared; else one
        batched matmul."""
        b = _batch(x, w)
        if not (self.onednn and b > 0 and onednn_applies(x, w)):
            out = x @ w
            return out if bias is None else out + (bias[:, None] if bias.ndim == 2 else bias)
        if w.shape[0] == 1 and (bias is None or bias.ndim == 1):
            # The same right-hand side for every prompt (the image's tokens): one product
            # with every prompt's rows stacked (1.6x faster than a loop of 8 here).
            n, k = x.shape[1], x.shape[2]
            out = linear(
                x.expand(b, -1, -1).reshape(b * n, k), w[0].t().contiguous(), bias, "none", onednn=True
            )
            return out.view(b, n, out.shape[-1])
        out = []
        for i in range(b):
            bias_i = None if bias is None else bias[min(i, len(bias) - 1)] if bias.ndim == 2 else bias
            w_i = w[min(i, w.shape[0] - 1)].t().contiguous()
            out.append(linear(x[min(i, x.shape[0] - 1)], w_i, bias_i, "none", onednn=True))
        return out[0][None] if b == 1 else torch.stack(out)


def _batch(a: torch.Tensor, b: torch.Tensor) -> int:
    """The batch size of a and b broadcast together (1 and 0 give 0, an empty batch)."""
    return torch.broadcast_shapes(a.shape[:1], b.shape[:1])[0]


def _softmax_few(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax over a short axis, by hand: PyTorch's CPU kernel is about 5x slower for
    rows of a few elements. In place unless autograd needs the intermediates."""
    e = x - x.amax(dim=dim, keepdim=True)
    if needs_grad(x):
        e = e.exp()
        return e / e.sum(dim=dim, keepdim=True)
    e = e.exp_()
    return e.div_(e.sum(dim=dim, keepdim=True))


class TwoWayAttentionBlock(nn.Module):
    """Token self-attention, token->image, MLP on tokens, image->token."""

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int = 2048,
        activation: type[nn.Module] = nn.ReLU,
        attention_downsample_rate: int = 2,
        skip_first_layer_pe: bool = False,
    ) -> None:
        super().__init__()
        self.self_attn = Attention(embedding_dim, num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm2 = nn.LayerNorm(embedding_dim)
        self.mlp = MLPBlock(embedding_dim, mlp_dim, activation)
        self.norm3 = nn.LayerNorm(embedding_dim)
        self.norm4 = nn.LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.skip_first_layer_pe = skip_first_layer_pe

    def project_image(self, keys: torch.Tensor, key_pe: torch.Tensor) -> ImageProjections:
        """The projections of this block that read only the image tokens."""
        k = keys + key_pe
        t2i, i2t = self.cross_attn_token_to_image, self.cross_attn_image_to_token
        return ImageProjections(
            t2i.project(t2i.k_proj, k), t2i.project(t2i.v_proj, keys), i2t.project(i2t.q_proj, k)
        )

    def forward(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        query_pe: torch.Tensor,
        key_pe: torch.Tensor,
        image_proj: ImageProjections | None = None,
        keys_owned: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """image_proj: `project_image(keys, key_pe)` computed earlier, when the keys are the
        same for many prompts (the first block, without a mask prompt). keys_owned: `keys`
        is this call's to overwrite (an earlier block's output, not the image's tokens)."""
        if self.skip_first_layer_pe:
            # The first layer replaces the tokens (no residual): they carry their own PE.
            queries = self.self_attn(q=queries, k=queries, v=queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q=q, k=q, v=queries)
        queries = self.norm1(queries)
        if self.cross_attention_watched():
            return self._cross_attend_as_upstream(queries, keys, query_pe, key_pe)

        t2i, i2t = self.cross_attn_token_to_image, self.cross_attn_image_to_token
        # With few prompt tokens, image tokens are not projected at all (see the two
        # `Attention` methods); else, or when cached for many prompts, they are.
        few = t2i.few(queries.shape[1]) and i2t.few(queries.shape[1])
        proj = image_proj if image_proj is not None or few else self.project_image(keys, key_pe)
        q = queries + query_pe
        keys_pe = keys + key_pe if proj is None else None  # once for both attentions
        if proj is None:
            update = t2i.attend_to_image(q, keys_pe, keys)
        else:
            update = t2i.attend(t2i.project(t2i.q_proj, q), proj.t2i_k, proj.t2i_v)
        queries = self.norm2(queries + update)
        queries = self.norm3(queries + self.mlp(queries))
        k, v = i2t.project(i2t.k_proj, queries + query_pe), i2t.project(i2t.v_proj, queries)
        if not few:
            keys = keys + i2t.attend(proj.i2t_q, k, v)
        elif proj is not None:
            keys = i2t.attend_few_keys(proj.i2t_q, k, v, q_projected=True, residual=keys)
        else:
            keys = i2t.attend_few_keys(keys_pe, k, v, q_projected=False, residual=keys, overwrite=keys_owned)
        return queries, self.norm4(keys)

    def cross_attention_watched(self) -> bool:
        """Hooks on a cross attention: it is called, as upstream calls it, not taken apart."""
        return hooked(self.cross_attn_token_to_image) or hooked(self.cross_attn_image_to_token)

    def _cross_attend_as_upstream(
        self, queries: torch.Tensor, keys: torch.Tensor, query_pe: torch.Tensor, key_pe: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The block after its self-attention, as segment-anything writes it."""
        k = keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(q=queries + query_pe, k=k, v=keys))
        queries = self.norm3(queries + self.mlp(queries))
        keys = keys + self.cross_attn_image_to_token(q=k, k=queries + query_pe, v=queries)
        return queries, self.norm4(keys)


class TwoWayTransformer(nn.Module):
    def __init__(
        self,
        depth: int = 2,
        embedding_dim: int = 256,
        num_heads: int = 8,
        mlp_dim: int = 2048,
        activation: type[nn.Module] = nn.ReLU,
        attention_downsample_rate: int = 2,
    ) -> None:
        super().__init__()
        self.depth = depth  # the sizes, as upstream keeps them
        self.embedding_dim = embedding_dim
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(
                embedding_dim, num_heads, mlp_dim, activation, attention_downsample_rate, i == 0
            )
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
        first = self.layers[0]
        proj = None if first.cross_attention_watched() else first.project_image(keys, key_pe)
        return ImageContext(keys, key_pe, proj, size)

    def forward(
        self,
        image_embedding: torch.Tensor,
        image_pe: torch.Tensor,
        point_embedding: torch.Tensor,
        context: ImageContext | None = None,
        tokens_out: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """image_embedding, image_pe: BxCxHxW (B or 1); point_embedding: BxNxC.

        With `context` (from `prepare`, reusable across prompts of one image) the image
        arguments are not read. Returns the processed tokens BxNxC and image tokens Bx(HW)xC;
        with `tokens_out` only the first tokens_out tokens (the last attention skips the rest).
        """
        if context is None:
            context = self.prepare(image_embedding, image_pe)
        keys, key_pe = context.keys, context.key_pe
        queries = point_embedding
        for i, layer in enumerate(self.layers):
            first = context.first if i == 0 else None
            queries, keys = layer(queries, keys, point_embedding, key_pe, first, keys_owned=i > 0)
        final = self.final_attn_token_to_image
        queries, point_embedding = queries[:, :tokens_out], point_embedding[:, :tokens_out]
        if final.few(queries.shape[1]):
            attn = final.attend_to_image(queries + point_embedding, keys + key_pe, keys)
        else:
            attn = final(q=queries + point_embedding, k=keys + key_pe, v=keys)
        return self.norm_final_attn(queries + attn), keys
