"""`SamPredictor`: embed an image once, then segment it from prompts, many times.

Same names, arguments, shapes and semantics as segment-anything's predictor, so code
written for segment-anything or MobileSAM runs unchanged. The numpy layer (`set_image`,
`predict`) works in original-image pixels; the torch layer (`set_torch_image`,
`predict_torch`) takes prompts already in the resized frame (`self.transform`).
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from .backend import PromptMasks
from .engine import Engine
from .errors import NoImageError, PromptError
from .image_io import rgb_array
from .modeling.mask_decoder import MaskDecoder
from .modeling.sam import Sam, upscale_masks
from .modeling.transformer import ImageContext
from .options import check_decoder_precision
from .prompts import box_array, mask_input_array, pick_candidates, point_arrays
from .transforms import ResizeLongestSide
from .utils.amg import iou_filter
from .weights_state import WeightsState, unchanged

DECODE_SETS_CHUNK = 16  # prompt sets decoded and upsampled at once by `decode_sets` (memory bound)


class SamPredictor:
    """segment-anything's predictor, and the torch backend of `backend.Predictor`.

    engine: an `engine.Engine` to run the encoder and the decoder through (CUDA graphs,
    torch.compile); None runs the model eagerly. device_preprocess: resize the image on
    the model's device (`ResizeLongestSide.apply_image_uint8_torch`) instead of with
    PIL on the CPU; None: on for CUDA, where PIL's resize would take longer than the
    encoder.
    """

    def __init__(
        self, sam_model: Sam, engine: Engine | None = None, device_preprocess: bool | None = None
    ) -> None:
        self.model = sam_model
        self.engine = engine
        self.device_preprocess = device_preprocess
        self.transform = ResizeLongestSide(sam_model.img_size)
        self._context_key: tuple | None = None
        self._context: ImageContext | None = None
        self._image_pe: torch.Tensor | None = None
        self._bf16: dict = {}  # decode_points(precision="bf16"): the decoder copy, its context
        self._weights: WeightsState | None = None  # what the three caches above were computed from
        self.reset_image()

    @property
    def img_size(self) -> int:
        return self.model.img_size

    @property
    def mask_threshold(self) -> float:
        return self.model.mask_threshold

    @torch.no_grad()
    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        """Embed an HxWx3 uint8 image in `image_format` ("RGB" or "BGR")."""
        image = rgb_array(image, image_format)  # the model takes RGB
        on_device = self.device_preprocess
        if on_device is None:
            on_device = self.device.type == "cuda"
        if on_device:  # the uint8 pixels go over once, 4x smaller than floats
            pixels = torch.tensor(image, device=self.device)
            tensor = self.transform.apply_image_uint8_torch(pixels)
        else:
            resized = self.transform.apply_image(image)
            tensor = torch.as_tensor(resized, device=self.device).permute(2, 0, 1).contiguous()[None]
        self.set_torch_image(tensor, image.shape[:2])

    @torch.no_grad()
    def set_torch_image(self, transformed_image: torch.Tensor, original_image_size: tuple[int, ...]) -> None:
        """Embed a 1x3xhxw image already resized so that max(h, w) == img_size."""
        shape = tuple(transformed_image.shape)
        if len(shape) != 4 or shape[1] != 3 or max(shape[2:]) != self.model.img_size:
            raise PromptError(
                f"set_torch_image expects 1x3xHxW with longest side {self.model.img_size}, got {shape}"
            )
        self.reset_image()
        self.original_size = tuple(int(s) for s in original_image_size)
        self.input_size = (int(shape[2]), int(shape[3]))
        input_image = self.model.preprocess(transformed_image.float())
        if self.engine is not None:
            self.features = self.engine.encode(input_image)
        else:
            # A bfloat16 encoder (MobileSAM(precision="bf16")) feeds the float32 decoder.
            dtype = next(self.model.image_encoder.parameters()).dtype
            self.features = self.model.image_encoder(input_image.to(dtype)).float()
        self.is_image_set = True

    @property
    def image_pe(self) -> torch.Tensor:
        """The decoder's positional encoding of the embedding grid, 1x256x64x64: it depends
        on the model only, so it is computed once (1.6 ms here, against a 10 ms decoder)
        and again when the model's weights change, in float32 whatever autocast is on."""
        self._forget_if_weights_changed()
        if self._image_pe is None:
            with torch.inference_mode(), torch.autocast(self.device.type, enabled=False):
                self._image_pe = self.model.prompt_encoder.get_dense_pe()
        return self._image_pe

    @property
    def context(self) -> ImageContext:
        """The decoder's work that is the same for every prompt without a mask input.

        Computed from `self.features` when first needed and again whenever `features` is
        another tensor or was changed in place: code that stores `predictor.features` and
        assigns it back later (annotation tools caching embeddings) gets the masks of the
        embedding it assigned. Computed again, too, when the decoder's weights change
        (`_forget_if_weights_changed`).
        """
        return self._context_for(self.image_pe)

    def _context_for(self, image_pe: torch.Tensor) -> ImageContext:
        key = (self.features, _version(self.features), torch.is_autocast_enabled(self.device.type))
        if not _same_key(self._context_key, key):
            pe = self.model.prompt_encoder
            with torch.inference_mode():
                self._context = self.model.mask_decoder.prepare(self.features, image_pe, pe.dense_no_mask(1))
            self._context_key = key
        return self._context

    def _forget_if_weights_changed(self) -> None:
        """Drop what was computed from the prompt encoder's and the decoder's weights once
        they change: an optimizer step between validation passes, `load_state_dict` of
        another fine-tune, a replaced layer (see `WeightsState`), or another model."""
        modules = (self.model.prompt_encoder, self.model.mask_decoder)
        if unchanged(self._weights, *modules):
            return
        self._weights = WeightsState(*modules)
        self._image_pe = None
        self._context_key = self._context = None
        self._bf16 = {}

    def predict(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Segment the set image from prompts in original-image pixels.

        point_coords: Nx2 (x, y); point_labels: N (1 foreground, 0 background);
        box: 4 XYXY; mask_input: 1x256x256 low-res logits from an earlier call (256x256
        and 1x1x256x256 are taken too).
        Returns masks CxHxW (bool, or float32 logits with return_logits), scores C and
        low-res logits Cx256x256 (float32), with C = 3 if multimask_output else 1, in
        mask-token order.
        """
        self._require_image()
        coords_t = labels_t = box_t = mask_t = None
        if point_coords is not None:
            coords, labels = point_arrays(point_coords, point_labels)
            coords = self.transform.apply_coords(coords, self.original_size)
            coords_t = torch.as_tensor(coords, dtype=torch.float, device=self.device)[None]
            labels_t = torch.as_tensor(labels, dtype=torch.int, device=self.device)[None]
        if box is not None:
            box = self.transform.apply_boxes(box_array(box), self.original_size)
            box_t = torch.as_tensor(box, dtype=torch.float, device=self.device)
        if mask_input is not None:
            mask = mask_input_array(mask_input, self.model.prompt_encoder.mask_input_size)
            mask_t = torch.as_tensor(mask, dtype=torch.float, device=self.device)[None]
        masks, iou, low_res = self.predict_torch(
            coords_t, labels_t, box_t, mask_t, multimask_output, return_logits
        )
        # float32 also under autocast: numpy has no bfloat16.
        masks = masks[0] if masks.dtype == torch.bool else masks[0].float()
        return masks.cpu().numpy(), iou[0].float().cpu().numpy(), low_res[0].float().cpu().numpy()

    @torch.no_grad()
    def predict_torch(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Batched prompts in the resized frame (apply `self.transform` first).

        point_coords: BxNx2; point_labels: BxN; boxes: Bx4; mask_input: Bx1x256x256.
        Returns masks BxCxHxW, scores BxC, low-res logits BxCx256x256.
        """
        self._require_image()
        if point_coords is not None:
            coords, labels = tuple(point_coords.shape), getattr(point_labels, "shape", None)
            if len(coords) != 3 or coords[2] != 2 or labels is None or tuple(labels) != coords[:2]:
                raise PromptError(
                    f"predict_torch takes point_coords BxNx2 and point_labels BxN (a batch of "
                    f"prompt sets: [None] for one), got {coords} and {None if labels is None else tuple(labels)}"
                )
        low_res, iou = self.decode(point_coords, point_labels, boxes, mask_input, multimask_output)
        masks = self.model.postprocess_masks(low_res, self.input_size, self.original_size)
        if not return_logits:
            masks = masks > self.model.mask_threshold
        return masks, iou, low_res

    @torch.no_grad()  # predict_torch's tensors are ordinary ones, as upstream's
    def decode(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt encoder + mask decoder only: low-res logits BxCx256x256 and scores BxC."""
        self._require_image()
        image_pe = self.image_pe  # first: the one check of the weights per call
        if self.engine is not None and mask_input is None:
            return self.engine.decode(
                self.features, image_pe, point_coords, point_labels, boxes, multimask_output
            )
        points = (point_coords, point_labels) if point_coords is not None else None
        sparse, dense = self.model.prompt_encoder(points, boxes, mask_input)
        context = self._context_for(image_pe) if mask_input is None else None
        return self.model.mask_decoder(self.features, image_pe, sparse, dense, multimask_output, context)

    @torch.inference_mode()
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
        """`backend.Predictor.decode_sets`: B prompt sets in the model frame -> one mask each
        at `out_size`. Decoded and upsampled `DECODE_SETS_CHUNK` sets at a time, so memory
        stays bounded whatever the number of boxes."""
        self._require_image()
        n = len(boxes) if boxes is not None else len(coords)
        parts = []
        for start in range(0, n, DECODE_SETS_CHUNK):
            sl = slice(start, start + DECODE_SETS_CHUNK)
            c, lab, bx, m = (
                None if x is None else torch.as_tensor(x[sl], dtype=dt, device=self.device)
                for x, dt in (
                    (coords, torch.float),
                    (labels, torch.int),
                    (boxes, torch.float),
                    (mask_input, torch.float),
                )
            )
            low_res, scores = self.decode(c, lab, bx, None if m is None else m[:, None], multimask)
            low_res, scores, ids = pick(low_res.float(), scores.float(), multimask, mask_id)
            logits = upscale_masks(low_res[:, None], self.input_size, out_size, self.img_size)[:, 0]
            masks = (logits > self.mask_threshold).cpu().numpy()
            parts.append(PromptMasks.pack(masks, scores.cpu().numpy(), ids, low_res.cpu().numpy()))
        return PromptMasks.concatenate(parts)

    @torch.inference_mode()
    def decode_points(
        self, coords: torch.Tensor, pred_iou_thresh: float, precision: str = "float32"
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`backend.Predictor.decode_points`: one foreground point per prompt (Nx2, model
        frame) -> the multi-mask candidates with predicted IoU above `pred_iou_thresh`.
        Only prompts with a surviving candidate go through the upscaler.

        precision="bf16": decode with a bfloat16 copy of the mask decoder (outputs in
        float32): approximate, and faster where bfloat16 matmuls are (AVX512-BF16 CPUs,
        GPUs); docs/performance.md has its agreement with float32."""
        self._require_image()
        check_decoder_precision(precision, "precision")
        coords = coords.to(self.device, torch.float)
        labels = torch.ones(len(coords), 1, dtype=torch.int, device=self.device)
        if self.engine is not None and precision == "float32":  # all three candidates, then the filter
            low_res, iou = self.engine.decode(
                self.features, self.image_pe, coords[:, None], labels, None, True
            )
            rows, kept, point_idx = iou_filter(iou, pred_iou_thresh)
            return low_res[rows][kept], iou[rows][kept], point_idx
        sparse, _ = self.model.prompt_encoder((coords[:, None, :], labels), None, None)
        if precision == "bf16":
            decoder, context = self._bf16_decoder()
            sparse = sparse.to(torch.bfloat16)
        else:
            decoder, context = self.model.mask_decoder, self.context
        hs, src, size = decoder.run_transformer(None, None, sparse, None, context)
        iou = decoder.iou_prediction_head(hs[:, 0, :])[:, 1:].float()
        rows, kept, point_idx = iou_filter(iou, pred_iou_thresh)
        if len(rows) < len(iou):  # else no copy: src is 4 MB per prompt
            hs, src = hs[rows], src[rows]
        low_res = decoder.masks_from_tokens(hs, src, size, slice(1, None)).float()
        return low_res[kept], iou[rows][kept], point_idx

    def _bf16_decoder(self) -> tuple[MaskDecoder, ImageContext]:
        """A bfloat16 copy of the mask decoder, made again when the decoder's weights change
        (in place or replaced), and the image context for it, again when `features` does."""
        image_pe = self.image_pe  # first: drops the copy if the weights changed
        if "decoder" not in self._bf16:
            self._bf16 = {"decoder": copy.deepcopy(self.model.mask_decoder).to(torch.bfloat16)}
        features = (self.features, _version(self.features))
        if not _same_key(self._bf16.get("features"), features):
            bf16 = torch.bfloat16
            dense = self.model.prompt_encoder.dense_no_mask(1).to(bf16)
            self._bf16["context"] = self._bf16["decoder"].prepare(
                self.features.to(bf16), image_pe.to(bf16), dense
            )
            self._bf16["features"] = features
        return self._bf16["decoder"], self._bf16["context"]

    def warmup(self) -> None:
        """Run (and, with an engine on CUDA, capture) the common calls once on a blank
        image: encoding, one box, one point, one box per set; forgets the image after."""
        self.set_image(np.zeros((self.img_size // 2, self.img_size, 3), np.uint8))
        self.predict(box=np.array([10, 10, 100, 100]), multimask_output=False)
        self.predict(point_coords=np.array([[50, 50]]), point_labels=np.array([1]))
        self.reset_image()

    def get_image_embedding(self) -> torch.Tensor:
        """The set image's embedding, 1x256x64x64."""
        self._require_image()
        return self.features

    @property
    def device(self) -> torch.device:
        return self.model.device

    def reset_image(self) -> None:
        self.is_image_set = False
        self.features = None
        self.original_size = None
        self.input_size = None
        self._context_key = self._context = None
        self._bf16.pop("features", None)
        self._bf16.pop("context", None)

    # segment-anything's reset_image sets these four to None and nothing sets them again;
    # here they read the sizes of the image set (None without one).
    orig_h = property(lambda self: self.original_size and self.original_size[0])
    orig_w = property(lambda self: self.original_size and self.original_size[1])
    input_h = property(lambda self: self.input_size and self.input_size[0])
    input_w = property(lambda self: self.input_size and self.input_size[1])

    def _require_image(self) -> None:
        if not self.is_image_set or self.features is None:
            raise NoImageError("An image must be set with .set_image(...) before mask prediction.")


def pick(
    low_res: torch.Tensor, scores: torch.Tensor, multimask: bool, mask_id: int | None
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """BxCx256x256 logits and BxC scores -> one candidate per row (`prompts.pick_candidates`)
    and its 1-based mask token (0 for the single-mask output)."""
    if not multimask:
        return low_res[:, 0], scores[:, 0], np.zeros(len(scores), np.int64)
    choice = pick_candidates(scores.cpu().numpy(), mask_id).astype(np.int64)
    rows, cols = torch.arange(len(scores)), torch.from_numpy(choice)
    return low_res[rows, cols], scores[rows, cols], choice + 1


def _version(t: torch.Tensor) -> int | None:
    """A tensor's version counter (moved by in-place changes); None for an inference tensor."""
    return None if t.is_inference() else t._version


def _same_key(known: tuple | None, key: tuple) -> bool:
    """Cache keys led by a tensor: the same tensor (not an equal one) and equal the rest."""
    return known is not None and known[0] is key[0] and known[1:] == key[1:]
