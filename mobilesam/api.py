"""The high-level API: an image and prompts in, a result to overlay, save and export out.

    from mobilesam import MobileSAM
    sam = MobileSAM()                                   # published weights, cached
    result = sam.segment("truck.jpg", input_box=[[425, 600, 700, 875], [1240, 675, 1400, 750]])
    result.save_overlay("overlay.png"); result.save_masks("masks/"); result.save_json("masks.json")

Parameters carry the Ikomia MobileSAM task's names and accept strings as well as values.
`mask_id` (1-3) picks one of the three multi-mask candidates in SAM's mask-token order
(the order of `mask_decoder.mask_tokens[1:4]`, not sorted by score). Without it, a
single point returns the best-scoring candidate and other prompts the single-mask output.
"""

from __future__ import annotations

from os import PathLike

import torch

from . import weights
from .build import build_sam, resolve_model_type
from .checkpoint import source_sha256
from .engine import Engine
from .errors import MobileSAMError
from .highlevel import Segmenter, everything
from .modeling import fast_paths as _fast_paths
from .predictor import SamPredictor
from .result import SegmentationResult
from .runtime import tune_allocator

__all__ = ["MobileSAM", "SegmentationResult", "everything", "resolve_device"]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """None -> cuda, else mps, else cpu; an unavailable device is a clear error."""
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise MobileSAMError(f"unknown device {device!r}; use cpu, cuda, cuda:N or mps") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise MobileSAMError("device 'cuda' requested but this PyTorch has no usable CUDA GPU")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise MobileSAMError("device 'mps' requested but Metal (MPS) is not available here")
    return dev


def torch_model_record(model_type: str, img_size: int, precision: str, checkpoint: str | PathLike) -> dict:
    """`MobileSAM.model_record()` from its arguments, without loading the model (the Ray
    engine's driver records it so): the checkpoint's SHA-256 stands for the weights."""
    return {
        "backend": "torch",
        "model_type": model_type,
        "img_size": img_size,
        "precision": precision,
        "checkpoint_sha256": source_sha256(checkpoint),
    }


class MobileSAM(Segmenter):
    """A loaded model plus the embedding of the last image it saw (`highlevel.Segmenter`
    over a `SamPredictor`).

    checkpoint: a path, or None for the published weights of `model_type` (downloaded
    once, cached). model_type: a registry name ("vit_t", "vit_b", ...); None reads it
    from the checkpoint (the model whose layout it has exactly), else vit_t.
    device: "cpu", "cuda", "mps" or None for the best available.
    precision: "float32" (default, matches the official outputs) or "bf16" (encoder in
    bfloat16: faster where the hardware has bf16 matmuls, close but not identical).
    fast_paths: None keeps the defaults (fast_paths.py: all on but flex_attention unless
    the environment says otherwise), False runs the plain reference path everywhere,
    True turns all on.
    graphs: replay the encoder and decoder from CUDA graphs (`engine.Engine`); None: on
    with CUDA (the same kernels, the same results), off elsewhere. compile: also
    `torch.compile` them (tens of seconds at the first image on a GPU). On CUDA the
    image is resized on the GPU (`SamPredictor.device_preprocess`) and the common
    calls are captured once here, so the first image is as fast as the next.
    img_size: the side of the model's square input, a multiple of 16 (default 1024, the
    published weights'); the size a student was distilled at (`distill --img-size`). A
    SAM ViT checkpoint fixes it (its position embedding); a TinyViT one runs at any size,
    the encoder's time about proportional to img_size squared, the masks coarser.
    Creating one calls `mobilesam.tune_allocator()` (faster CPU inference, see runtime.py).
    """

    def __init__(
        self,
        checkpoint: str | PathLike | None = None,
        model_type: str | None = None,
        device: str | torch.device | None = None,
        precision: str = "float32",
        fast_paths: bool | None = None,
        graphs: bool | None = None,
        compile: bool = False,
        img_size: int = 1024,
    ) -> None:
        if precision not in ("float32", "bf16"):
            raise MobileSAMError(f"precision must be 'float32' or 'bf16', got {precision!r}")
        tune_allocator()
        self.model_type = resolve_model_type(model_type, checkpoint, img_size)
        if checkpoint is None:
            checkpoint = weights.ensure_weights(self.model_type)
        self.device = resolve_device(device)
        self.model = build_sam(self.model_type, checkpoint, img_size).to(self.device)
        self.checkpoint, self.precision = checkpoint, precision
        self._record: dict | None = None
        if fast_paths is not None:
            _fast_paths.configure(self.model, on=fast_paths)
        if precision == "bf16":
            # Opt-in: the encoder in bfloat16 (1.6x faster on an AVX512-BF16 CPU, masks
            # IoU 0.970-0.985 against float32 on the parity fixture); the decoder stays float32.
            self.model.image_encoder.to(torch.bfloat16)
        cuda = self.device.type == "cuda"
        graphs = cuda if graphs is None else graphs
        engine = Engine(self.model, graphs=graphs, compile=compile) if graphs or compile else None
        super().__init__(SamPredictor(self.model, engine))
        if cuda:
            self.predictor.warmup()

    def model_record(self) -> dict:
        """`Segmenter.model_record`: backend, model type, input size, precision and the
        checkpoint's SHA-256 (read once, when a job first asks)."""
        if self._record is None:
            self._record = torch_model_record(
                self.model_type, self.model.img_size, self.precision, self.checkpoint
            )
        return self._record
