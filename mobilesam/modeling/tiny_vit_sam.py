"""MobileSAM's module path for `TinyViT` (`from mobile_sam.modeling.tiny_vit_sam import TinyViT`)."""

from .tiny_vit import TinyViT

__all__ = ["TinyViT"]
