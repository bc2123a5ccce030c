"""TinyViT, MobileSAM's image encoder (TinyViT-5M with SAM's 256-channel neck).

Module and parameter names follow the official `tiny_vit_sam.py` so that
`mobile_sam.pt` loads key for key. Tokens travel as BxLxC between stages, as in the
original; the first stage is convolutional (MBConv) and works on BxCxHxW.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from . import fast_paths
from .common import Conv2dBN, LayerNorm2d, layer_act
from .fast_paths import hooked


class PatchEmbed(nn.Module):
    """Two stride-2 3x3 convolutions: Bx3xHxW -> BxCx(H/4)x(W/4)."""

    def __init__(self, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(
            Conv2dBN(in_chans, embed_dim // 2, 3, 2, 1),
            nn.GELU(),
            Conv2dBN(embed_dim // 2, embed_dim, 3, 2, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hooked(self.seq):  # hooks see the call of `seq` that upstream makes
            return self.seq(x)
        return self.seq[2](layer_act(self.seq[0], x, self.seq[1]))


class DropPath(nn.Module):
    """Stochastic depth (timm's `DropPath`, which TinyViT uses): in training, a residual
    branch is zeroed for each sample with probability `drop_prob` and the kept ones are
    scaled by 1 / (1 - drop_prob); in eval mode, the identity."""

    def __init__(self, drop_prob: float) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_prob == 0.0:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * (mask / keep if keep > 0.0 else mask)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


def _drop_path(p: float) -> nn.Module:
    return DropPath(p) if p > 0.0 else nn.Identity()


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expand, 3x3 depthwise, 1x1 project, residual."""

    def __init__(self, dim: int, expand_ratio: float, drop_path: float = 0.0) -> None:
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.conv1 = Conv2dBN(dim, hidden)
        self.act1 = nn.GELU()
        self.conv2 = Conv2dBN(hidden, hidden, 3, 1, 1, groups=hidden)
        self.act2 = nn.GELU()
        self.conv3 = Conv2dBN(hidden, dim)
        nn.init.zeros_(self.conv3.bn.weight)  # as TinyViT: a new block starts as the identity
        self.act3 = nn.GELU()
        self.drop_path = _drop_path(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = layer_act(self.conv2, layer_act(self.conv1, x, self.act1), self.act2)
        return self.act3(self.drop_path(self.conv3(y)) + x)


class PatchMerging(nn.Module):
    """Stage transition: BxCxHxW or BxLxC in, BxL'xC' tokens out."""

    def __init__(self, resolution: int, dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.resolution = resolution
        self.conv1 = Conv2dBN(dim, out_dim)
        self.act = nn.GELU()
        self.conv2 = Conv2dBN(out_dim, out_dim, 3, stride, 1, groups=out_dim)
        self.conv3 = Conv2dBN(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:
            b, _, c = x.shape
            x = x.transpose(1, 2).reshape(b, c, self.resolution, self.resolution)
        x = self.conv3(layer_act(self.conv2, layer_act(self.conv1, x, self.act), self.act))
        return x.flatten(2).transpose(1, 2)


class _Stage(nn.Module):
    """Blocks, then the transition to the next stage; with `use_checkpoint`, each block's
    activations are recomputed in the backward pass instead of kept (when training)."""

    def __init__(self, blocks: list[nn.Module], downsample: nn.Module | None, use_checkpoint: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample
        self.use_checkpoint = use_checkpoint

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            if self.use_checkpoint and torch.is_grad_enabled():
                # The RNG state is restored for the recomputation: drop paths draw the same masks.
                x = checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
        return x if self.downsample is None else self.downsample(x)


class ConvLayer(_Stage):
    """The convolutional first stage (MBConv blocks)."""


class Mlp(nn.Module):
    """LayerNorm -> fc1 -> GELU -> dropout -> fc2 -> dropout (TinyViT puts the norm inside
    the MLP)."""

    FAST_PATHS = ("onednn",)

    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.act = nn.GELU()
        self.drop = nn.Dropout(drop) if drop > 0.0 else nn.Identity()
        self.onednn = fast_paths.default("onednn")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.drop(layer_act(self.fc1, self.norm(x), self.act, self.onednn))
        return self.drop(layer_act(self.fc2, hidden, onednn=self.onednn))


def _relative_offset_index(window: int) -> tuple[torch.Tensor, int]:
    """Index of each (query, key) pair's |dy|, |dx| offset in first-seen order (WxW, WxW)."""
    points = list(itertools.product(range(window), range(window)))
    offsets: dict[tuple[int, int], int] = {}
    idxs = []
    for p1 in points:
        for p2 in points:
            off = (abs(p1[0] - p2[0]), abs(p1[1] - p2[1]))
            idxs.append(offsets.setdefault(off, len(offsets)))
    n = len(points)
    return torch.tensor(idxs, dtype=torch.long).view(n, n), len(offsets)


class Attention(nn.Module):
    """Multi-head self-attention with a learned bias per relative offset inside a window."""

    FAST_PATHS = ("onednn",)  # the projections'

    def __init__(self, dim: int, num_heads: int, window: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = dim // num_heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.onednn = fast_paths.default("onednn")
        idxs, n_offsets = _relative_offset_index(window)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, n_offsets))
        self.register_buffer("attention_bias_idxs", idxs, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: BxNxC tokens of B windows -> BxNxC."""
        b, n, _ = x.shape
        qkv = layer_act(self.qkv, self.norm(x), onednn=self.onednn)
        # The official layout interleaves per head: [q | k | v] for head 0, then head 1, ...
        q, k, v = qkv.view(b, n, self.num_heads, 3, self.key_dim).permute(3, 0, 2, 1, 4)
        # Plain matmul-softmax-matmul: with a float bias on these small windows it is about
        # twice as fast on CPU as scaled_dot_product_attention's masked path.
        attn = torch.matmul(q * self.key_dim**-0.5, k.transpose(-2, -1))
        attn = attn + self.attention_biases[:, self.attention_bias_idxs].to(x.dtype)
        out = torch.matmul(attn.softmax(dim=-1), v)
        return layer_act(self.proj, out.transpose(1, 2).reshape(b, n, -1), onednn=self.onednn)


class TinyViTBlock(nn.Module):
    """Window attention + depthwise 3x3 conv + MLP, on BxLxC tokens of a square grid."""

    def __init__(
        self,
        dim: int,
        resolution: int,
        num_heads: int,
        window: int,
        mlp_ratio: float,
        drop: float = 0.0,
        drop_path: float = 0.0,
        local_conv_size: int = 3,
    ) -> None:
        super().__init__()
        self.resolution = resolution
        self.window = window
        self.attn = Attention(dim, num_heads, window)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)
        self.local_conv = Conv2dBN(dim, dim, local_conv_size, 1, local_conv_size // 2, groups=dim)
        self.drop_path = _drop_path(drop_path)

    def _window_attention(self, x: torch.Tensor) -> torch.Tensor:
        b, _, c = x.shape
        h = w = self.resolution
        ws = self.window
        if h == ws:
            return self.attn(x)
        x = x.view(b, h, w, c)
        pad = (ws - h % ws) % ws
        if pad:
            # Zero tokens join the attention as keys, exactly as in the original.
            x = F.pad(x, (0, 0, 0, pad, 0, pad))
        hp = h + pad
        n = hp // ws
        x = x.view(b, n, ws, n, ws, c).transpose(2, 3).reshape(b * n * n, ws * ws, c)
        x = self.attn(x)
        x = x.view(b, n, n, ws, ws, c).transpose(2, 3).reshape(b, hp, hp, c)
        if pad:
            x = x[:, :h, :w]
        return x.reshape(b, h * w, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        x = x + self.drop_path(self._window_attention(x))
        r = self.resolution
        x = self.local_conv(x.transpose(1, 2).reshape(b, c, r, r))
        x = x.view(b, c, n).transpose(1, 2)
        return x + self.drop_path(self.mlp(x))


class BasicLayer(_Stage):
    """An attention stage (TinyViT blocks)."""


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


class TinyViT(nn.Module):
    """Bx3xSxS normalised, padded image -> Bx256x(S/16)x(S/16) embedding.

    The last stage transition keeps the resolution (stride 1), so the output grid is
    S/16 like SAM's ViT; the classification head (`norm_head`, `head`) is unused but
    kept because the official checkpoint carries it.

    The official constructor's arguments, in its order and with its meanings, so that
    MobileSAM's `build_sam_vit_t` and the code that copies it run unchanged: `drop_rate`
    (dropout in the MLPs), `drop_path_rate` (stochastic depth, rising linearly over the
    blocks to this rate), `use_checkpoint` (activation checkpointing per block),
    `local_conv_size`, `layer_lr_decay` (each parameter's `lr_scale` attribute, for
    optimisers that read it, as TinyViT's training code does). The defaults are the
    values `build_sam_vit_t` passes: the class's own (224 px, TinyViT-21M's widths, a
    stage transition of stride 2 at 768 channels) build nothing MobileSAM can run. The
    weights start as TinyViT's: truncated-normal linear weights (std 0.02), zero biases, the
    last batch norm of each MBConv at zero.
    """

    def __init__(
        self,
        img_size: int = 1024,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dims: Sequence[int] = (64, 128, 160, 320),
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (2, 4, 5, 10),
        window_sizes: Sequence[int] = (7, 7, 14, 7),
        mlp_ratio: float = 4.0,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        use_checkpoint: bool = False,
        mbconv_expand_ratio: float = 4.0,
        local_conv_size: int = 3,
        layer_lr_decay: float = 0.8,
        *,
        out_chans: int = 256,
    ) -> None:
        super().__init__()
        if img_size % 16:
            raise ValueError(f"img_size must be a multiple of 16, got {img_size}")
        self.img_size = img_size
        # TinyViT's attributes that clients read (the official class has them).
        self.num_classes, self.mlp_ratio = num_classes, mlp_ratio
        self.depths, self.num_layers = list(depths), len(depths)
        self.patches_resolution = (img_size // 4, img_size // 4)
        self.patch_embed = PatchEmbed(in_chans, embed_dims[0])
        self.layers = nn.ModuleList()
        total = sum(depths)  # the drop-path rate rises linearly from 0 at the first block
        drop_paths = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        n = len(embed_dims)
        res = img_size // 4
        for i in range(n):
            last = i == n - 1
            stride = 1 if i == n - 2 else 2
            downsample = None if last else PatchMerging(res, embed_dims[i], embed_dims[i + 1], stride)
            dpr = drop_paths[sum(depths[:i]) : sum(depths[: i + 1])]
            if i == 0:
                blocks = [MBConv(embed_dims[0], mbconv_expand_ratio, p) for p in dpr]
                layer = ConvLayer(blocks, downsample, use_checkpoint)
            else:
                blocks = [
                    TinyViTBlock(
                        embed_dims[i],
                        res,
                        num_heads[i],
                        window_sizes[i],
                        mlp_ratio,
                        drop_rate,
                        p,
                        local_conv_size,
                    )
                    for p in dpr
                ]
                layer = BasicLayer(blocks, downsample, use_checkpoint)
            self.layers.append(layer)
            if not last:
                res //= stride
        self.grid = res
        self.norm_head = nn.LayerNorm(embed_dims[-1])
        self.head = nn.Linear(embed_dims[-1], num_classes) if num_classes > 0 else nn.Identity()
        self.apply(_init_weights)
        self._set_layer_lr_decay(layer_lr_decay)
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dims[-1], out_chans, 1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, 3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def _set_layer_lr_decay(self, decay: float) -> None:
        """`lr_scale` = decay ** (blocks after this one): the stem as the first block, a
        stage transition as the block before it, the head as the last; not the neck."""
        depth = sum(self.depths)
        scales = [decay ** (depth - 1 - i) for i in range(depth)]

        def set_scale(module: nn.Module, scale: float) -> None:
            for p in module.parameters():
                p.lr_scale = scale

        set_scale(self.patch_embed, scales[0])
        i = 0
        for layer in self.layers:
            for block in layer.blocks:
                set_scale(block, scales[i])
                i += 1
            if layer.downsample is not None:
                set_scale(layer.downsample, scales[i - 1])
        set_scale(self.norm_head, scales[-1])
        set_scale(self.head, scales[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Channels-last makes the convolutional stages (depthwise convs above all) several
        # times faster on CPU, and token <-> feature-map reshapes between stages free views.
        x = self.patch_embed(x.contiguous(memory_format=torch.channels_last))
        for layer in self.layers:
            x = layer(x)
        b, _, c = x.shape
        x = x.transpose(1, 2).reshape(b, c, self.grid, self.grid)
        return self.neck(x).contiguous()
