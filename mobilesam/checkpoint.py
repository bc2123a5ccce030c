"""Strict, safe checkpoint loading.

Files are read on the CPU with `weights_only=True` (no arbitrary pickles) or as
`.safetensors`; the usual wrappers (`{"model": ...}`, `{"state_dict": ...}`, a prefix
such as DDP's `module.` or a fine-tuning module's `model.` on every key) are unwrapped;
a file for another model fails with the model it looks like and the keys that do not fit.
"""

from __future__ import annotations

import pickle
import re
from os import PathLike
from pathlib import Path

import torch
from torch import nn

from . import hf_layout
from .errors import CheckpointError, missing_extra

_WRAPPER_KEYS = ("model", "state_dict", "model_state_dict", "module")
_LIST_LIMIT = 8
_WRAPPED_PART = re.compile(r"(.+?\.)(?:image_encoder|prompt_encoder|mask_decoder)\.")  # group 1: the prefix


def read_state_dict(path: str | PathLike, mmap: bool = False) -> dict[str, torch.Tensor]:
    """The tensors of a `.pt`/`.pth`/`.safetensors` checkpoint, unwrapped, on the CPU.
    Hugging Face transformers SAM weights (a file, or a `save_pretrained` folder) come back
    under the official names. mmap: map `.pt` files rather than read them (names and
    shapes at no cost; files in PyTorch's legacy format are read whole)."""
    state = {k: v for file in _files(Path(path)) for k, v in _read_file(file, mmap).items()}
    return hf_layout.to_official(state) if hf_layout.is_transformers_sam(state) else state


def _files(path: Path) -> list[Path]:
    """A checkpoint's files: itself, or a `save_pretrained` folder's weight files."""
    return hf_layout.weights_files(path) if path.is_dir() else [path]


def source_sha256(path: str | PathLike) -> str:
    """SHA-256 of a checkpoint's bytes (a `save_pretrained` folder: its weight files' bytes
    in order), as export metadata records its source."""
    from .weights import sha256_of

    return sha256_of(*_files(Path(path)))


def _read_file(path: Path, mmap: bool = False) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise missing_extra("safetensors", "safetensors") from None
        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own error types
            raise CheckpointError(f"{path} is not a valid .safetensors file: {exc}") from exc
    try:
        obj = _torch_load(path, mmap)
    except pickle.UnpicklingError as exc:
        if "weights_only" in str(exc):
            raise CheckpointError(
                f"{path} is not a plain state dict: it holds Python objects that weights_only "
                "loading refuses for safety. Re-save it with torch.save(model.state_dict(), path)."
            ) from exc
        raise CheckpointError(f"{path} is not a PyTorch checkpoint ({exc})") from exc
    except Exception as exc:  # torch.load on a non-checkpoint raises many types (IndexError, EOFError, ...)
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({exc})") from exc
    return _unwrap(obj, path)


def _torch_load(path: Path, mmap: bool) -> object:
    if mmap:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:
            pass  # a legacy (non-zip) file cannot be mapped: read it whole
    return torch.load(path, map_location="cpu", weights_only=True)


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    while isinstance(obj, dict):
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    prefix = _wrapper_prefix(list(obj))
    return {k[len(prefix) :]: v for k, v in obj.items()} if prefix else obj


def _wrapper_prefix(keys: list[str]) -> str:
    """The prefix a training wrapper put before every key: DDP's `module.`, or the
    attribute a fine-tuning module keeps SAM in (`model.`, `sam.`, `model.module.`: a
    Lightning `state_dict`); "" when the keys do not all share one."""
    match = _WRAPPED_PART.match(keys[0])
    prefix = match.group(1) if match else "module."
    return prefix if all(k.startswith(prefix) for k in keys) else ""


def guess_model(keys: set[str]) -> str:
    """Which known layout a set of state-dict keys resembles, in words."""
    if any(k.startswith(("vision_encoder.", "shared_image_embedding.")) for k in keys):
        return "a Hugging Face transformers model other than SamModel (whose files are converted)"
    if any(k.startswith("mask_decoder.hf_token.") for k in keys):
        return (
            "HQ-SAM (an extra high-quality mask token in the decoder), which this package does not implement"
        )
    if any(k.startswith("image_encoder.layers.") for k in keys):
        return "a TinyViT encoder (MobileSAM's vit_t, or a tiny_vit_* student of another width)"
    blocks = {int(m.group(1)) for k in keys if (m := re.match(r"image_encoder\.blocks\.(\d+)\.", k))}
    if blocks:
        name = {12: "vit_b", 24: "vit_l", 32: "vit_h"}.get(max(blocks) + 1, f"{max(blocks) + 1} blocks")
        return f"SAM ViT ({name})"
    if any(k.startswith(("layers.", "patch_embed.seq")) for k in keys):
        return "a bare TinyViT encoder without the SAM prompt encoder and decoder"
    if any(k.startswith(("sam_mask_decoder.", "memory_attention.")) for k in keys):
        return "SAM 2, which this package does not implement"
    prefixes = sorted({m.group(1) for k in keys if (m := _WRAPPED_PART.match(k))})
    if prefixes:
        return f"a SAM under {', '.join(map(repr, prefixes))} beside other weights (save that module's state_dict)"
    return "no known SAM layout"


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_LIST_LIMIT])
    more = f" … and {len(keys) - _LIST_LIMIT} more" if len(keys) > _LIST_LIMIT else ""
    return shown + more


def load_state_dict_strict(
    model: nn.Module, state: dict[str, torch.Tensor], model_type: str, source: str
) -> None:
    """Load `state` into `model`, failing with a readable report if anything does not match."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(
        f"{k} {tuple(state[k].shape)} != {tuple(expected[k].shape)}"
        for k in set(expected) & set(state)
        if state[k].shape != expected[k].shape
    )
    if missing or unexpected or wrong_shape:
        lines = [f"{source} does not fit model {model_type!r}; it looks like {guess_model(set(state))}."]
        pos = state.get("image_encoder.pos_embed")  # a SAM ViT's (1, img_size/16, img_size/16, C)
        if pos is not None and pos.dim() == 4 and pos.shape[1] * 16 != getattr(model, "img_size", None):
            side = pos.shape[1] * 16
            lines.append(f"It was made for {side}-px input: pass img_size={side} (--img-size {side}).")
        if missing:
            lines.append(f"missing keys ({len(missing)}): {_listing(missing)}")
        if unexpected:
            lines.append(f"unexpected keys ({len(unexpected)}): {_listing(unexpected)}")
        if wrong_shape:
            lines.append(f"wrong shapes ({len(wrong_shape)}): {_listing(wrong_shape)}")
        raise CheckpointError("\n".join(lines))
    model.load_state_dict(state, strict=True)


def load_checkpoint(model: nn.Module, path: str | PathLike, model_type: str) -> None:
    load_state_dict_strict(model, read_state_dict(path), model_type, str(path))
