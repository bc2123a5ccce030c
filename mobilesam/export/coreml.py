"""Export MobileSAM (or SAM) as Core ML packages for Apple devices.

    export_coreml(sam, "out/")  ->  out/encoder.mlpackage, out/decoder.mlpackage, out/metadata.json

ML programs (Core ML's current format) with float16 weights and compute, exported from the
same modules as the ExecuTorch programs (mobilesam/export/executorch.py), with the
same inputs and outputs: encoder `image` 1x3xSxS -> `image_embeddings`; decoder
`image_embeddings`, `point_coords` 1xNx2 (N from 1 to MAX_POINTS), `point_labels` 1xN,
`mask_input`, `has_mask_input` -> `iou_predictions` 1x4, `low_res_masks` 1x4x256x256.

coremltools converts and validates on Linux (each package is reloaded and its inputs and
outputs checked against these names and shapes); running a package needs macOS or iOS, so
the numbers are not checked here. Needs coremltools (the `coreml` extra).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from os import PathLike
from pathlib import Path

import torch

from ..checkpoint import source_sha256
from ..errors import MobileSAMError, missing_extra
from ..modeling.sam import Sam
from ..utils.files import atomic_write_text, check_output_dir
from .executorch import DECODER_INPUTS, DECODER_OUTPUTS, MAX_POINTS
from .modules import EncoderOnnx, LowResDecoder, mobile_copy
from .onnx import decoder_inputs, weights_digest


def _require_coremltools():
    try:
        import coremltools
    except ImportError:
        raise missing_extra("coremltools", "coreml") from None
    return coremltools


def export_coreml(
    sam: Sam, out_dir: str | PathLike, checkpoint: str | PathLike | None = None, model_type: str = "vit_t"
) -> dict[str, Path]:
    """Write encoder.mlpackage, decoder.mlpackage and metadata.json; returns their paths."""
    ct = _require_coremltools()
    out = check_output_dir(out_dir)
    mobile = mobile_copy(sam.cpu())
    size, grid = sam.img_size, sam.prompt_encoder.image_embedding_size
    points = ct.RangeDim(lower_bound=1, upper_bound=MAX_POINTS, default=2)
    num_points = torch.export.Dim("num_points", min=1, max=MAX_POINTS)
    shapes = {
        "image_embeddings": (1, 256, *grid),
        "point_coords": (1, points, 2),
        "point_labels": (1, points),
        "mask_input": (1, 1, 4 * grid[0], 4 * grid[1]),
        "has_mask_input": (1,),
    }
    packages = {
        "encoder.mlpackage": (
            EncoderOnnx(mobile),
            (torch.randn(1, 3, size, size),),
            [ct.TensorType(name="image", shape=(1, 3, size, size))],
            ["image_embeddings"],
            None,
        ),
        "decoder.mlpackage": (
            LowResDecoder(mobile),
            tuple(decoder_inputs(sam, 2, (1, 1), seed=0).values())[:5],
            [ct.TensorType(name=n, shape=shapes[n]) for n in DECODER_INPUTS],
            list(DECODER_OUTPUTS),
            (None, {1: num_points}, {1: num_points}, None, None),
        ),
    }
    pipeline = ct.PassPipeline.DEFAULT
    # This pass fails on a matmul by a constant followed by a scalar addition (the variance
    # plus epsilon of `_matmul_layer_norm`): coremltools 9.0 reads the scalar's last axis.
    pipeline.remove_passes(["common::fuse_linear_bias"])
    files = {}
    for name, (module, example, inputs, outputs, dynamic) in packages.items():
        with torch.no_grad():
            program = torch.export.export(module.eval(), example, dynamic_shapes=dynamic).run_decompositions()
        for node in program.graph.nodes:  # coremltools has no `alias` (a view returned as is)
            if node.target == torch.ops.aten.alias.default:
                node.target = torch.ops.aten.clone.default
        model = ct.convert(
            program,
            inputs=inputs,
            outputs=[ct.TensorType(name=n) for n in outputs],
            convert_to="mlprogram",
            compute_precision=ct.precision.FLOAT16,
            minimum_deployment_target=ct.target.iOS16,
            pass_pipeline=pipeline,
        )
        model.short_description = f"MobileSAM ({model_type}) {name.split('.')[0]}"
        files[name] = _save(model, out / name)
        check_package(files[name], [i.name for i in inputs], outputs)
    meta = {
        "format": "coreml",
        "model_type": model_type,
        "source_checkpoint": str(checkpoint) if checkpoint else None,
        "source_sha256": source_sha256(checkpoint) if checkpoint else None,
        "img_size": size,
        "pixel_mean": sam.pixel_mean.flatten().tolist(),
        "pixel_std": sam.pixel_std.flatten().tolist(),
        "precision": "float16 weights and compute",
        "minimum_deployment_target": "iOS16 / macOS13",
        "encoder": {"file": "encoder.mlpackage", "inputs": ["image"], "outputs": ["image_embeddings"]},
        "decoder": {
            "file": "decoder.mlpackage",
            "inputs": list(DECODER_INPUTS),
            "outputs": list(DECODER_OUTPUTS),
            "point_coords": f"1xNx2 float32, 1 <= N <= {MAX_POINTS}; conventions as the ExecuTorch decoder.pte",
        },
        "weights_sha256": weights_digest(sam),
        "coremltools": ct.__version__,
    }
    files["metadata"] = atomic_write_text(out / "metadata.json", json.dumps(meta, indent=2))
    return files


def _save(model, path: Path) -> Path:
    """Save a package (a folder) beside `path`, then move it into place."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        model.save(str(tmp / path.name))
        if path.exists():
            shutil.rmtree(path)
        (tmp / path.name).rename(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def check_package(path: str | PathLike, inputs: list[str], outputs: list[str]) -> None:
    """A saved package's spec loads and names the expected inputs and outputs (all Linux allows)."""
    ct = _require_coremltools()
    try:
        spec = ct.utils.load_spec(str(path))
    except Exception as exc:  # coremltools raises assorted types for a bad package
        raise MobileSAMError(f"{path} is not a loadable Core ML package: {exc}") from exc
    got_in = [i.name for i in spec.description.input]
    got_out = [o.name for o in spec.description.output]
    if got_in != inputs or got_out != outputs:
        raise MobileSAMError(
            f"{path}: inputs {got_in} and outputs {got_out}, expected {inputs} and {outputs}"
        )
