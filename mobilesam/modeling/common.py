"""Small building blocks shared by the encoders and the decoder.

Linear layers are plain `nn.Linear` (tools that match the type exactly, such as
`torch.ao.quantization.quantize_dynamic`, find them), `Conv2dBN` keeps TinyViT's keys.
`layer_act` computes a layer and the activation after it; with the `onednn` fast path
(see fast_paths.py) as one of oneDNN's kernels with the activation fused into the matmul
or convolution, the kernels PyTorch's own compiler emits on CPU: about twice as fast
here, the same results to float32 rounding. Where the kernels do not apply (autograd,
autocast, mixed dtypes, other devices, tracing) the plain path runs.
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


_BY_NAME = {"gelu": nn.GELU, "relu": nn.ReLU}


def activation_module(act: str | type[nn.Module]) -> nn.Module:
    """An instance of activation class `act`, as upstream's constructors make them (any
    class), or of nn.GELU / nn.ReLU given by name."""
    if isinstance(act, str):
        if act not in _BY_NAME:
            raise ValueError(f"unknown activation {act!r}: give a class (nn.SiLU, ...) or 'gelu' / 'relu'")
        act = _BY_NAME[act]
    return act()


def fused_activation(act: nn.Module) -> str | None:
    """The name the fused kernels take ("gelu", "relu") for activation module `act` when they
    compute exactly what it computes: nn.GELU (exact, not its tanh approximation) or
    nn.ReLU, without hooks. None for any other module, which is then called."""
    if unmodified(act, nn.GELU) and act.approximate == "none":
        return "gelu"
    return "relu" if unmodified(act, nn.ReLU) else None


class MLPBlock(nn.Module):
    """Linear -> activation -> Linear (keys `lin1`, `lin2`); `self.act` is an instance of the
    activation class given, as upstream's (or of nn.GELU / nn.ReLU given by name)."""

    FAST_PATHS = ("onednn",)

    def __init__(self, embedding_dim: int, mlp_dim: int, act: str | type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.lin1 = nn.Linear(embedding_dim, mlp_dim)
        self.lin2 = nn.Linear(mlp_dim, embedding_dim)
        self.act = activation_module(act)
        self.onednn = fast_paths.default("onednn")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return layer_act(self.lin2, layer_act(self.lin1, x, self.act, self.onednn), onednn=self.onednn)


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


def layer_act(
    layer: nn.Module, x: torch.Tensor, act: nn.Module | str = "none", onednn: bool = False
) -> torch.Tensor:
    """act(layer(x)) for a linear layer or a `Conv2dBN`. Where the layer is unmodified (an
    nn.Linear or our Conv2dBN, no wrapper, no hooks) and the activation one the kernels
    compute (`fused_activation`), one computation from the layer's weights, with `onednn`
    (a linear's; a Conv2dBN has its own flag) oneDNN's fused kernel where it applies.
    Otherwise the layer and then the activation are called: an adapter's update (a LoRA
    layer adds it to the layer's output) comes before the activation, a quantised layer
    runs its own kernel, hooks see each module's own output. `act` is a name ("relu",
    "none") where upstream applies a function, not a module."""
    name = act if isinstance(act, str) else fused_activation(act)
    if name is not None:
        if unmodified(layer, nn.Linear):
            return linear(x, layer.weight, layer.bias, name, onednn)
        if unmodified(layer, Conv2dBN):
            return layer(x, name)
    y = layer(x)
    return activate(y, act) if isinstance(act, str) else act(y)
