"""`ExportedPredictor`: SamPredictor's numpy API on exported encoder and decoder files.

The runtime-independent part of `OnnxPredictor` (onnxruntime) and `ExecuTorchPredictor`
(ExecuTorch): preprocessing, prompt handling as segment-anything's predictor feeds its
decoder, the choice of candidates, and the `backend.Predictor` interface for the
generator and the high-level API. A subclass sets the attributes `_configure` needs and
runs the files: `_encode`, `_run_decoder`, `_run_batch_decoder`. Needs numpy and Pillow.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .backend import PromptMasks
from .errors import MobileSAMError, NoImageError, PromptError
from .image_io import ImageSource, rgb_array
from .prompts import box_array, mask_input_array, pick_candidates, point_arrays
from .result import SegmentationResult
from .transforms import PIXEL_MEAN, PIXEL_STD, ResizeLongestSide


def read_metadata(folder: Path, tool: str) -> dict:
    """An export folder's metadata.json as a dict ({} if there is none), or a
    MobileSAMError saying it is broken and how to make it again (`tool`'s export)."""
    path = folder / "metadata.json"
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MobileSAMError(f"{path} is unreadable ({exc}): export again with `{tool}`") from None
    if not isinstance(meta, dict):
        raise MobileSAMError(
            f"{path} is no export's metadata (not a JSON object): export again with `{tool}`"
        )
    return meta


class ExportedPredictor:
    """Same names, arguments, shapes and semantics as `SamPredictor`'s numpy API, and a
    `backend.Predictor` (`segment` / `segment_everything` are the high-level API's)."""

    mask_threshold = 0.0
    device = "cpu"

    def _configure(
        self, meta: dict, backend: str, int8: bool, raw_encoder: bool = False, raw_dtype: type = np.uint8
    ) -> None:
        """Input conventions from an export's metadata.json; raw_encoder: the encoder takes
        HxWx3 pixels of `raw_dtype` (resize, normalisation, padding in the graph)."""
        self.img_size = int(meta.get("img_size", 1024))
        self._record = {
            "backend": backend,
            "model_type": meta.get("model_type"),
            "img_size": self.img_size,
            "precision": "int8" if int8 else "float32",
            "weights_sha256": meta.get("weights_sha256"),
        }
        self.pixel_mean = np.array(meta.get("pixel_mean", PIXEL_MEAN), dtype=np.float32)
        self.pixel_std = np.array(meta.get("pixel_std", PIXEL_STD), dtype=np.float32)
        self.raw_encoder, self.raw_dtype = raw_encoder, raw_dtype
        self.transform = ResizeLongestSide(self.img_size)
        self._segmenter = None
        self.reset_image()

    def _encode(self, x: np.ndarray) -> np.ndarray:
        """The encoder's input (1x3xSxS float32, or HxWx3 for a raw-image encoder) -> embedding."""
        raise NotImplementedError

    def _run_decoder(self, feed: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """decoder.onnx's inputs -> (masks at orig_im_size, iou_predictions, low_res_masks)."""
        raise NotImplementedError

    def _run_batch_decoder(self, feed: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """decoder_batch's inputs -> (iou_predictions Bx4, low_res_masks Bx4x256x256)."""
        raise NotImplementedError

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
        self.features = self._encode(x)
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
        scores C, low-res logits C x S/4 x S/4 (256 for 1024-px models), C = 3 with
        multimask_output else 1."""
        self._require_image()
        coords, labels = np.zeros((0, 2)), np.zeros(0)
        if point_coords is not None:
            coords, labels = point_arrays(point_coords, point_labels)
            coords = self.transform.apply_coords(coords, self.original_size)
            labels = labels.astype(float)
        if box is not None:
            box = self.transform.apply_boxes(box_array(box), self.original_size)
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
        """One decoder run for one prompt set in the model frame (points Nx2 with N
        labels, an optional XYXY box) -> logits at out_size, scores and low-res logits, each
        1xC: the three multi-mask candidates or the single-mask output (C = 1 when the
        export returns a single mask, chosen by SAM's SamOnnxModel rule: the best-scored
        candidate for fewer than three prompt tokens, else the single-mask token). As
        segment-anything's predictor feeds its decoder, a box goes in as two corner points
        labelled 2 and 3, and points alone get a padding point labelled -1."""
        if box is None:
            coords, labels = np.concatenate([coords, [[0.0, 0.0]]]), np.concatenate([labels, [-1]])
        else:
            coords = np.concatenate([coords, np.reshape(box, (2, 2))])
            labels = np.concatenate([labels, [2, 3]])
        has_mask = mask_input is not None
        side = self.img_size // 4  # the low-res mask: 256 for the usual 1024-px models
        mask = (
            mask_input_array(mask_input, (side, side))[None]
            if has_mask
            else np.zeros((1, 1, side, side), np.float32)
        )
        feed = {
            "image_embeddings": self.features,
            "point_coords": coords[None].astype(np.float32),
            "point_labels": labels[None].astype(np.float32),
            "mask_input": mask,
            "has_mask_input": np.array([float(has_mask)], np.float32),
            "orig_im_size": np.array(out_size, np.float32),
        }
        outputs = self._run_decoder(feed)
        if outputs[0].shape[1] == 4:  # all mask tokens: pick as SamPredictor does
            sel = slice(1, None) if multimask else slice(0, 1)
            outputs = tuple(x[:, sel] for x in outputs)
        return outputs

    def decode_batch(self, coords: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """B prompt sets of the current image at once (model frame, padding included):
        coords BxNx2, labels BxN -> IoU predictions Bx4 and low-res logits Bx4x256x256 of
        all four mask tokens (single-mask first). Needs the batch decoder."""
        self._require_image()
        feed = {
            "image_embeddings": self.features,
            "point_coords": np.asarray(coords, np.float32),
            "point_labels": np.asarray(labels, np.float32),
        }
        return self._run_batch_decoder(feed)

    def decode_sets(
        self,
        coords: np.ndarray | None,
        labels: np.ndarray | None,
        boxes: np.ndarray | None,
        out_size: tuple[int, int],
        multimask: bool,
        mask_id: int | None,
        mask_input: np.ndarray | None = None,
    ) -> PromptMasks:
        """`backend.Predictor.decode_sets`: one decoder run per prompt set (segment-
        anything's ONNX decoder takes one set)."""
        self._require_image()
        n = len(boxes) if boxes is not None else len(coords)
        parts = []  # packed one set at a time: memory stays bounded for many boxes
        for i in range(n):
            c = np.zeros((0, 2)) if coords is None else np.asarray(coords[i], float)
            lab = np.zeros(0) if labels is None else np.asarray(labels[i], float)
            box = None if boxes is None else boxes[i]
            mask = None if mask_input is None else mask_input[i]
            m, sc, lo = (x[0] for x in self._decode(c, lab, box, mask, out_size, multimask))
            if mask_id is not None and len(sc) != 3:
                raise PromptError(
                    f"mask_id {mask_id}: this export's decoder returns one mask per prompt "
                    "(exported with a single-mask output), not the three candidates to choose from"
                )
            chosen = multimask and len(sc) == 3
            k = int(pick_candidates(sc[None], mask_id)[0]) if chosen else 0
            mask_id_out = np.array([k + 1 if chosen else 0], np.int64)
            parts.append(
                PromptMasks.pack(
                    m[k : k + 1] > self.mask_threshold, sc[k : k + 1], mask_id_out, lo[k : k + 1]
                )
            )
        return PromptMasks.concatenate(parts)

    def decode_points(self, coords: object, pred_iou_thresh: float, precision: str = "float32") -> tuple:
        """`backend.Predictor.decode_points` on the batch decoder (all point prompts of a
        chunk in one run); needs torch for the tensors it returns, as the generator does.
        Only precision="float32": the exported decoder is float32."""
        import torch

        if precision != "float32":
            raise PromptError(
                f"precision={precision!r}: this backend's decoder is float32 (bf16 is PyTorch's)"
            )

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
        """`MobileSAM.segment` on the exported files: the same parameters, prompts and results."""
        return self.segmenter.segment(image, *args, **kwargs)

    def segment_everything(self, image: ImageSource, **options: object) -> SegmentationResult:
        """`MobileSAM.segment_everything` on the exported files (same options and results).
        The generator's mask post-processing still uses torch, so this needs it installed."""
        return self.segmenter.segment_everything(image, **options)

    def model_record(self) -> dict:
        """`Segmenter.model_record`: backend, model type, input size, int8 or float32
        encoder, and the export's checksum of the weights (metadata.json)."""
        return self._record

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
