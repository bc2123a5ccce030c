"""The high-level API over any backend: an image and prompts in, a result out.

`Segmenter` is written once against `backend.Predictor`; `MobileSAM` (PyTorch) is one,
and `OnnxPredictor.segment` / `.segment_everything` use one. Nothing here needs torch
except segment everything, whose post-processing is the generator's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import numpy as np

from .backend import Predictor, PromptMasks
from .errors import PromptError
from .image_io import ImageSource, load_image, shrink, source_name
from .options import generator_kwargs
from .prompts import Prompts, mask_prompts, parse_float, parse_int, parse_prompts, wants_multimask
from .result import PackedMasks, SegmentationResult
from .runtime import release_free_memory


def model_record_of(obj: object) -> dict | None:
    """`obj.model_record()` where it has one (a `Segmenter`, an exported predictor), else
    None: a model not known, not checked."""
    record = getattr(obj, "model_record", None)
    return record() if callable(record) else None


def same_model(made: dict | None, asked: dict | None) -> bool:
    """Whether two model records agree, as jobs compare them: one not known (a bare
    predictor, or a record written before models were recorded) agrees with any."""
    return not made or not asked or made == asked


class Segmenter:
    """Segment images from prompts, or everything in them, with one `Predictor`.

    The embedding of the last image is kept: segmenting the same image again (same
    pixels, same `input_size_percent`, the encoder's weights unchanged) with other prompts
    reuses it.
    """

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor
        self._image_key: tuple | None = None
        self._encoder_weights = None  # a WeightsState of the torch backend's encoder

    def model_record(self) -> dict | None:
        """What makes the masks: backend, model, input size, precision and a checksum of the
        weights. Folder and box jobs record it, so that a rerun with another model is
        refused (folder) or redoes the images (boxes) instead of mixing results; None
        where it is not known (a bare predictor: nothing is checked)."""
        return model_record_of(self.predictor)

    def segment(
        self,
        image: ImageSource,
        input_box: object = None,
        input_point: object = None,
        input_point_label: object = None,
        mask_id: object = None,
        input_size_percent: object = 100,
        mask_input: object = None,
        **everything: object,
    ) -> SegmentationResult:
        """Segment `image` from boxes and/or points (original-image pixels); with no
        prompt, segment everything (`everything` takes `segment_everything`'s options).

        input_box: [x0, y0, x1, y1] or a list of them -> one mask per box (an empty
        list: no mask, and the image is not encoded), boxes decoded in batches (torch: 16
        per decoder call; ONNX: one each); with points too, every box gets all the points. input_point: [[x, y], ...]; input_point_label: 1
        foreground / 0 background (default all 1). mask_id (1-3) picks that multi-mask
        candidate (mask-token order); without it a lone point gets the best of three and
        other prompts the single-mask output. input_size_percent (1-100) shrinks the
        image before encoding; masks still come back at the original size. mask_input: a
        mask prompt with the points or boxes, to refine an earlier result of this image:
        that result (its low-res logits), or logits of one mask for every prompt set
        (256x256; img_size/4 for a model of another input size) or of one per set (Nx256x256).
        """
        rgb = load_image(image)
        h, w = rgb.shape[:2]
        prompts = parse_prompts((h, w), input_box, input_point, input_point_label)
        if prompts.empty:
            if mask_id not in (None, ""):
                raise PromptError("mask_id needs a point or box prompt")
            if mask_input is not None:
                raise PromptError("mask_input refines a point or box prompt: give one too")
            result = self.segment_everything(rgb, input_size_percent=input_size_percent, **everything)
            result.file_name = source_name(image)
            return result
        if everything:
            raise PromptError(
                f"{', '.join(sorted(everything))}: segment-everything options, given with prompts"
            )
        mid = None if mask_id is None or mask_id == "" else parse_int(mask_id, "mask_id", 1, 3)
        percent = parse_float(input_size_percent, "input_size_percent", 1, 100)
        if prompts.boxes is not None and len(prompts.boxes) == 0:
            side = self.predictor.img_size // 4  # zero masks' scores, ids, low-res logits
            none = (np.zeros(0, np.float32), np.zeros(0, np.int64), np.zeros((0, side, side), np.float32))
            out = PromptMasks.pack(np.zeros((0, h, w), bool), *none)  # no box: nothing to encode
            frame = None
        else:
            sets = 1 if prompts.boxes is None else len(prompts.boxes)
            masks = None if mask_input is None else self._mask_prompts(mask_input, sets, (h, w))
            self._set_image(rgb, percent)
            coords, labels, boxes = self._model_prompts(prompts, (h, w))
            out = self.predictor.decode_sets(
                coords, labels, boxes, (h, w), wants_multimask(prompts, mid), mid, masks
            )
            release_free_memory()  # the decoder's temporaries go back to the system
            frame = self.predictor.input_size
        return SegmentationResult(
            image=rgb,
            masks=None,
            packed=PackedMasks(out.bits, (h, w), (h, w), out.areas, out.boxes),
            scores=out.scores,
            mask_ids=out.mask_ids,
            low_res_logits=out.low_res,
            logits_input_size=frame,
            prompts=prompts,
            file_name=source_name(image),
        )

    def segment_everything(self, image: ImageSource, **options: object) -> SegmentationResult:
        """All masks of `image` from a grid of point prompts; options and results: `everything`."""
        self._image_key = None  # the generator sets its own images (crops)
        result = everything(self.predictor, image, **options)
        release_free_memory()  # a long-running process keeps no peak it no longer uses
        return result

    def _set_image(self, rgb: np.ndarray, percent: float) -> None:
        key = (hashlib.sha1(rgb.tobytes()).hexdigest(), rgb.shape, percent)
        p = self.predictor
        same_weights = self._encoder_unchanged()
        known = self._image_key
        if known is not None and known[0] == key and known[1] is p.features and same_weights:
            return  # same image, same scale, same embedding of the same weights: reuse it
        p.set_image(shrink(rgb, percent))
        self._image_key = (key, p.features)

    def _encoder_unchanged(self) -> bool:
        """Whether the encoder's weights are those of the last check (then a new snapshot is
        taken): the torch backend's model can be changed; exported models cannot."""
        model = getattr(self.predictor, "model", None)
        if model is None:
            return True
        from .weights_state import WeightsState, unchanged  # torch: torch-free backends never get here

        if unchanged(self._encoder_weights, model.image_encoder):
            return True

        self._encoder_weights = WeightsState(model.image_encoder)
        return False

    def _mask_prompts(self, mask_input: object, sets: int, size: tuple[int, int]) -> np.ndarray:
        """mask_input (an earlier `SegmentationResult` of an image of HxW = `size`, or
        logits) -> `sets` x S x S, S = img_size / 4."""
        if isinstance(mask_input, SegmentationResult):
            if mask_input.low_res_logits is None:
                raise PromptError(
                    "mask_input: that result keeps no logits for a mask prompt (segment "
                    "everything's, even with keep_logits=True, are each in its crop's frame)"
                )
            if mask_input.image.shape[:2] != tuple(size):
                h, w = mask_input.image.shape[:2]
                raise PromptError(
                    f"mask_input: that result is of a {w}x{h} image, this one is {size[1]}x{size[0]}"
                )
            mask_input = mask_input.low_res_logits
        side = self.predictor.img_size // 4
        return mask_prompts(mask_input, sets, (side, side))

    def _model_prompts(
        self, prompts: Prompts, size: tuple[int, int]
    ) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
        """Original-pixel prompts -> model-frame arrays, one prompt set per box: coords
        BxNx2 float32, labels BxN int64, boxes Bx4 float32 (None where not given)."""
        transform = self.predictor.transform
        # From the original frame to the (possibly shrunk) encoded image's frame.
        small = self.predictor.original_size
        scale = np.array([small[1] / size[1], small[0] / size[0]])
        n = 1 if prompts.boxes is None else len(prompts.boxes)
        coords = labels = boxes = None
        if prompts.points is not None:
            pts = transform.apply_coords(prompts.points * scale, small).astype(np.float32)
            coords = np.repeat(pts[None], n, axis=0)
            labels = np.repeat(prompts.labels[None], n, axis=0)
        if prompts.boxes is not None:
            bxs = transform.apply_boxes(prompts.boxes.reshape(-1, 2, 2) * scale, small)
            boxes = bxs.reshape(-1, 4).astype(np.float32)
        return coords, labels, boxes


def everything(
    predictor: Predictor,
    image: ImageSource,
    input_size_percent: object = 100,
    progress: Callable[[int, int], None] | None = None,
    decoder_precision: str = "float32",
    keep_logits: bool = False,
    **options: object,
):
    """All masks of `image` from a grid of point prompts (the automatic mask generator)
    with any backend. Options (values or strings): options.EVERYTHING, named as the
    Ikomia task names them (`iou_thres` is segment-anything's pred_iou_thresh, and so
    on). With input_size_percent < 100 the generator runs on the shrunk image and masks
    are scaled back up (nearest neighbour). Masks are ordered by predicted IoU, highest
    first. `progress(done, total)` is called after each batch of point prompts.
    decoder_precision="bf16": the approximate bfloat16 decoder (PyTorch backend).
    keep_logits=True: the result keeps each mask's low-res logits, for the model's soft
    edges (`soft_mask`, `cutout(soft=True)`, `save_cutouts(soft=True)`); up to 256 KB a mask.
    """
    from .automatic_mask_generator import SamAutomaticMaskGenerator

    rgb = load_image(image)
    percent = parse_float(input_size_percent, "input_size_percent", 1, 100)
    generator = SamAutomaticMaskGenerator(
        predictor, decoder_precision=decoder_precision, keep_logits=keep_logits, **generator_kwargs(options)
    )
    generator.progress = progress
    work = shrink(rgb, percent)
    records = generator.generate_records(work)
    small = work.shape[:2]
    return SegmentationResult.from_records(rgb, records, small, source_name(image))
