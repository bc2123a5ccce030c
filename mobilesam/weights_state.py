"""Whether modules still hold the weights that something was computed from.

The predictor keeps work that depends on the prompt encoder's and decoder's weights
(the positional encoding of the embedding grid, the decoder's per-image context), the
high-level API keeps the last image's embedding, and the CUDA-graph engine keeps graphs
that read the weights' memory. Code written for segment-anything changes weights under a
live predictor: an optimizer step between validation passes, `load_state_dict` of
another fine-tune, a LoRA layer swapped in. `WeightsState(*modules)` is a snapshot;
`changed()` tells when, since it was taken:

- a parameter or buffer changed in place (its version counter moved: optimizer steps,
  `load_state_dict`, `mul_` under `no_grad`);
- one got other storage (`.to(...)`, `.half()`, `param.data = ...`);
- a parameter, buffer or submodule was registered on one of the modules (replacing
  `module.weight` or a layer, `load_state_dict(assign=True)`, PEFT and quantisation
  surgeries), counted by PyTorch's global registration hooks, installed on first use.

The modules themselves being replaced (`sam.mask_decoder = ...`) is the caller's to
check: `of(*modules)`. A check reads two numbers per tensor: about 25 us for the decoder
and prompt encoder's 137 tensors, against 260 us for walking the modules again.
"""

from __future__ import annotations

import weakref

import torch
from torch import nn
from torch.nn.modules import module as _module

# Every module of a snapshot, by id (a module may be unhashable: a dataclass module), each
# entry dropped when its module dies (before its id can be reused).
_tracked: dict[int, weakref.ref] = {}
_registrations = 0  # registrations on a tracked module since the hooks were installed
_hooks_installed = False


def _track(module: nn.Module) -> None:
    key = id(module)
    if key not in _tracked:
        _tracked[key] = weakref.ref(module, lambda _, key=key: _tracked.pop(key, None))


def _count_registration(module: nn.Module, name: str, value: object) -> None:
    global _registrations
    ref = _tracked.get(id(module))
    if ref is not None and ref() is module:
        _registrations += 1


def _install_hooks() -> None:
    global _hooks_installed
    if not _hooks_installed:
        _module.register_module_parameter_registration_hook(_count_registration)
        _module.register_module_buffer_registration_hook(_count_registration)
        _module.register_module_module_registration_hook(_count_registration)
        _hooks_installed = True


class WeightsState:
    """A snapshot of `modules`' parameters and buffers (see the module's docstring).
    versions=False: in-place changes do not count (for what reads the weights' memory as
    it is at each call: CUDA graphs), at half the cost of a check."""

    def __init__(self, *modules: nn.Module, versions: bool = True) -> None:
        _install_hooks()
        self.modules = modules
        for root in modules:
            for m in root.modules():
                _track(m)
        self._registrations = _registrations
        self._tensors = [t for m in modules for t in (*m.parameters(), *m.buffers())]
        # Inference tensors (made under torch.inference_mode) keep no version counter.
        self._versioned = [t for t in self._tensors if versions and not t.is_inference()]
        self._marks = self._read()

    def of(self, *modules: nn.Module) -> bool:
        """Whether this is a snapshot of these very modules."""
        return len(modules) == len(self.modules) and all(a is b for a, b in zip(modules, self.modules))

    def _read(self) -> tuple[list[int], list[int]]:
        return [_pointer(t) for t in self._tensors], [t._version for t in self._versioned]

    def changed(self) -> bool:
        return self._registrations != _registrations or self._read() != self._marks


def _pointer(t: torch.Tensor) -> int:
    try:
        return t.data_ptr()
    except RuntimeError:  # no storage (a sparse tensor, some subclasses): its version still counts
        return 0


def unchanged(state: WeightsState | None, *modules: nn.Module) -> bool:
    """Whether `state` is a snapshot of these very modules and nothing changed since: what
    every cache of the package asks before reusing its work."""
    return state is not None and state.of(*modules) and not state.changed()
