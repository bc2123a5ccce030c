"""`OnnxPredictor`: SamPredictor's numpy API on exported files, with onnxruntime alone.

Needs numpy, Pillow and onnxruntime; no torch (except `segment_everything`, whose mask
post-processing is the torch generator's). Reads a folder written by `mobilesam export
onnx` (encoder.onnx, decoder.onnx, decoder_batch.onnx, metadata.json); the encoder may
be the preprocessed or the raw-image variant.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path

import numpy as np

from .errors import MobileSAMError
from .exported_predictor import ExportedPredictor, read_metadata

EXPORT_KEY = "mobilesam.weights_sha256"  # ONNX metadata: the digest of the weights a file was exported from

DECODER_INPUTS = (
    "image_embeddings",
    "point_coords",
    "point_labels",
    "mask_input",
    "has_mask_input",
    "orig_im_size",
)


def session(path: str | PathLike, threads: int | None = None):
    """An onnxruntime CPU session, with a clear error for a missing or non-ONNX file."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise MobileSAMError(
            "onnxruntime is needed for this; install it with: pip install onnxruntime"
        ) from None
    path = Path(path)
    if not path.is_file():
        hint = (
            " (int8 copies come from `mobilesam export onnx --quantize int8`)"
            if ".int8." in path.name
            else ""
        )
        raise MobileSAMError(f"ONNX file not found: {path}{hint}")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise MobileSAMError(f"{path} is not a loadable ONNX model: {str(exc).splitlines()[0]}") from exc


def check_pair(encoder, decoder) -> None:
    """Fail clearly if the encoder's embedding does not fit the decoder's input (paths or sessions)."""
    enc = encoder if hasattr(encoder, "get_outputs") else session(encoder)
    dec = decoder if hasattr(decoder, "get_inputs") else session(decoder)
    encoder, decoder = _label(encoder), _label(decoder)
    names = [i.name for i in dec.get_inputs()]
    if names[: len(DECODER_INPUTS)] != list(DECODER_INPUTS):
        raise MobileSAMError(
            f"{decoder} does not have segment-anything's decoder inputs {DECODER_INPUTS}: {names}"
        )
    out, want = enc.get_outputs()[0].shape, dec.get_inputs()[0].shape
    if len(out) != len(want) or any(
        isinstance(a, int) and isinstance(b, int) and a != b for a, b in zip(out, want)
    ):
        raise MobileSAMError(f"{encoder} outputs embeddings of shape {out}, but {decoder} expects {want}")


def _label(model: object) -> str:
    """A path, or the file an onnxruntime session was loaded from."""
    return str(getattr(model, "_model_path", None) or model)


def check_same_export(sessions: dict, expected: str | None) -> None:
    """Fail clearly if files of a folder come from different exports: each file's
    `EXPORT_KEY` metadata must agree with the others and with metadata.json (files from
    before the digest was recorded carry none and are not checked)."""
    stamps = {name: s.get_modelmeta().custom_metadata_map.get(EXPORT_KEY) for name, s in sessions.items()}
    if expected:
        stamps["metadata.json"] = expected
    found = {v for v in stamps.values() if v}
    if len(found) > 1:
        detail = ", ".join(f"{name}: {(v or 'none')[:12]}" for name, v in stamps.items())
        raise MobileSAMError(
            f"these files come from different exports (weights digests {detail}); export again into one folder"
        )


class OnnxPredictor(ExportedPredictor):
    """Same names, arguments, shapes and semantics as `SamPredictor`'s numpy API, and the
    onnxruntime backend of `backend.Predictor` (`segment` / `segment_everything` are the
    high-level API's, `highlevel.Segmenter`).

    onnx_dir: folder with encoder.onnx and decoder.onnx (int8=True: the .int8 copies).
    """

    def __init__(self, onnx_dir: str | PathLike, threads: int | None = None, int8: bool = False) -> None:
        folder = Path(onnx_dir)
        suffix = ".int8.onnx" if int8 else ".onnx"
        self.encoder = session(folder / f"encoder{suffix}", threads)
        self.decoder = session(folder / f"decoder{suffix}", threads)
        check_pair(self.encoder, self.decoder)
        batch_path = folder / f"decoder_batch{suffix}"
        # Many prompt sets per run, for the automatic mask generator (older exports lack it).
        self.batch_decoder = session(batch_path, threads) if batch_path.is_file() else None
        meta = read_metadata(folder, "mobilesam export onnx")
        check_same_export(
            {
                p.name: s
                for p, s in (
                    (folder / f"encoder{suffix}", self.encoder),
                    (folder / f"decoder{suffix}", self.decoder),
                    (batch_path, self.batch_decoder),
                )
                if s
            },
            meta.get("weights_sha256"),
        )
        image_input = self.encoder.get_inputs()[0]
        # The raw-image variants take HxWx3 (uint8, or float32 0-255); else the preprocessed tensor.
        raw_dtype = np.float32 if image_input.type == "tensor(float)" else np.uint8
        self._configure(meta, "onnx", int8, raw_encoder=len(image_input.shape) == 3, raw_dtype=raw_dtype)
        side = image_input.shape[2:] if len(image_input.shape) == 4 else []
        if any(isinstance(s, int) and s != self.img_size for s in side):
            raise MobileSAMError(
                f"{folder}: encoder{suffix} takes {side[0]}x{side[1]} images, metadata.json says "
                f"img_size {self.img_size}: files of two exports? export again"
            )

    def _encode(self, x: np.ndarray) -> np.ndarray:
        return self.encoder.run(None, {self.encoder.get_inputs()[0].name: x})[0]

    def _run_decoder(self, feed: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return tuple(self.decoder.run(None, feed))

    def _run_batch_decoder(self, feed: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        if self.batch_decoder is None:
            raise MobileSAMError(
                "this ONNX folder has no decoder_batch.onnx (needed by segment everything): "
                "export it again with `mobilesam export onnx`"
            )
        iou, low_res = self.batch_decoder.run(None, feed)
        return iou, low_res
