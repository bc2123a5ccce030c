"""segment-anything's `build_sam` module: `build_sam_vit_h/l/b/t(checkpoint=None)`,
`build_sam(checkpoint)` (ViT-H, as upstream) and `sam_model_registry`.

`from mobilesam.build_sam import build_sam_vit_t` works as `from mobile_sam.build_sam
import ...` does. The package's own `mobilesam.build_sam(model_type, checkpoint)` (from
build.py) takes a registry name first; importing this module keeps that callable: the
module object itself forwards calls to it.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Sequence
from os import PathLike

from . import build as _build
from .build import (
    ViTConfig,
    build_from_config,
    build_sam_vit_b,
    build_sam_vit_h,
    build_sam_vit_l,
    build_sam_vit_t,
    sam_model_registry,
)
from .modeling.sam import Sam

__all__ = [
    "build_sam",
    "build_sam_vit_b",
    "build_sam_vit_h",
    "build_sam_vit_l",
    "build_sam_vit_t",
    "sam_model_registry",
]


def build_sam(checkpoint: str | PathLike | None = None) -> Sam:
    """segment-anything's `build_sam`: SAM ViT-H, loading `checkpoint` if given."""
    return build_sam_vit_h(checkpoint)


def _build_sam(
    encoder_embed_dim: int,
    encoder_depth: int,
    encoder_num_heads: int,
    encoder_global_attn_indexes: Sequence[int],
    checkpoint: str | PathLike | None = None,
) -> Sam:
    """segment-anything's private builder of a SAM ViT, which code building sizes the
    registry lacks calls: 1024-px input, 14-token windows, SAM's prompt encoder and
    decoder, in eval mode; `checkpoint` loaded strictly."""
    config = ViTConfig(
        encoder_embed_dim, encoder_depth, encoder_num_heads, tuple(encoder_global_attn_indexes)
    )
    name = f"SAM ViT (embed_dim {encoder_embed_dim}, depth {encoder_depth})"
    return build_from_config(config, checkpoint, 1024, name)


class _CallableModule(types.ModuleType):
    """Importing `mobilesam.build_sam` makes it the package attribute `mobilesam.build_sam`,
    where the registry builder lived: calling the module calls that builder."""

    def __call__(self, *args: object, **kwargs: object) -> Sam:
        return _build.build_sam(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
