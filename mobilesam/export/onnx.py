"""Export MobileSAM (or SAM) to ONNX, check the files, and quantise them to int8.

    export_onnx(sam, "out/")  ->  out/encoder.onnx, out/decoder.onnx, out/decoder_batch.onnx,
                                  out/metadata.json (+ .int8.onnx copies with quantize="int8")

decoder.onnx has segment-anything's interface (one prompt set per run); decoder_batch.onnx
runs many prompt sets of one image at once, without upsampling, for the automatic mask
generator.

Every file is checked after writing: `onnx.checker`, then onnxruntime against PyTorch
on inputs other than the ones used for export (another image size, another number of
points). Needs the `onnx` extra: onnx, onnxruntime, onnxscript.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import source_sha256
from ..errors import MobileSAMError, missing_extra
from ..modeling.sam import Sam
from ..onnx_predictor import DECODER_INPUTS, EXPORT_KEY, session
from ..utils.files import atomic_write_bytes, atomic_write_text, check_output_dir
from .modules import BatchDecoderOnnx, EncoderOnnx, RawImageEncoderOnnx, SamOnnxDecoder, folded_copy

MIN_OPSET = 17  # the exporter's translation library targets 18; 17 converts cleanly, older ones do not
DECODER_OUTPUTS = ("masks", "iou_predictions", "low_res_masks")
BATCH_INPUTS = ("image_embeddings", "point_coords", "point_labels")
BATCH_OUTPUTS = ("iou_predictions", "low_res_masks")


@dataclass
class ExportReport:
    files: dict[str, Path] = field(default_factory=dict)
    checks: dict[str, float] = field(default_factory=dict)  # max |onnx - torch| per check


def _require_onnx():
    try:
        import onnx
        import onnxruntime
        import onnxscript  # noqa: F401  (the exporter needs it)
    except ImportError:
        raise missing_extra("onnx, onnxruntime and onnxscript", "onnx") from None
    return onnx, onnxruntime


def check_close(runtime: str, name: str, ours, ref) -> float:
    """The parity fixture's rule, max |diff| <= 1e-3 * max(1, max |ref|), for an exported
    file's output (`ours`, array or CPU tensor) against PyTorch's: the max difference, or
    an error naming the runtime and the output."""
    ours, ref = np.asarray(ours), np.asarray(ref)
    diff = float(np.abs(ours - ref).max())
    if diff > 1e-3 * max(1.0, float(np.abs(ref).max())):
        raise MobileSAMError(f"{runtime} check failed for {name}: max difference {diff:.3g} to PyTorch")
    return diff


def _close(name: str, ours: np.ndarray, ref: np.ndarray, report: ExportReport) -> None:
    report.checks[name] = check_close("ONNX", name, ours, ref)


def _export(module: torch.nn.Module, args: tuple, path: Path, opset: int, **kwargs: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # Autograd stays on: the fused oneDNN CPU kernels only run without it, and they
        # have no ONNX translation.
        torch.onnx.export(
            module, args, str(tmp), dynamo=True, opset_version=opset, external_data=False, **kwargs
        )
    tmp.replace(path)


def decoder_inputs(sam: Sam, n_points: int, orig: tuple[int, int], seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    grid = sam.prompt_encoder.image_embedding_size
    labels = torch.randint(0, 2, (1, n_points), generator=g).float()
    labels[0, -1] = -1  # a padding point, as the web demo adds
    return {
        "image_embeddings": torch.randn(1, 256, *grid, generator=g),
        "point_coords": torch.rand(1, n_points, 2, generator=g) * sam.img_size,
        "point_labels": labels,
        "mask_input": torch.randn(1, 1, 4 * grid[0], 4 * grid[1], generator=g),
        "has_mask_input": torch.tensor([float(seed % 2)]),
        "orig_im_size": torch.tensor(orig, dtype=torch.float),
    }


def _batch_inputs(sam: Sam, batch: int, n_points: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    grid = sam.prompt_encoder.image_embedding_size
    labels = torch.randint(0, 2, (batch, n_points), generator=g).float()
    labels[:, -1] = -1
    return {
        "image_embeddings": torch.randn(1, 256, *grid, generator=g),
        "point_coords": torch.rand(batch, n_points, 2, generator=g) * sam.img_size,
        "point_labels": labels,
    }


def export_onnx(
    sam: Sam,
    out_dir: str | PathLike,
    opset: int = 18,
    raw_image_encoder: bool | str = False,
    return_single_mask: bool = False,
    quantize: str | None = None,
    checkpoint: str | PathLike | None = None,
    model_type: str = "vit_t",
) -> ExportReport:
    """Write encoder.onnx, decoder.onnx (+ int8 copies) and metadata.json into `out_dir`.

    raw_image_encoder: False (the encoder takes the preprocessed 1x3xSxS tensor), True or
    "uint8" (HxWx3 uint8 of any size), "float32" (HxWx3 float32 0-255, what samexporter-
    style clients feed). Every file carries the weights' digest (`mobilesam.weights_sha256`
    in its ONNX metadata, and metadata.json), so files of two exports are not mixed.
    """
    onnx, _ = _require_onnx()
    raw_dtype = {True: "uint8", "uint8": "uint8", "float32": "float32", False: None}.get(
        raw_image_encoder, "?"
    )
    if raw_dtype == "?":
        raise MobileSAMError(
            f"raw_image_encoder must be False, True, 'uint8' or 'float32', got {raw_image_encoder!r}"
        )
    if opset < MIN_OPSET:
        raise MobileSAMError(f"opset {opset} is not supported: use {MIN_OPSET} or newer (default 18)")
    if quantize not in (None, "int8"):
        raise MobileSAMError(f"quantize must be 'int8' or nothing, got {quantize!r}")
    out, report = check_output_dir(out_dir), ExportReport()
    digest = weights_digest(sam)
    sam = folded_copy(sam.cpu())

    enc_path, dec_path = out / "encoder.onnx", out / "decoder.onnx"
    g = torch.Generator().manual_seed(0)
    if raw_dtype:
        encoder = RawImageEncoderOnnx(sam).eval()
        dim = torch.export.Dim
        dynamic = {"image": {0: dim("height", min=16, max=16384), 1: dim("width", min=16, max=16384)}}
        dtype = getattr(torch, raw_dtype)
        example = torch.randint(0, 256, (600, 900, 3), dtype=torch.uint8, generator=g).to(dtype)
        _export(
            encoder,
            (example,),
            enc_path,
            opset,
            input_names=["image"],
            output_names=["image_embeddings"],
            dynamic_shapes=dynamic,
        )
        checks = [
            torch.randint(0, 256, (s, 2 * s // 3 + 5, 3), dtype=torch.uint8, generator=g).to(dtype)
            for s in (480, 1100)
        ]
    else:
        encoder = EncoderOnnx(sam).eval()
        example = torch.randn(1, 3, sam.img_size, sam.img_size, generator=g)
        _export(
            encoder, (example,), enc_path, opset, input_names=["image"], output_names=["image_embeddings"]
        )
        checks = [torch.randn(1, 3, sam.img_size, sam.img_size, generator=g)]

    decoder = SamOnnxDecoder(sam, return_single_mask).eval()
    inputs = decoder_inputs(sam, 5, (1200, 1800), seed=0)
    dynamic = {k: None for k in inputs} | {
        "point_coords": {1: "num_points"},
        "point_labels": {1: "num_points"},
    }
    _export(
        decoder,
        tuple(inputs.values()),
        dec_path,
        opset,
        input_names=list(DECODER_INPUTS),
        output_names=list(DECODER_OUTPUTS),
        dynamic_shapes=dynamic,
    )

    batch_path = out / "decoder_batch.onnx"
    batch_decoder = BatchDecoderOnnx(sam).eval()
    binputs = _batch_inputs(sam, 6, 2, seed=0)
    _export(
        batch_decoder,
        tuple(binputs.values()),
        batch_path,
        opset,
        input_names=list(BATCH_INPUTS),
        output_names=list(BATCH_OUTPUTS),
        dynamic_shapes={
            "image_embeddings": None,
            "point_coords": {0: "batch", 1: "num_points"},
            "point_labels": {0: "batch", 1: "num_points"},
        },
    )

    for path in (enc_path, dec_path, batch_path):
        onnx.checker.check_model(str(path))
    enc_session, dec_session, batch_session = session(enc_path), session(dec_path), session(batch_path)
    with torch.no_grad():
        for x in checks:
            _close(
                f"encoder[{tuple(x.shape)}]",
                enc_session.run(None, {"image": x.numpy()})[0],
                encoder(x).numpy(),
                report,
            )
        for n, size, seed in ((2, (770, 769), 1), (7, (480, 640), 2)):
            inp = decoder_inputs(sam, n, size, seed)
            got = dec_session.run(None, {k: v.numpy() for k, v in inp.items()})
            for name, ours, ref in zip(DECODER_OUTPUTS, got, decoder(*inp.values())):
                _close(f"decoder.{name}[{n} points, {size}]", ours, ref.numpy(), report)
        for b, n, seed in ((1, 3, 3), (9, 1, 4)):
            inp = _batch_inputs(sam, b, n, seed)
            got = batch_session.run(None, {k: v.numpy() for k, v in inp.items()})
            for name, ours, ref in zip(BATCH_OUTPUTS, got, batch_decoder(*inp.values())):
                _close(f"decoder_batch.{name}[{b}x{n} points]", ours, ref.numpy(), report)
    report.files.update(encoder=enc_path, decoder=dec_path, decoder_batch=batch_path)

    if quantize == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        for name, path in (
            ("encoder_int8", enc_path),
            ("decoder_int8", dec_path),
            ("decoder_batch_int8", batch_path),
        ):
            target = path.with_suffix(".int8.onnx")
            quantize_dynamic(str(path), str(target), weight_type=QuantType.QInt8)
            session(target)  # loads and runs in onnxruntime
            report.files[name] = target

    meta = {
        "model_type": model_type,
        "source_checkpoint": str(checkpoint) if checkpoint else None,
        "source_sha256": source_sha256(checkpoint) if checkpoint else None,
        "opset": opset,
        "img_size": sam.img_size,
        "pixel_mean": sam.pixel_mean.flatten().tolist(),
        "pixel_std": sam.pixel_std.flatten().tolist(),
        "encoder": {"file": enc_path.name, **encoder_description(sam, raw_dtype)},
        "decoder": {
            "file": dec_path.name,
            "interface": "segment-anything ONNX (utils/onnx.py SamOnnxModel)",
            "inputs": list(DECODER_INPUTS),
            "outputs": list(DECODER_OUTPUTS),
            "point_coords": f"1xNx2 float32, (x, y) in the resized {sam.img_size}-pixel frame",
            "point_labels": "1xN float32: 1 foreground, 0 background, -1 padding, 2/3 box corners",
            "return_single_mask": return_single_mask,
        },
        "decoder_batch": {
            "file": batch_path.name,
            "inputs": list(BATCH_INPUTS),
            "outputs": list(BATCH_OUTPUTS),
            "point_coords": "BxNx2 float32, B prompt sets of one image, conventions as decoder.onnx",
            "outputs_note": "all four mask tokens (single-mask first), low resolution, not upsampled",
        },
        "weights_sha256": digest,
        "int8": {k: v.name for k, v in report.files.items() if k.endswith("int8")},
        "checks_max_abs_diff": report.checks,
        "torch": torch.__version__,
    }
    for path in report.files.values():
        _stamp(onnx, path, digest)
    report.files["metadata"] = atomic_write_text(out / "metadata.json", json.dumps(meta, indent=2))
    return report


def encoder_description(sam: Sam, raw_dtype: str | None = None) -> dict[str, str]:
    """metadata.json's words for an exported encoder's input and output at `sam`'s input
    size (S: 1x3xSxS in, 1x256x(S/16)x(S/16) out); `raw_dtype`: the raw-image encoder's."""
    size, grid = sam.img_size, sam.prompt_encoder.image_embedding_size
    if raw_dtype:
        given = f"image: HxWx3 {raw_dtype} RGB 0-255, any size (resize, normalisation, padding in the graph)"
    else:
        given = (
            f"image: 1x3x{size}x{size} float32, RGB resized so the longest side is {size}, "
            "(x - pixel_mean) / pixel_std, zero-padded at the bottom and right"
        )
    return {"input": given, "output": f"image_embeddings: 1x256x{grid[0]}x{grid[1]} float32"}


def weights_digest(sam: Sam) -> str:
    """SHA-256 of the model's input size and state dict (names, shapes, dtypes and bytes),
    whatever file it came from."""
    digest = hashlib.sha256(f"img_size:{sam.img_size}".encode())
    for name, tensor in sam.state_dict().items():
        t = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{tuple(tensor.shape)}:{t.dtype}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _stamp(onnx, path: Path, digest: str) -> None:
    """Record the weights' digest in an exported file's metadata (rewritten atomically)."""
    model = onnx.load(str(path))
    del model.metadata_props[:]
    model.metadata_props.add(key=EXPORT_KEY, value=digest)
    atomic_write_bytes(path, model.SerializeToString())
