"""Builders for MobileSAM and SAM, and the name -> builder registry.

`sam_model_registry["vit_t"](checkpoint="mobile_sam.pt")` is the segment-anything /
MobileSAM call; `build_sam("vit_t", img_size=256)` builds a small-input variant (the
embedding grid is img_size / 16; the distillation tests use it to run in seconds).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache, partial
from os import PathLike
from typing import Any

import torch

from .checkpoint import load_checkpoint, read_state_dict
from .errors import PromptError
from .modeling.image_encoder import ImageEncoderViT
from .modeling.mask_decoder import MaskDecoder
from .modeling.prompt_encoder import PromptEncoder
from .modeling.sam import Sam
from .modeling.tiny_vit import TinyViT
from .modeling.transformer import TwoWayTransformer

PROMPT_EMBED_DIM = 256


@dataclass(frozen=True)
class TinyViTConfig:
    embed_dims: tuple[int, ...]
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]
    window_sizes: tuple[int, ...] = (7, 7, 14, 7)


@dataclass(frozen=True)
class ViTConfig:
    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    window_size: int = 14


MODEL_CONFIGS: dict[str, TinyViTConfig | ViTConfig] = {
    "vit_t": TinyViTConfig((64, 128, 160, 320), (2, 2, 6, 2), (2, 4, 5, 10)),  # TinyViT-5M: MobileSAM
    # Other students for distillation (no published MobileSAM weights): TinyViT-11M and
    # -21M as the TinyViT paper defines them, and a smaller one of ours (2.7M parameters
    # in the encoder, about half of vit_t's 5.7M) for edge devices.
    "tiny_vit_3m": TinyViTConfig((48, 96, 128, 192), (2, 2, 4, 2), (2, 3, 4, 6)),
    "tiny_vit_11m": TinyViTConfig((64, 128, 256, 448), (2, 2, 6, 2), (2, 4, 8, 14)),
    "tiny_vit_21m": TinyViTConfig((96, 192, 384, 576), (2, 2, 6, 2), (3, 6, 12, 18)),
    "vit_b": ViTConfig(768, 12, 12, (2, 5, 8, 11)),
    "vit_l": ViTConfig(1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": ViTConfig(1280, 32, 16, (7, 15, 23, 31)),
}


def _build_encoder(
    config: TinyViTConfig | ViTConfig, img_size: int, options: Mapping[str, Any]
) -> TinyViT | ImageEncoderViT:
    if isinstance(config, TinyViTConfig):
        return TinyViT(
            img_size=img_size,
            embed_dims=config.embed_dims,
            depths=config.depths,
            num_heads=config.num_heads,
            window_sizes=config.window_sizes,
            **options,
        )
    return ImageEncoderViT(
        img_size=img_size,
        embed_dim=config.embed_dim,
        depth=config.depth,
        num_heads=config.num_heads,
        window_size=config.window_size,
        global_attn_indexes=config.global_attn_indexes,
        **options,
    )


def build_sam(
    model_type: str = "vit_t",
    checkpoint: str | PathLike | None = None,
    img_size: int = 1024,
    *,
    encoder_options: Mapping[str, Any] | None = None,
) -> Sam:
    """Build a model by registry name; load `checkpoint` strictly if given. Eval mode, CPU.
    `encoder_options`: more keywords for the encoder's class (TinyViT's `drop_path_rate`,
    `use_checkpoint` for training)."""
    if model_type == "default":
        model_type = "vit_h"  # as segment-anything's registry
    if model_type not in MODEL_CONFIGS:
        raise PromptError(f"unknown model_type {model_type!r}; choose one of {sorted(MODEL_CONFIGS)}")
    if img_size <= 0 or img_size % 16:
        raise PromptError(f"img_size must be a positive multiple of 16, got {img_size}")
    return build_from_config(MODEL_CONFIGS[model_type], checkpoint, img_size, model_type, encoder_options)


def build_from_config(
    config: TinyViTConfig | ViTConfig,
    checkpoint: str | PathLike | None = None,
    img_size: int = 1024,
    name: str = "custom",
    encoder_options: Mapping[str, Any] | None = None,
) -> Sam:
    """A model with the encoder `config` describes (the registry's or any other size) and
    SAM's prompt encoder and decoder; `checkpoint` loaded strictly (`name` in its errors)."""
    grid = img_size // 16
    sam = Sam(
        image_encoder=_build_encoder(config, img_size, encoder_options or {}),
        prompt_encoder=PromptEncoder(PROMPT_EMBED_DIM, (grid, grid), (img_size, img_size)),
        mask_decoder=MaskDecoder(PROMPT_EMBED_DIM, TwoWayTransformer(2, PROMPT_EMBED_DIM, 8, 2048)),
    )
    sam.eval()
    if checkpoint is not None:
        load_checkpoint(sam, checkpoint, name)
    return sam


build_sam_vit_t = partial(build_sam, "vit_t")
build_sam_vit_b = partial(build_sam, "vit_b")
build_sam_vit_l = partial(build_sam, "vit_l")
build_sam_vit_h = partial(build_sam, "vit_h")

# "default" is ViT-H, as in segment-anything and MobileSAM (`MobileSAM()` and the CLI
# default to vit_t).
sam_model_registry: dict[str, Callable[..., Sam]] = {
    "default": build_sam_vit_h,
    "vit_t": build_sam_vit_t,
    "vit_b": build_sam_vit_b,
    "vit_l": build_sam_vit_l,
    "vit_h": build_sam_vit_h,
    **{name: partial(build_sam, name) for name in ("tiny_vit_3m", "tiny_vit_11m", "tiny_vit_21m")},
}


def model_type_of(checkpoint: str | PathLike, img_size: int = 1024) -> str | None:
    """The registry name whose layout (every key and shape, at `img_size`) `checkpoint`
    has; None when none fits exactly (a strict load then says what does not). A `.pt`
    file is memory-mapped for this, not read; `.safetensors` and legacy-format files are
    read whole, so the load that follows reads them a second time."""
    state = read_state_dict(checkpoint, mmap=True)
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    return next((name for name in MODEL_CONFIGS if shapes == _layout(name, img_size)), None)


@cache
def _layout(model_type: str, img_size: int) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in build_sam(model_type, img_size=img_size).state_dict().items()}


def resolve_model_type(
    model_type: str | None, checkpoint: str | PathLike | None, img_size: int = 1024
) -> str:
    """`model_type` when given; else the checkpoint's (`model_type_of`); else, and for the
    published weights, vit_t."""
    if model_type is not None:
        return model_type
    return (model_type_of(checkpoint, img_size) if checkpoint is not None else None) or "vit_t"
