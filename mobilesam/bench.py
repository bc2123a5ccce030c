"""One table of where the time goes: backend x precision x stage, against the hardware.

`mobilesam bench` and `benchmarks/bench_table.py` print it. Stages: the encoder, the
decoder for one box (before full-resolution upsampling), a full prompt (set_image +
predict), and segment everything on a 16x16 grid. FLOPs are counted on PyTorch's
plain kernels (torch.utils.flop_counter), so "GFLOP/s" says how close a stage is to
the machine's matmul peak.
"""

from __future__ import annotations

import copy
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from .automatic_mask_generator import SamAutomaticMaskGenerator
from .errors import MobileSAMError
from .modeling.sam import Sam
from .predictor import SamPredictor

BOX = np.array([425, 600, 700, 875])


@dataclass
class Row:
    backend: str
    precision: str
    stage: str
    times_ms: list[float]
    gflop: float | None = None

    def cells(self) -> list[str]:
        med = statistics.median(self.times_ms)
        spread = f"{min(self.times_ms):.1f}-{max(self.times_ms):.1f}"
        rate = f"{self.gflop / (med / 1000):.0f}" if self.gflop else ""
        gflop = f"{self.gflop:.1f}" if self.gflop else ""
        return [self.backend, self.precision, self.stage, f"{med:.1f}", spread, gflop, rate]


def timed(fn: Callable[[], object], repeats: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


def _gflop(fn: Callable[[], object]) -> float:
    """GFLOPs of one call, counted on the plain kernels: the fused oneDNN ones the fast path
    uses are invisible to the counter, and autograd on selects the plain ones."""
    counter = FlopCounterMode(display=False)
    with torch.enable_grad(), counter:
        fn()
    return counter.get_total_flops() / 1e9


def run(
    sam: Sam, image: np.ndarray, repeats: int = 5, onnx: bool = True, everything: bool = True
) -> list[Row]:
    """Measure every stage; onnx=True also exports to a temporary folder and times onnxruntime."""
    predictor = SamPredictor(sam)
    predictor.set_image(image)
    box = torch.as_tensor(predictor.transform.apply_boxes(BOX, predictor.original_size), dtype=torch.float)
    x = sam.preprocess(torch.as_tensor(predictor.transform.apply_image(image)).permute(2, 0, 1)[None].float())

    features, image_pe = predictor.features.clone(), predictor.image_pe.clone()  # not inference tensors
    sparse, dense = sam.prompt_encoder(None, box, None)
    encoder_gflop = _gflop(lambda: sam.image_encoder(x))
    decoder_gflop = _gflop(lambda: sam.mask_decoder(features, image_pe, sparse, dense, False))
    with torch.inference_mode():

        def full_prompt() -> None:
            predictor.set_image(image)
            predictor.predict(box=BOX, multimask_output=False)

        rows = [
            Row("torch", "float32", "encoder", timed(lambda: sam.image_encoder(x), repeats), encoder_gflop),
            Row(
                "torch",
                "float32",
                "decoder, 1 box",
                timed(lambda: predictor.decode(None, None, box, None, False), repeats * 4),
                decoder_gflop,
            ),
            Row("torch", "float32", "full prompt", timed(full_prompt, repeats)),
        ]
        encoder16 = copy.deepcopy(sam.image_encoder).to(torch.bfloat16)
        x16 = x.to(torch.bfloat16)
        rows.insert(
            1,
            Row("torch", "bf16 (opt-in)", "encoder", timed(lambda: encoder16(x16), repeats), encoder_gflop),
        )
        if everything:
            generator = SamAutomaticMaskGenerator(sam, points_per_side=16, output_mode="coco_rle")
            rows.append(
                Row("torch", "float32", "everything 16x16", timed(lambda: generator.generate(image), 1))
            )
    if onnx:
        rows += _onnx_rows(sam, image, repeats, encoder_gflop, everything)
    return rows


def _onnx_rows(
    sam: Sam, image: np.ndarray, repeats: int, encoder_gflop: float, everything: bool
) -> list[Row]:
    from .export.onnx import export_onnx
    from .onnx_predictor import OnnxPredictor

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        export_onnx(sam, folder, quantize="int8")
        for int8 in (False, True):
            p = OnnxPredictor(folder, threads=torch.get_num_threads(), int8=int8)
            precision = "int8 (dynamic)" if int8 else "float32"
            rows.append(
                Row(
                    "onnxruntime",
                    precision,
                    "encoder",
                    timed(lambda p=p: p.set_image(image), repeats),
                    encoder_gflop,
                )
            )
            rows.append(
                Row(
                    "onnxruntime",
                    precision,
                    "decoder, 1 box + full-res",
                    timed(lambda p=p: p.predict(box=BOX, multimask_output=False), repeats * 4),
                )
            )
            if everything and not int8:
                generator = SamAutomaticMaskGenerator(p, points_per_side=16, output_mode="coco_rle")
                rows.append(
                    Row(
                        "onnxruntime",
                        precision,
                        "everything 16x16",
                        timed(lambda g=generator: g.generate(image), 1),
                    )
                )
    return rows


def table(rows: list[Row], image_name: str) -> str:
    head = ["backend", "precision", "stage", "median ms", "min-max", "GFLOP", "GFLOP/s"]
    lines = [
        f"{image_name}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"{platform.machine()} {platform.processor() or ''}".rstrip(),
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    lines += ["| " + " | ".join(r.cells()) + " |" for r in rows]
    return "\n".join(lines)


def default_image(path: str | Path | None) -> Path:
    """The image to time: `path`, else the sample photo beside a development checkout."""
    if path:
        return Path(path)
    sample = Path(__file__).resolve().parents[2] / "shared" / "images" / "truck.jpg"
    if not sample.is_file():
        raise MobileSAMError("pass --image PATH: the photo to time the stages on")
    return sample
