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

from .errors import MobileSAMError, PromptError
from .image_io import ImageSource, load_image, rgb_array, shrink, source_name
from .prompts import parse_float, parse_int, parse_prompts, pick_candidates, point_arrays, wants_multimask
from .result import SegmentationResult
from .transforms import PIXEL_MEAN, PIXEL_STD, ResizeLongestSide

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


class OnnxPredictor:
    """Same names, arguments, shapes and semantics as `SamPredictor`'s numpy API.

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
        meta_path = folder / "metadata.json"
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        self.img_size = int(meta.get("img_size", 1024))
        self.pixel_mean = np.array(meta.get("pixel_mean", PIXEL_MEAN), dtype=np.float32)
        self.pixel_std = np.array(meta.get("pixel_std", PIXEL_STD), dtype=np.float32)
        self.raw_encoder = self.encoder.get_inputs()[0].type == "tensor(uint8)"
        self.transform = ResizeLongestSide(self.img_size)
        self.reset_image()

    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        """Embed an HxWx3 uint8 image in `image_format` ("RGB" or "BGR")."""
        image = rgb_array(image, image_format)
        self.reset_image()
        self.original_size = image.shape[:2]
        self.input_size = self.transform.get_preprocess_shape(*image.shape[:2], self.img_size)
        if self.raw_encoder:
            x = image
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
        if not self.is_image_set:
            raise RuntimeError("An image must be set with .set_image(...) before mask prediction.")
        coords, labels = np.zeros((0, 2)), np.zeros(0)
        if point_coords is not None:
            coords, labels = point_arrays(point_coords, point_labels)
            coords = self.transform.apply_coords(coords, self.original_size)
            labels = labels.astype(float)
        if box is not None:
            corners = self.transform.apply_boxes(
                np.asarray(box, dtype=float).reshape(1, 4), self.original_size
            )
            coords = np.concatenate([coords, corners.reshape(2, 2)])
            labels = np.concatenate([labels, [2, 3]])
        else:  # segment-anything pads point prompts with a "not a point"
            coords = np.concatenate([coords, [[0.0, 0.0]]])
            labels = np.concatenate([labels, [-1]])
        masks, scores, low_res = self._decode(coords, labels, mask_input, self.original_size)
        if masks.shape[1] == 4:  # all mask tokens: pick as SamPredictor does
            sel = slice(1, None) if multimask_output else slice(0, 1)
            masks, scores, low_res = masks[:, sel], scores[:, sel], low_res[:, sel]
        if not return_logits:
            masks = masks > 0.0
        return masks[0], scores[0], low_res[0]

    def _decode(
        self, coords: np.ndarray, labels: np.ndarray, mask_input: np.ndarray | None, out_size: tuple[int, int]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One decoder run: prompts in the model frame -> logits at out_size, scores, low-res."""
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
        return tuple(self.decoder.run(None, feed))

    def decode_batch(self, coords: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """B prompt sets of the current image at once (model frame, padding included):
        coords BxNx2, labels BxN -> IoU predictions Bx4 and low-res logits Bx4x256x256 of
        all four mask tokens (single-mask first). Needs decoder_batch.onnx."""
        if self.batch_decoder is None:
            raise MobileSAMError(
                "this ONNX folder has no decoder_batch.onnx (needed by segment everything): "
                "export it again with `mobilesam export onnx`"
            )
        if not self.is_image_set:
            raise RuntimeError("An image must be set with .set_image(...) before mask prediction.")
        feed = {
            "image_embeddings": self.features,
            "point_coords": np.asarray(coords, np.float32),
            "point_labels": np.asarray(labels, np.float32),
        }
        iou, low_res = self.batch_decoder.run(None, feed)
        return iou, low_res

    def segment_everything(self, image: ImageSource, **options: object) -> SegmentationResult:
        """`MobileSAM.segment_everything` on the ONNX files (same options and results).
        The generator's mask post-processing still uses torch, so this needs it installed."""
        from .api import everything

        return everything(self, image, **options)

    def segment(
        self,
        image: ImageSource,
        input_box: object = None,
        input_point: object = None,
        input_point_label: object = None,
        mask_id: object = None,
        input_size_percent: object = 100,
    ) -> SegmentationResult:
        """`MobileSAM.segment` on the ONNX files: the same parameters, prompts and results
        (one decoder run per box: segment-anything's ONNX decoder takes one prompt set)."""
        rgb = load_image(image)
        h, w = rgb.shape[:2]
        prompts = parse_prompts((h, w), input_box, input_point, input_point_label)
        if prompts.empty:
            raise PromptError(
                "no prompt given: pass input_box and/or input_point, or call segment_everything"
            )
        mid = None if mask_id is None or mask_id == "" else parse_int(mask_id, "mask_id", 1, 3)
        percent = parse_float(input_size_percent, "input_size_percent", 1, 100)
        self.set_image(shrink(rgb, percent))
        small = self.original_size
        scale = np.array([small[1] / w, small[0] / h])
        multimask = wants_multimask(prompts, mid)
        coords = (
            np.zeros((0, 2))
            if prompts.points is None
            else self.transform.apply_coords(prompts.points * scale, small)
        )
        labels = np.zeros(0) if prompts.labels is None else prompts.labels.astype(float)
        masks, scores, low_res = [], [], []
        for box in [None] if prompts.boxes is None else prompts.boxes:
            if box is None:  # points only: padded with a "not a point", as SamPredictor does
                c, lab = np.concatenate([coords, [[0.0, 0.0]]]), np.concatenate([labels, [-1]])
            else:
                corners = self.transform.apply_boxes(box.reshape(1, 4) * np.tile(scale, 2), small).reshape(
                    2, 2
                )
                c, lab = np.concatenate([coords, corners]), np.concatenate([labels, [2, 3]])
            m, sc, lo = (x[0] for x in self._decode(c, lab, None, (h, w)))
            if m.shape[0] == 4:
                m, sc, lo = (x[1:] if multimask else x[:1] for x in (m, sc, lo))
            masks.append(m), scores.append(sc), low_res.append(lo)
        scores, masks, low_res = np.stack(scores), np.stack(masks), np.stack(low_res)
        if multimask and scores.shape[1] == 3:
            pick = pick_candidates(scores, mid)
            rows = np.arange(len(scores))
            masks, scores, low_res, ids = masks[rows, pick], scores[rows, pick], low_res[rows, pick], pick + 1
        else:
            masks, scores, low_res, ids = (
                masks[:, 0],
                scores[:, 0],
                low_res[:, 0],
                np.zeros(len(scores), np.int64),
            )
        return SegmentationResult(
            image=rgb,
            masks=masks > 0.0,
            scores=scores,
            mask_ids=ids,
            low_res_logits=low_res,
            prompts=prompts,
            file_name=source_name(image),
        )

    def get_image_embedding(self) -> np.ndarray:
        if not self.is_image_set:
            raise RuntimeError("An image must be set with .set_image(...) to generate an embedding.")
        return self.features

    def reset_image(self) -> None:
        self.is_image_set = False
        self.features = None
        self.original_size = None
        self.input_size = None
