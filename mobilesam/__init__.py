"""MobileSAM: Segment Anything with a 5M-parameter TinyViT image encoder.

segment-anything compatible names (`sam_model_registry`, `SamPredictor`,
`SamAutomaticMaskGenerator`), a high-level API (`MobileSAM`), and predictors on exported
files: onnxruntime (`OnnxPredictor`) and ExecuTorch (`ExecuTorchPredictor`). Names load on first use, so importing the package has no
side effects and works without torch (the ONNX runtime path needs none).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_WHERE = {
    "MobileSAM": ".api",
    "SegmentationResult": ".result",
    "SamPredictor": ".predictor",
    "SamAutomaticMaskGenerator": ".automatic_mask_generator",
    "OnnxPredictor": ".onnx_predictor",
    "ExecuTorchPredictor": ".executorch_predictor",
    "build_sam": ".build",
    "build_sam_vit_t": ".build",
    "build_sam_vit_b": ".build",
    "build_sam_vit_l": ".build",
    "build_sam_vit_h": ".build",
    "sam_model_registry": ".build",
    "tune_allocator": ".runtime",
    "MobileSAMError": ".errors",
    "CheckpointError": ".errors",
    "ImageLoadError": ".errors",
    "PromptError": ".errors",
    "WeightsUnavailableError": ".errors",
}

__all__ = [
    "CheckpointError",
    "ExecuTorchPredictor",
    "ImageLoadError",
    "MobileSAM",
    "MobileSAMError",
    "OnnxPredictor",
    "PromptError",
    "SamAutomaticMaskGenerator",
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


def __getattr__(name: str) -> object:
    if name not in _WHERE:
        raise AttributeError(f"module 'mobilesam' has no attribute {name!r}")
    try:
        module = importlib.import_module(_WHERE[name], __name__)
    except ModuleNotFoundError as exc:
        if exc.name == "torch":
            raise ImportError(
                f"mobilesam.{name} needs PyTorch: pip install torch (CPU: --index-url "
                "https://download.pytorch.org/whl/cpu), or use mobilesam.OnnxPredictor with onnxruntime"
            ) from exc
        raise
    return getattr(module, name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))  # the lazy names too, for completion


if TYPE_CHECKING:
    from .api import MobileSAM
    from .automatic_mask_generator import SamAutomaticMaskGenerator
    from .build import (
        build_sam,
        build_sam_vit_b,
        build_sam_vit_h,
        build_sam_vit_l,
        build_sam_vit_t,
        sam_model_registry,
    )
    from .errors import CheckpointError, ImageLoadError, MobileSAMError, PromptError, WeightsUnavailableError
    from .executorch_predictor import ExecuTorchPredictor
    from .onnx_predictor import OnnxPredictor
    from .predictor import SamPredictor
    from .result import SegmentationResult
    from .runtime import tune_allocator
