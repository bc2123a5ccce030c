"""`OnnxPredictor`: SamPredictor's numpy API on exported files, with onnxruntime alone.

Needs numpy, Pillow and onnxruntime; no torch (except `segment_everything`, whose mask
post-processing is the torch generator's). Reads a folder written by `mobilesam export
onnx` (encoder.onnx, decoder.onnx, decoder_batch.onnx, metadata.json); the encoder may
be the preprocessed or the raw-image variant.
"""

from __future__ import annotations

import json
from os import PathLike
from pathlib import Path

import numpy as np

from .backend import PromptMasks
from .errors import MobileSAMError, NoImageError
from .image_io import ImageSource, rgb_array
from .prompts import pick_candidates, point_arrays
from .result import SegmentationResult
from .transforms import PIXEL_MEAN, PIXEL_STD, ResizeLongestSide

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
        raise MobileSAMError(f"ONNX file not found: {path}")
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


class OnnxPredictor:
    """Same names, arguments, shapes and semantics as `SamPredictor`'s numpy API, and the
    onnxruntime backend of `backend.Predictor` (`segment` / `segment_everything` are the
    high-level API's, `highlevel.Segmenter`).

    onnx_dir: folder with encoder.onnx and decoder.onnx (int8=True: the .int8 copies).
    """

    mask_threshold = 0.0
    device = "cpu"

    def __init__(self, onnx_dir: str | PathLike, threads: int | None = None, int8: bool = False) -> None:
        folder = Path(onnx_dir)
        suffix = ".int8.onnx" if int8 else ".onnx"
        self.encoder = session(folder / f"encoder{suffix}", threads)
        self.decoder = session(folder / f"decoder{suffix}", threads)
        check_pair(self.encoder, self.decoder)
        batch_path = folder / f"decoder_batch{suffix}"
        # Many prompt sets per run, for the automatic mask generator (older exports lack it).
        self.batch_decoder = session(batch_path, threads) if batch_path.is_file() else None
        meta_path = folder / "metadata.json"
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
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
        self.img_size = int(meta.get("img_size", 1024))
        self.pixel_mean = np.array(meta.get("pixel_mean", PIXEL_MEAN), dtype=np.float32)
        self.pixel_std = np.array(meta.get("pixel_std", PIXEL_STD), dtype=np.float32)
        image_input = self.encoder.get_inputs()[0]
        # The raw-image variants take HxWx3 (uint8, or float32 0-255); else the preprocessed tensor.
        self.raw_encoder = len(image_input.shape) == 3
        self.raw_dtype = np.float32 if image_input.type == "tensor(float)" else np.uint8
        self.transform = ResizeLongestSide(self.img_size)
        self._segmenter = None
        self.reset_image()

    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        """Embed an HxWx3 uint8 image in `image_format` ("RGB" or "BGR")."""
        image = rgb_array(image, image_format)
        self.reset_image()
        self.original_size = image.shape[:2]
        self.input_size = self.transform.get_preprocess_shape(*image.shape[:2], self.img_size)
        if self.raw_encoder:
            x = image.astype(self.raw_dtype)
        else:
            resized = self.transform.apply_image(image).astype(np.float32)
            x = (resized - self.pixel_mean) / self.pixel_std
            x = np.pad(x, ((0, self.img_size - x.shape[0]), (0, self.img_size - x.shape[1]), (0, 0)))
            x = np.ascontiguousarray(x.transpose(2, 0, 1)[None])
        self.features = self.encoder.run(None, {self.encoder.get_inputs()[0].name: x})[0]
        self.is_image_set = True

    def predict(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """As `SamPredictor.predict`: prompts in original-image pixels; returns masks CxHxW,
        scores C, low-res logits Cx256x256, C = 3 with multimask_output else 1."""
        self._require_image()
        coords, labels = np.zeros((0, 2)), np.zeros(0)
        if point_coords is not None:
            coords, labels = point_arrays(point_coords, point_labels)
            coords = self.transform.apply_coords(coords, self.original_size)
            labels = labels.astype(float)
        if box is not None:
            box = self.transform.apply_boxes(np.asarray(box, dtype=float).reshape(1, 4), self.original_size)
        masks, scores, low_res = self._decode(
            coords, labels, box, mask_input, self.original_size, multimask_output
        )
        if not return_logits:
            masks = masks > 0.0
        return masks[0], scores[0], low_res[0]

    def _decode(
        self,
        coords: np.ndarray,
        labels: np.ndarray,
        box: np.ndarray | None,
        mask_input: np.ndarray | None,
        out_size: tuple[int, int],
        multimask: bool,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One decoder.onnx run for one prompt set in the model frame (points Nx2 with N
        labels, an optional XYXY box) -> logits at out_size, scores and low-res logits, each
        1xC: the three multi-mask candidates or the single-mask output (C = 1 when the
        export returns a single mask). As segment-anything's predictor feeds its decoder,
        a box goes in as two corner points labelled 2 and 3, and points alone get a
        padding point labelled -1."""
        if box is None:
            coords, labels = np.concatenate([coords, [[0.0, 0.0]]]), np.concatenate([labels, [-1]])
        else:
            coords = np.concatenate([coords, np.reshape(box, (2, 2))])
            labels = np.concatenate([labels, [2, 3]])
        has_mask = mask_input is not None
        mask = (
            np.asarray(mask_input, np.float32).reshape(1, 1, 256, 256)
            if has_mask
            else np.zeros((1, 1, 256, 256), np.float32)
        )
        feed = {
            "image_embeddings": self.features,
            "point_coords": coords[None].astype(np.float32),
            "point_labels": labels[None].astype(np.float32),
            "mask_input": mask,
            "has_mask_input": np.array([float(has_mask)], np.float32),
            "orig_im_size": np.array(out_size, np.float32),
        }
        outputs = tuple(self.decoder.run(None, feed))
        if outputs[0].shape[1] == 4:  # all mask tokens: pick as SamPredictor does
            sel = slice(1, None) if multimask else slice(0, 1)
            outputs = tuple(x[:, sel] for x in outputs)
        return outputs

    def decode_batch(self, coords: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """B prompt sets of the current image at once (model frame, padding included):
        coords BxNx2, labels BxN -> IoU predictions Bx4 and low-res logits Bx4x256x256 of
        all four mask tokens (single-mask first). Needs decoder_batch.onnx."""
        if self.batch_decoder is None:
            raise MobileSAMError(
                "this ONNX folder has no decoder_batch.onnx (needed by segment everything): "
                "export it again with `mobilesam export onnx`"
            )
        self._require_image()
        feed = {
            "image_embeddings": self.features,
            "point_coords": np.asarray(coords, np.float32),
            "point_labels": np.asarray(labels, np.float32),
        }
        iou, low_res = self.batch_decoder.run(None, feed)
        return iou, low_res

    def decode_sets(
        self,
        coords: np.ndarray | None,
        labels: np.ndarray | None,
        boxes: np.ndarray | None,
        out_size: tuple[int, int],
        multimask: bool,
        mask_id: int | None,
    ) -> PromptMasks:
        """`backend.Predictor.decode_sets`: one decoder.onnx run per prompt set (segment-
        anything's ONNX decoder takes one set; it upsamples to `out_size` in the graph)."""
        self._require_image()
        n = len(boxes) if boxes is not None else len(coords)
        parts = []  # packed one set at a time: memory stays bounded for many boxes
        for i in range(n):
            c = np.zeros((0, 2)) if coords is None else np.asarray(coords[i], float)
            lab = np.zeros(0) if labels is None else np.asarray(labels[i], float)
            box = None if boxes is None else boxes[i]
            m, sc, lo = (x[0] for x in self._decode(c, lab, box, None, out_size, multimask))
            chosen = multimask and len(sc) == 3
            k = int(pick_candidates(sc[None], mask_id)[0]) if chosen else 0
            mask_id_out = np.array([k + 1 if chosen else 0], np.int64)
            parts.append(
                PromptMasks.pack(
                    m[k : k + 1] > self.mask_threshold, sc[k : k + 1], mask_id_out, lo[k : k + 1]
                )
            )
        return PromptMasks.concatenate(parts)

    def decode_points(self, coords: object, pred_iou_thresh: float) -> tuple:
        """`backend.Predictor.decode_points` on decoder_batch.onnx (all point prompts of a
        chunk in one run); needs torch for the tensors it returns, as the generator does."""
        import torch

        from .utils.amg import iou_filter

        coords = np.asarray(coords, np.float32)
        # Each point padded with a "not a point", as SamPredictor does; tokens 1-3.
        pad = np.zeros((len(coords), 1, 2), np.float32)
        prompts = np.concatenate([coords[:, None], pad], axis=1)
        labels = np.tile(np.array([[1.0, -1.0]], np.float32), (len(coords), 1))
        iou, low_res = (torch.from_numpy(x[:, 1:]) for x in self.decode_batch(prompts, labels))
        rows, kept, point_idx = iou_filter(iou, pred_iou_thresh)
        return low_res[rows][kept], iou[rows][kept], point_idx

    def segment(self, image: ImageSource, *args: object, **kwargs: object) -> SegmentationResult:
        """`MobileSAM.segment` on the ONNX files: the same parameters, prompts and results."""
        return self.segmenter.segment(image, *args, **kwargs)

    def segment_everything(self, image: ImageSource, **options: object) -> SegmentationResult:
        """`MobileSAM.segment_everything` on the ONNX files (same options and results).
        The generator's mask post-processing still uses torch, so this needs it installed."""
        return self.segmenter.segment_everything(image, **options)

    @property
    def segmenter(self):
        """The high-level API over this predictor (made once, keeps the last embedding)."""
        if self._segmenter is None:
            from .highlevel import Segmenter

            self._segmenter = Segmenter(self)
        return self._segmenter

    def get_image_embedding(self) -> np.ndarray:
        self._require_image()
        return self.features

    def reset_image(self) -> None:
        self.is_image_set = False
        self.features = None
        self.original_size = None
        self.input_size = None

    def _require_image(self) -> None:
        if not self.is_image_set or self.features is None:
            raise NoImageError("An image must be set with .set_image(...) before mask prediction.")
