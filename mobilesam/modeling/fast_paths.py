"""Optional fast kernels, each one explicit flag with a plain PyTorch reference path.

Families (the flag is an attribute of every module that has the fast path):
- `onednn`: oneDNN's fused linear / convolution + activation kernels (CPU inference);
- `few_token`: the decoder's attention shortcuts for few prompt tokens, which never
  project the 4096 image tokens (see `transformer.Attention`);
- `flex_attention`: SAM ViT attention (the teachers) through FlexAttention when
  `torch.compile` runs it, the decomposed relative-position terms added inside the fused
  kernel instead of a materialised B x heads x N x N bias (`image_encoder.Attention`).
  Off by default: unmeasured on a GPU yet, and slower than the bias on CPUs.

A module reads its flags once, when it is built, from `default(name)`: a Python override
(`set_defaults`), else the environment (`MOBILESAM_ONEDNN=0`, `MOBILESAM_FEW_TOKEN=0`,
`MOBILESAM_FLEX_ATTENTION=1`), else the family's default (`DEFAULTS`).
`configure(model, ...)` changes them on a built model. Where a fast path runs, it checks
its preconditions for that call (device, dtype of input *and* weight, autocast,
autograd, tracing) and falls back to the reference path when one fails, so a
flag that is on never changes what runs where the kernel does not apply. Export turns
every flag off; training gets the reference path from the autograd precondition, but for
`few_token`, which is differentiable and gives the reference path's gradients. A fast path
that reads a layer's weights instead of calling the layer (the activation fused into a
linear, the few-token attention, the decoder's upscaling as matmuls, batch norm folded
into its convolution) applies only while the layer is unmodified (`unmodified`): an
adapter that wraps or replaces it (a LoRA layer), or a layer with hooks, is called, as
upstream's code would. Activations are modules under upstream's names (`act`, `act1`, ...):
fused only while one is an exact nn.GELU or nn.ReLU without hooks, called otherwise.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.modules import module as _module

from ..errors import MobileSAMError

ENV = {
    "onednn": "MOBILESAM_ONEDNN",
    "few_token": "MOBILESAM_FEW_TOKEN",
    "flex_attention": "MOBILESAM_FLEX_ATTENTION",
}
DEFAULTS = {"onednn": True, "few_token": True, "flex_attention": False}
_overrides: dict[str, bool] = {}


def _check_names(names: object) -> None:
    unknown = sorted(set(names) - set(ENV))
    if unknown:
        raise MobileSAMError(f"unknown fast path {unknown}; known: {sorted(ENV)}")


def default(name: str) -> bool:
    """Whether modules built now get fast path `name`: override, else environment, else
    the family's default."""
    _check_names([name])
    if name in _overrides:
        return _overrides[name]
    value = os.environ.get(ENV[name], "").strip().lower()
    if not value:
        return DEFAULTS[name]
    if value in ("1", "true", "on", "yes"):
        return True
    if value in ("0", "false", "off", "no"):
        return False
    raise MobileSAMError(f"{ENV[name]}={value!r}: use 1 or 0")


def set_defaults(**flags: bool | None) -> None:
    """Python override of the defaults for modules built afterwards (None: back to the
    environment / built-in default). Example: `set_defaults(onednn=False)`."""
    _check_names(flags)
    for name, value in flags.items():
        if value is None:
            _overrides.pop(name, None)
        else:
            _overrides[name] = bool(value)


def configure(model: nn.Module, on: bool | None = None, **flags: bool) -> nn.Module:
    """Set fast-path flags on every sub-module of a built model that has them.
    `on=False` turns every family off (the reference path), `on=True` on; named flags
    win over `on`. Returns the model."""
    _check_names(flags)
    wanted = {name: on for name in ENV} if on is not None else {}
    wanted.update(flags)
    for module in model.modules():
        for name, value in wanted.items():
            if name in getattr(module, "FAST_PATHS", ()):
                setattr(module, name, bool(value))
    return model


@contextlib.contextmanager
def configured(model: nn.Module, on: bool | None = None, **flags: bool) -> Iterator[nn.Module]:
    """`configure` for the duration of a `with` block; the flags go back as they were."""
    saved = [(m, name, getattr(m, name)) for m in model.modules() for name in getattr(m, "FAST_PATHS", ())]
    try:
        yield configure(model, on, **flags)
    finally:
        for module, name, value in saved:
            setattr(module, name, value)


def state(model: nn.Module) -> dict[str, bool]:
    """Each family -> whether every module that has it has it on (False if none has it)."""
    out = {}
    for name in ENV:
        values = [getattr(m, name) for m in model.modules() if name in getattr(m, "FAST_PATHS", ())]
        out[name] = bool(values) and all(values)
    return out


@functools.cache
def onednn_available() -> bool:
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        return bool(torch.ops.mkldnn._linear_pointwise and torch.ops.mkldnn._convolution_pointwise)
    except (AttributeError, RuntimeError):
        return False


def _exporting() -> bool:
    """torch.export, TorchScript tracing or ONNX export is running."""
    exporting = getattr(torch.compiler, "is_exporting", lambda: False)()
    return exporting or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


def tracing() -> bool:
    """torch.compile, torch.export, TorchScript tracing or ONNX export is running: shapes are
    symbolic and custom kernels have no lowering there."""
    return torch.compiler.is_compiling() or _exporting()


def unmodified(module: nn.Module, cls: type[nn.Module]) -> bool:
    """`module` computes what `cls` computes (its forward is `cls`'s, not replaced on the
    instance), with plain tensors for parameters, and nothing watches its calls: a fast
    path may read its weights instead of calling it, or fuse the next operation into it. A
    wrapper or replacement with its own forward (PEFT's and loralib's LoRA layers, torch.ao's
    quantised layers, accelerate's hooks, a monkeypatched `forward`) must be called; so
    must a layer whose weight is a tensor subclass (torchao's int8 weights,
    FSDP's sharded DTensors), which only its own forward knows how to use, and a module
    with hooks (FLOP counters such as thop, feature extractors, Grad-CAM), which then sees
    upstream's inputs and outputs."""
    return (
        type(module).forward is cls.forward
        and "forward" not in module.__dict__
        and all(type(p) in (torch.Tensor, nn.Parameter) for p in module._parameters.values() if p is not None)
        and not hooked(module)
    )


def hooked(module: nn.Module) -> bool:
    """Forward or backward hooks on `module`, or registered for every module."""
    return bool(
        module._forward_hooks
        or module._forward_pre_hooks
        or module._backward_hooks
        or module._backward_pre_hooks
        or _module._global_forward_hooks
        or _module._global_forward_pre_hooks
        or _module._global_backward_hooks
        or _module._global_backward_pre_hooks
    )


def observed(module: nn.Module) -> bool:
    """Hooks on `module` or any module inside it (see `hooked`)."""
    return any(hooked(m) for m in module.modules())


def needs_grad(*tensors: torch.Tensor) -> bool:
    """Autograd records what is done with `tensors` (grad mode on, one of them requires
    grad): then the in-place and custom-kernel shortcuts step aside."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def flex_attention_applies(*tensors: torch.Tensor) -> bool:
    """The preconditions of the FlexAttention path for this call: torch.compile is tracing it
    (eager FlexAttention materialises every score: slower than the bias it replaces), not an
    export (the exporters have no FlexAttention), CUDA tensors (on CPUs the fused kernel
    measured slower than SDPA with the bias, and inductor's CPU template cannot take
    relative-position terms computed in the same graph), nothing that needs gradients."""
    return (
        torch.compiler.is_compiling()
        and not _exporting()
        and all(t.device.type == "cuda" for t in tensors)
        and not needs_grad(*tensors)
    )


def onednn_applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """The preconditions of the fused oneDNN kernels for this call: CPU, input and weight of
    the same float32 or bfloat16 dtype, no autocast (it would change the dtypes under the
    kernel), nothing that needs gradients, not tracing."""
    return (
        x.device.type == "cpu"
        and weight.device.type == "cpu"
        and x.dtype in (torch.float32, torch.bfloat16)
        and weight.dtype == x.dtype
        and not torch.is_autocast_enabled("cpu")
        and not needs_grad(x, weight)
        and not tracing()
        and onednn_available()
    )
