"""One table of where the time goes: backend x precision x stage, against the hardware.

`mobilesam bench` and `benchmarks/bench_table.py` print it. Stages: the encoder, the
decoder for one box (before full-resolution upsampling), a full prompt (set_image +
predict), and segment everything on a 16x16 grid. FLOPs are counted on PyTorch's
plain kernels (torch.utils.flop_counter), so "GFLOP/s" says how close a stage is to
the machine's matmul peak. For the exported backends (onnxruntime, ExecuTorch) the
encoder rows also give the file's size, the peak memory of a fresh process that loads
the backend and segments one box (`process_peak_mb`; the torch row has it too), and the
masks' agreement with float32 PyTorch on the parity fixture's truck prompts (`PROMPTS`,
worst IoU of every mask).
"""

from __future__ import annotations

import copy
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from .automatic_mask_generator import SamAutomaticMaskGenerator
from .errors import MobileSAMError
from .modeling.sam import Sam
from .predictor import SamPredictor
from .utils.regions import mask_iou

BOX = np.array([425, 600, 700, 875])
# The parity fixture's prompts on truck.jpg (cases.json), as `predict` keyword arguments.
PROMPTS = [
    {"box": np.array(b), "multimask_output": False}
    for b in ([425, 600, 700, 875], [1240, 675, 1400, 750], [1375, 550, 1650, 800])
] + [
    {"point_coords": np.array([[500, 375]]), "point_labels": np.array([1])},
    {"point_coords": np.array([[500, 375], [1125, 625]]), "point_labels": np.array([1, 0])},
    {
        "box": BOX,
        "point_coords": np.array([[575, 750]]),
        "point_labels": np.array([1]),
        "multimask_output": False,
    },
]


@dataclass
class Row:
    backend: str
    precision: str
    stage: str
    times_ms: list[float]
    gflop: float | None = None
    file_mb: float | None = None
    peak_mb: float | None = None
    mask_iou: float | None = None

    def cells(self) -> list[str]:
        med = statistics.median(self.times_ms)
        spread = f"{min(self.times_ms):.1f}-{max(self.times_ms):.1f}"
        rate = f"{self.gflop / (med / 1000):.0f}" if self.gflop else ""

        def opt(value: float | None, fmt: str) -> str:
            return "" if value is None else format(value, fmt)

        return [
            self.backend,
            self.precision,
            self.stage,
            f"{med:.1f}",
            spread,
            opt(self.gflop, ".1f"),
            rate,
            opt(self.file_mb, ".1f"),
            opt(self.peak_mb, ".0f"),
            opt(self.mask_iou, ".4f"),
        ]


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


_PEAK_SCRIPT = """
import re, sys
import numpy as np
from PIL import Image
kind, path, image, int8 = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
if kind == "torch":
    from mobilesam import SamPredictor, build_sam
    predictor = SamPredictor(build_sam("vit_t", path))
elif kind == "onnxruntime":
    from mobilesam import OnnxPredictor
    predictor = OnnxPredictor(path, int8=int8)
else:
    from mobilesam import ExecuTorchPredictor
    predictor = ExecuTorchPredictor(path, int8=int8)
predictor.set_image(np.asarray(Image.open(image).convert("RGB")))
predictor.predict(box=np.array([425, 600, 700, 875]), multimask_output=False)
status = open("/proc/self/status").read()
print(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1))
"""


def process_peak_mb(
    backend: str, path: str | Path, image_file: str | Path, int8: bool = False
) -> float | None:
    """Peak resident memory of a fresh process that loads `backend` from `path` (a
    checkpoint, or an export folder) and segments one box on the image: what an app
    needs. Linux only (None elsewhere): the kernel's VmHWM, which starts afresh at exec
    (ru_maxrss would include the forked parent's)."""
    if sys.platform != "linux":
        return None
    args = [sys.executable, "-c", _PEAK_SCRIPT, backend, str(path), str(image_file), "1" if int8 else "0"]
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=600)
    return int(out.stdout.split()[-1]) / 1024


def _masks(predictor, image: np.ndarray) -> list[np.ndarray]:
    predictor.set_image(image)
    return [m for p in PROMPTS for m in predictor.predict(**p)[0]]


def agreement(ours: list[np.ndarray], reference: list[np.ndarray]) -> float:
    """The worst IoU between corresponding masks."""
    return min(mask_iou(a, b) for a, b in zip(ours, reference))


def run(
    sam: Sam,
    image: np.ndarray,
    repeats: int = 5,
    onnx: bool = True,
    everything: bool = True,
    executorch: bool = False,
) -> list[Row]:
    """Measure every stage; onnx=True / executorch=True also export to a temporary folder
    and time onnxruntime / ExecuTorch (float32 and int8)."""
    predictor = SamPredictor(sam)
    predictor.set_image(image)
    box = torch.as_tensor(predictor.transform.apply_boxes(BOX, predictor.original_size), dtype=torch.float)
    x = sam.preprocess(torch.as_tensor(predictor.transform.apply_image(image)).permute(2, 0, 1)[None].float())

    with torch.inference_mode():
        reference = _masks(predictor, image)
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
    with tempfile.TemporaryDirectory() as folder:  # exports, and the files the memory probes read
        scratch = Path(folder)
        image_file = scratch / "image.png"
        Image.fromarray(image).save(image_file)
        torch.save(sam.state_dict(), scratch / "ckpt.pt")
        rows[0].peak_mb = process_peak_mb("torch", scratch / "ckpt.pt", image_file)
        threads = torch.get_num_threads()
        measure = (image, image_file, reference, repeats, encoder_gflop, everything)
        if onnx:
            from .export.onnx import export_onnx
            from .onnx_predictor import OnnxPredictor

            export_onnx(sam, scratch / "onnx", quantize="int8")
            for int8 in (False, True):
                predictor = OnnxPredictor(scratch / "onnx", threads=threads, int8=int8)
                name = "encoder.int8.onnx" if int8 else "encoder.onnx"
                precision = "int8 (dynamic)" if int8 else "float32"
                rows += _exported_rows("onnxruntime", precision, predictor, scratch / "onnx" / name, *measure)
        if executorch:
            from .executorch_predictor import ExecuTorchPredictor
            from .export.executorch import export_executorch

            export_executorch(sam, scratch / "pte", quantize="int8", calibration=[image])
            for int8 in (False, True):
                predictor = ExecuTorchPredictor(scratch / "pte", threads=threads, int8=int8)
                name = "encoder.int8.pte" if int8 else "encoder.pte"
                precision = "int8 (static)" if int8 else "float32"
                rows += _exported_rows("executorch", precision, predictor, scratch / "pte" / name, *measure)
    return rows


def _exported_rows(
    backend: str,
    precision: str,
    predictor,
    encoder_file: Path,
    image: np.ndarray,
    image_file: Path,
    reference: list[np.ndarray],
    repeats: int,
    encoder_gflop: float,
    everything: bool,
) -> list[Row]:
    """Encoder (with file size, memory and mask agreement), decoder and, for float32,
    segment everything, on an exported backend's predictor."""
    encoder = Row(
        backend, precision, "encoder", timed(lambda: predictor.set_image(image), repeats), encoder_gflop
    )
    encoder.file_mb = encoder_file.stat().st_size / 2**20
    int8 = precision.startswith("int8")
    encoder.peak_mb = process_peak_mb(backend, encoder_file.parent, image_file, int8)
    encoder.mask_iou = agreement(_masks(predictor, image), reference)
    decoder = timed(lambda: predictor.predict(box=BOX, multimask_output=False), repeats * 4)
    rows = [encoder, Row(backend, precision, "decoder, 1 box + full-res", decoder)]
    if everything and precision == "float32":
        generator = SamAutomaticMaskGenerator(predictor, points_per_side=16, output_mode="coco_rle")
        rows.append(Row(backend, precision, "everything 16x16", timed(lambda: generator.generate(image), 1)))
    return rows


def table(rows: list[Row], image_name: str) -> str:
    head = ["backend", "precision", "stage", "median ms", "min-max", "GFLOP", "GFLOP/s"]
    head += ["file MB", "peak MB", "mask IoU"]
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
