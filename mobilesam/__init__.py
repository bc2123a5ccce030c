"""MobileSAM: Segment Anything with a 5M-parameter TinyViT image encoder.

segment-anything compatible names (`sam_model_registry`, `SamPredictor`) and a
high-level API (`MobileSAM`). Importing this package has no side effects.
"""

from .api import MobileSAM, SegmentationResult
from .build import (
    build_sam,
    build_sam_vit_b,
    build_sam_vit_h,
    build_sam_vit_l,
    build_sam_vit_t,
    sam_model_registry,
)
from .errors import CheckpointError, ImageLoadError, MobileSAMError, PromptError, WeightsUnavailableError
from .predictor import SamPredictor
from .runtime import tune_allocator

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ImageLoadError",
    "MobileSAM",
    "MobileSAMError",
    "PromptError",
    "SamPredictor",
    "SegmentationResult",
    "WeightsUnavailableError",
    "__version__",
    "build_sam",
    "build_sam_vit_b",
    "build_sam_vit_h",
    "build_sam_vit_l",
    "build_sam_vit_t",
    "sam_model_registry",
    "tune_allocator",
]
