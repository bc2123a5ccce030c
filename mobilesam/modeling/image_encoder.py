"""SAM's ViT image encoder (ViT-B/L/H), the teachers of MobileSAM.

Windowed attention with decomposed relative positions in most blocks, global
attention in a few; parameter names follow `segment_anything/modeling/image_encoder.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from . import fast_paths
from .common import LayerNorm2d, MLPBlock, layer_act
from .fast_paths import flex_attention_applies, tracing

try:
    from torch.nn.attention.flex_attention import flex_attention as flex_attention_op
except ImportError:  # torch before 2.5: the reference path only
    flex_attention_op = None


def get_rel_pos(q_size: int, k_size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """Relative-position embeddings of one axis for every (query, key) pair: q x k x C.
    A table of another length (a checkpoint trained at another resolution) is resampled
    linearly; a query axis shorter than the key axis is stretched onto it (segment-anything's
    helper of the same name and semantics)."""
    length = 2 * max(q_size, k_size) - 1
    if rel_pos.shape[0] != length:
        rel_pos = F.interpolate(rel_pos.T[None], size=length, mode="linear")[0].T
    q_scale, k_scale = max(k_size / q_size, 1.0), max(q_size / k_size, 1.0)
    q = torch.arange(q_size, device=rel_pos.device)[:, None] * q_scale
    k = torch.arange(k_size, device=rel_pos.device)[None, :] * k_scale
    return rel_pos[(q - k + (k_size - 1) * k_scale).long()]


def _rel_pos_terms(
    q: torch.Tensor,
    rel_pos_h: torch.Tensor,
    rel_pos_w: torch.Tensor,
    q_size: tuple[int, int],
    k_size: tuple[int, int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """The decomposed relative-position terms of (unscaled) queries q: ... x (qh*qw) x C
    -> ... x qh x qw x kh and ... x qh x qw x kw."""
    (qh, qw), (kh, kw) = q_size, k_size
    rq = q.reshape(*q.shape[:-2], qh, qw, q.shape[-1])
    rel_h = torch.einsum("...hwc,hkc->...hwk", rq, get_rel_pos(qh, kh, rel_pos_h))
    rel_w = torch.einsum("...hwc,wkc->...hwk", rq, get_rel_pos(qw, kw, rel_pos_w))
    return rel_h, rel_w


def add_decomposed_rel_pos(
    attn: torch.Tensor,
    q: torch.Tensor,
    rel_pos_h: torch.Tensor,
    rel_pos_w: torch.Tensor,
    q_size: tuple[int, int],
    k_size: tuple[int, int],
) -> torch.Tensor:
    """segment-anything's helper for code that writes its own attention: attention logits
    B x (qh*qw) x (kh*kw) plus the decomposed relative-position terms of the (unscaled)
    queries q: B x (qh*qw) x C."""
    (qh, qw), (kh, kw) = q_size, k_size
    rel_h, rel_w = _rel_pos_terms(q, rel_pos_h, rel_pos_w, q_size, k_size)
    attn = attn.view(-1, qh, qw, kh, kw) + rel_h[..., :, None] + rel_w[..., None, :]
    return attn.view(-1, qh * qw, kh * kw)


def window_partition(x: torch.Tensor, window_size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """BxHxWxC -> (B*windows) x ws x ws x C, zero-padded to whole windows, and the padded
    (Hp, Wp) (segment-anything's helper of the same name)."""
    b, h, w, c = x.shape
    ws = window_size
    ph, pw = (ws - h % ws) % ws, (ws - w % ws) % ws
    if ph or pw:
        x = F.pad(x, (0, 0, 0, pw, 0, ph))
    hp, wp = h + ph, w + pw
    return x.reshape(b, hp // ws, ws, wp // ws, ws, c).transpose(2, 3).reshape(-1, ws, ws, c), (hp, wp)


def window_unpartition(
    windows: torch.Tensor, window_size: int, pad_hw: tuple[int, int], hw: tuple[int, int]
) -> torch.Tensor:
    """The inverse of `window_partition`: BxHxWxC without the padding."""
    (hp, wp), (h, w), ws = pad_hw, hw, window_size
    b = windows.shape[0] // ((hp // ws) * (wp // ws))
    x = windows.reshape(b, hp // ws, wp // ws, ws, ws, -1).transpose(2, 3).reshape(b, hp, wp, -1)
    return x[:, :h, :w]


def _flex_rel_pos_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rel_h: torch.Tensor, rel_w: torch.Tensor
) -> torch.Tensor:
    """What `scaled_dot_product_attention(q, k, v, attn_mask=rel_h + rel_w)` computes, with
    each score's two relative-position terms looked up inside FlexAttention's kernel instead
    of read from a materialised mask. q, k, v: B x heads x (h*w) x C; rel_h, rel_w:
    B x heads x h x w x kh and ... x kw (`_rel_pos_terms`) for a kh x kw key grid."""
    b, heads, n = q.shape[:3]
    kw = rel_w.shape[-1]
    rel_h, rel_w = rel_h.reshape(b, heads, n, -1), rel_w.reshape(b, heads, n, kw)

    def score_mod(score, bi, hi, qi, ki):  # key ki sits at row ki // kw, column ki % kw
        return score + rel_h[bi, hi, qi, ki // kw] + rel_w[bi, hi, qi, ki % kw]

    return flex_attention_op(q, k, v, score_mod=score_mod)


class Attention(nn.Module):
    """Multi-head attention, with decomposed relative positions when `use_rel_pos` (every
    published SAM checkpoint has the tables). Upstream's constructor, defaults included;
    `rel_pos_zero_init` is accepted and, as upstream, unused (the tables start at zero).
    Fast paths (fast_paths.py): `flex_attention`, under torch.compile only; the reference
    path passes the relative-position terms to SDPA as a materialised mask. `onednn`: the
    projections."""

    FAST_PATHS = ("flex_attention", "onednn")

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = True,
        use_rel_pos: bool = False,
        rel_pos_zero_init: bool = True,
        input_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.flex_attention = fast_paths.default("flex_attention")
        self.onednn = fast_paths.default("onednn")
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim**-0.5  # upstream's attributes (SDPA applies the same scale)
        self.use_rel_pos = use_rel_pos
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        if use_rel_pos:
            if input_size is None:
                raise ValueError("relative positions (use_rel_pos) need the input_size of their tables")
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size[0] - 1, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size[1] - 1, head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: BxHxWxC -> BxHxWxC."""
        b, h, w, _ = x.shape
        qkv = (
            layer_act(self.qkv, x, onednn=self.onednn)
            .reshape(b, h * w, 3, self.num_heads, -1)
            .permute(2, 0, 3, 1, 4)
        )
        q, k, v = qkv.unbind(0)  # each B x heads x HW x head_dim
        if not self.use_rel_pos:
            return self._project(F.scaled_dot_product_attention(q, k, v), x.shape)
        # The decomposed relative-position terms of the unscaled query.
        rel_h, rel_w = _rel_pos_terms(q, self.rel_pos_h, self.rel_pos_w, (h, w), (h, w))
        if (
            self.flex_attention
            and flex_attention_op is not None
            and flex_attention_applies(x, q)  # q has the projection's device and autograd state
        ):
            out = _flex_rel_pos_attention(q, k, v, rel_h, rel_w)
        else:  # as SDPA's mask
            bias = (rel_h[..., :, None] + rel_w[..., None, :]).reshape(b, self.num_heads, h * w, h * w)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self._project(out, x.shape)

    def _project(self, out: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        """The heads' outputs B x heads x HW x head_dim -> BxHxWxC, projected."""
        b, h, w, c = shape
        out = out.transpose(1, 2)
        if tracing():
            # Traced, SDPA's output looks laid out so that this is a view, but the exporter
            # decomposes SDPA into ops that lay it out otherwise and the view then fails
            # (ONNX export of vit_b/l/h): a real copy. Eager keeps the free view.
            out = out.clone(memory_format=torch.contiguous_format)
        out = out.reshape(b, h, w, c)
        return layer_act(self.proj, out, onednn=self.onednn)


class Block(nn.Module):
    """Pre-norm attention (windowed, or global when `window_size` is 0) and MLP, with
    residuals. Upstream's constructor, defaults included."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
        act_layer: type[nn.Module] = nn.GELU,
        use_rel_pos: bool = False,
        rel_pos_zero_init: bool = True,
        window_size: int = 0,
        input_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.norm1 = norm_layer(dim)
        attn_size = input_size if window_size == 0 else (window_size, window_size)
        self.attn = Attention(dim, num_heads, qkv_bias, use_rel_pos, rel_pos_zero_init, attn_size)
        self.norm2 = norm_layer(dim)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio), act_layer)
        self.window = window_size

    @property
    def window_size(self) -> int:
        """Upstream's name for `window` (0: global attention)."""
        return self.window

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        if self.window:
            windows, padded = window_partition(y, self.window)
            y = window_unpartition(self.attn(windows), self.window, padded, y.shape[1:3])
        else:
            y = self.attn(y)
        x = x + y
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


SAM_LAYER_NORM = partial(nn.LayerNorm, eps=1e-6)  # what every SAM ViT is built with


class ImageEncoderViT(nn.Module):
    """Bx3xSxS normalised, padded image -> Bx256x(S/16)x(S/16) embedding.

    Upstream's constructor: its arguments, in its order, with its meanings (segment-
    anything's `_build_sam` runs unchanged). The defaults build SAM ViT-B's encoder, as
    `TinyViT()` builds MobileSAM's: upstream's (no relative positions, global attention
    everywhere, LayerNorm eps 1e-5) describe no published model. `act_layer`: any
    activation class (GELU and ReLU run fused into the MLP's first layer).
    """

    def __init__(
        self,
        img_size: int = 1024,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        out_chans: int = 256,
        qkv_bias: bool = True,
        norm_layer: Callable[[int], nn.Module] = SAM_LAYER_NORM,
        act_layer: type[nn.Module] = nn.GELU,
        use_abs_pos: bool = True,
        use_rel_pos: bool = True,
        rel_pos_zero_init: bool = True,
        window_size: int = 14,
        global_attn_indexes: Sequence[int] = (2, 5, 8, 11),
    ) -> None:
        super().__init__()
        self.img_size = img_size
        grid = img_size // patch_size
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, embed_dim)) if use_abs_pos else None
        self.blocks = nn.ModuleList(
            Block(
                embed_dim,
                num_heads,
                mlp_ratio,
                qkv_bias,
                norm_layer,
                act_layer,
                use_rel_pos,
                rel_pos_zero_init,
                0 if i in global_attn_indexes else window_size,
                (grid, grid),
            )
            for i in range(depth)
        )
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dim, out_chans, 1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, 3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        if self.pos_embed is not None:
            x = x + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return self.neck(x.permute(0, 3, 1, 2))
