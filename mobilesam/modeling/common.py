"""Small building blocks shared by the encoders and the decoder.

`Linear` and `Conv2dBN` keep PyTorch's parameters and state-dict names. With their
`onednn` fast path (see fast_paths.py) they run oneDNN's kernels with the activation
fused into the matmul or convolution, the kernels PyTorch's own compiler emits on CPU:
about twice as fast here, the same results to float32 rounding. Where the kernels do not
apply (autograd, autocast, mixed dtypes, other devices, tracing) the plain path runs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import fast_paths
from .fast_paths import onednn_applies, unmodified

_ALGORITHM = {"none": "", "relu": "", "gelu": "none"}  # oneDNN's name for exact (erf) GELU


def activate(y: torch.Tensor, act: str) -> torch.Tensor:
    return F.gelu(y) if act == "gelu" else F.relu(y) if act == "relu" else y


def linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    act: str = "none",
    onednn: bool = False,
) -> torch.Tensor:
    """act(x @ weight.T + bias) with act in "none", "relu", "gelu" (exact); with `onednn`,
    one fused oneDNN kernel where it applies."""
    if onednn and onednn_applies(x, weight):
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, act, [], _ALGORITHM[act])
    return activate(F.linear(x, weight, bias), act)


class Linear(nn.Linear):
    """nn.Linear with an optional fused activation and the `onednn` fast path."""

    FAST_PATHS = ("onednn",)

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias)
        self.onednn = fast_paths.default("onednn")

    def forward(self, x: torch.Tensor, act: str = "none") -> torch.Tensor:
        return linear(x, self.weight, self.bias, act, self.onednn)


def linear_act(layer: nn.Module, x: torch.Tensor, act: str) -> torch.Tensor:
    """act(layer(x)), fused into the layer where it is our `Linear`; a layer an adapter
    wraps or replaces (a LoRA layer adds its update to the layer's output) is called as it
    is, and the activation comes after its update."""
    if unmodified(layer, Linear):
        return layer(x, act)
    return activate(layer(x), act)


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of a BxCxHxW tensor (SAM's, eps=1e-6)."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) * torch.rsqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


_ACTIVATION_NAMES = {nn.GELU: "gelu", nn.ReLU: "relu"}


def activation_name(act: str | type[nn.Module], allowed: tuple[str, ...] = ("gelu", "relu")) -> str:
    """The name our kernels take ("gelu", "relu") for an activation given as upstream's
    constructors take it (the class, `nn.GELU`) or by name. Upstream accepts any class;
    every published checkpoint uses GELU and ReLU where their defaults say, and others
    are refused rather than computed as something else."""
    name = act if isinstance(act, str) else _ACTIVATION_NAMES.get(act)
    if name not in allowed:
        classes = {n: cls.__name__ for cls, n in _ACTIVATION_NAMES.items()}
        choices = " or ".join(f"nn.{classes[n]}" for n in allowed)
        raise ValueError(f"activation {act!r} is not supported here; mobilesam computes {choices} (exact)")
    return name


class MLPBlock(nn.Module):
    """Linear -> activation -> Linear (keys `lin1`, `lin2`); `act` as upstream's (`nn.GELU`,
    `nn.ReLU`) or its name; `self.act` is the name."""

    def __init__(self, embedding_dim: int, mlp_dim: int, act: str | type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.lin1 = Linear(embedding_dim, mlp_dim)
        self.lin2 = Linear(mlp_dim, embedding_dim)
        self.act = activation_name(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(linear_act(self.lin1, x, self.act))


class Conv2dBN(nn.Sequential):
    """Conv2d without bias followed by BatchNorm2d (TinyViT's `Conv2d_BN`, keys `c`, `bn`).

    In eval mode the batch norm is folded into the convolution on the fly: one
    convolution with a bias instead of a convolution plus a normalisation pass over
    the activations. The parameters stay as they are, so the state dict keeps the
    official layout and training mode is unchanged.
    """

    FAST_PATHS = ("onednn",)

    def __init__(
        self, in_ch: int, out_ch: int, kernel: int = 1, stride: int = 1, pad: int = 0, groups: int = 1
    ) -> None:
        super().__init__()
        self.add_module("c", nn.Conv2d(in_ch, out_ch, kernel, stride, pad, groups=groups, bias=False))
        self.add_module("bn", nn.BatchNorm2d(out_ch))
        self.onednn = fast_paths.default("onednn")

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Weight and bias of the single convolution equal to conv followed by eval-mode BN."""
        bn, dtype = self.bn, self.c.weight.dtype
        # In float32 even for a bfloat16 model, then cast once.
        scale = bn.weight.float() * torch.rsqrt(bn.running_var.float() + bn.eps)
        weight = self.c.weight.float() * scale[:, None, None, None]
        bias = bn.bias.float() - bn.running_mean.float() * scale
        return weight.to(dtype), bias.to(dtype)

    def forward(self, x: torch.Tensor, act: str = "none") -> torch.Tensor:
        """act(BN(conv(x))) with act in "none", "relu", "gelu" (exact)."""
        if self.training or not (unmodified(self.c, nn.Conv2d) and unmodified(self.bn, nn.BatchNorm2d)):
            return activate(self.bn(self.c(x)), act)
        weight, bias = self.folded()
        c = self.c
        if self.onednn and onednn_applies(x, weight):
            return torch.ops.mkldnn._convolution_pointwise(
                x, weight, bias, c.padding, c.stride, c.dilation, c.groups, act, [], _ALGORITHM[act]
            )
        return activate(F.conv2d(x, weight, bias, c.stride, c.padding, c.dilation, c.groups), act)
