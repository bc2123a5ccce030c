"""`SegmentationResult`: masks for one image, to overlay, save and export.

Needs no torch: the ONNX runtime path builds the same results.
"""

from __future__ import annotations

import json
from os import PathLike
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from .errors import OutputError, PromptError
from .prompts import Prompts
from .utils import rle
from .utils.boxes import masks_to_boxes, xyxy_to_coco_bbox, xyxy_to_xywh
from .utils.files import atomic_write, atomic_write_text
from .utils.matte import soft_mask
from .utils.polygons import mask_to_polygon, mask_to_polygons
from .utils.regions import dilate as grow
from .visualize import cutout, overlay, palette

MOST_LABELS = 65535  # masks a label map numbers (16-bit); one more would wrap round to 0


class SegmentationResult:
    """Masks for one image, in original-image pixels.

    image: HxWx3 uint8 RGB; masks: NxHxW bool; scores: N predicted IoU; mask_ids: N,
    the 1-based mask token each mask came from (0 = single-mask output, or segment
    everything); low_res_logits: N x S/4 x S/4 (S the model's img_size: 256 for the usual
    1024), usable as a later `mask_input` (prompts only);
    logits_input_size: (h, w) of the encoded image in the model frame, which maps those
    logits onto the image (`soft_mask`). A segment-everything result run with
    keep_logits keeps each mask's logits in its crop's frame instead (`crop_logits`).

    Segment-everything results (`from_records`) keep their masks packed (one bit per
    pixel) with boxes and areas computed once; `masks` builds the dense NxHxW array only
    when it is first read, and `mask(i)`, exports and overlays work one mask at a time.
    """

    def __init__(
        self,
        image: np.ndarray,
        masks: np.ndarray | None,
        scores: np.ndarray,
        mask_ids: np.ndarray,
        low_res_logits: np.ndarray | None,
        prompts: Prompts | None = None,
        file_name: str | None = None,
        stability_scores: np.ndarray | None = None,
        points: np.ndarray | None = None,
        crop_boxes: np.ndarray | None = None,
        packed: PackedMasks | None = None,
        logits_input_size: tuple[int, int] | None = None,
        crop_logits: CropLogitsOfImage | None = None,
    ) -> None:
        if (masks is None) == (packed is None):
            raise ValueError("give exactly one of masks and packed")
        self.image = image
        self._masks = masks
        self._packed = packed
        self.scores = scores
        self.mask_ids = mask_ids
        self.low_res_logits = low_res_logits
        self.logits_input_size = logits_input_size
        self.crop_logits = crop_logits
        self.prompts = prompts if prompts is not None else Prompts()
        self.file_name = file_name
        # Segment-everything only: each mask's stability score, prompt point and crop (XYXY).
        self.stability_scores = stability_scores
        self.points = points
        self.crop_boxes = crop_boxes

    @classmethod
    def from_records(
        cls, image: np.ndarray, records: object, work_size: tuple[int, int], file_name: str | None
    ):
        """A segment-everything result from the generator's `MaskRecords` of `image` run
        at `work_size` (smaller with input_size_percent < 100; masks scale back up)."""
        h, w = image.shape[:2]
        scale = np.array([w / work_size[1], h / work_size[0]])
        bits = [records.read(i) for i in range(len(records))]
        same = tuple(work_size) == (h, w)
        crop_boxes = records.crop_boxes.numpy() * np.tile(scale, 2)
        packed = PackedMasks(
            bits,
            tuple(work_size),
            (h, w),
            areas=records.areas.numpy() if same else None,
            boxes=records.boxes.numpy() if same else None,
        )
        return cls(
            image=image,
            masks=None,
            packed=packed,
            scores=records.iou_preds.numpy(),
            mask_ids=np.zeros(len(records), dtype=np.int64),
            low_res_logits=None,
            file_name=file_name,
            stability_scores=records.stability.numpy(),
            points=records.points.numpy() * scale,
            crop_boxes=crop_boxes,
            crop_logits=CropLogitsOfImage(records, np.rint(crop_boxes).astype(np.int64))
            if records.logits
            else None,
        )

    def __len__(self) -> int:
        return len(self._packed) if self._packed is not None else len(self._masks)

    @property
    def masks(self) -> np.ndarray:
        """NxHxW bool (built from the packed masks on first access)."""
        if self._masks is None:
            h, w = self.image.shape[:2]
            out = np.zeros((len(self), h, w), dtype=bool)
            for i in range(len(self)):
                out[i] = self._packed.mask(i)
            self._masks = out
        return self._masks

    def mask(self, i: int) -> np.ndarray:
        """Mask i, HxW bool, without building the others."""
        if self._masks is not None:
            return self._masks[i]
        return self._packed.mask(i)

    def _each(self):
        return (self.mask(i) for i in range(len(self)))

    @property
    def areas(self) -> np.ndarray:
        """N pixel counts."""
        if self._packed is not None and self._packed.areas is not None:
            return self._packed.areas
        return np.array([int(m.sum()) for m in self._each()], dtype=np.int64)

    @property
    def boxes(self) -> np.ndarray:
        """Nx4 XYXY bounding boxes of the masks (inclusive pixel bounds)."""
        if self._packed is not None and self._packed.boxes is not None:
            return self._packed.boxes
        if self._masks is not None:
            return masks_to_boxes(self._masks)
        return np.array([masks_to_boxes(m[None])[0] for m in self._each()]).reshape(-1, 4)

    def overlay(self, alpha: float = 0.5, contours: bool = True, draw_prompts: bool = True) -> Image.Image:
        """The masks blended over the image (smaller masks on top), with the prompts drawn."""
        p = self.prompts if draw_prompts else Prompts()
        masks = self._masks if self._masks is not None else _MaskView(self)
        return overlay(
            self.image, masks, alpha, contours, None, p.boxes, p.points, p.labels, self.areas, self.boxes
        )

    def save_overlay(self, path: str | PathLike, **kwargs: object) -> Path:
        img = self.overlay(**kwargs)
        fmt = Image.registered_extensions().get(Path(path).suffix.lower(), "PNG")
        return atomic_write(path, lambda f: img.save(f, format=fmt))

    def soft_mask(self, i: int) -> np.ndarray:
        """Mask i as an HxW uint8 alpha matte: 255 inside, 0 outside, and on its outline
        the sigmoid of the model's logits, its own anti-aliased edge (`utils.matte`; at
        least 128 exactly on the mask's pixels). Prompt results, and segment everything
        run with keep_logits (else an `OutputError`)."""
        (i,) = self._picked(i)
        return self._soft(i, self.mask(i))

    def _soft(self, i: int, mask: np.ndarray) -> np.ndarray:
        """`soft_mask(i)` of mask i already unpacked (`mask`)."""
        if self.crop_logits is not None:  # segment everything: in the mask's crop
            return self.crop_logits.read(i).matte(mask)
        if self.low_res_logits is None or self.logits_input_size is None:
            raise OutputError(
                "soft edges come from the model's logits: prompt results keep them, segment "
                "everything only when run with keep_logits=True (the CLI: everything --soft)"
            )
        return soft_mask(self.low_res_logits[i], mask, self.logits_input_size)

    def save_masks(
        self, directory: str | PathLike, prefix: str = "mask", dilate: float = 0, soft: bool = False
    ) -> list[Path]:
        """One 8-bit PNG per mask (255 inside), named `{prefix}_{i:03d}.png`; `dilate`:
        each grown by that many pixels first (`utils.regions.dilate`), as inpainting wants;
        `soft`: each mask's `soft_mask` instead (not with `dilate`)."""
        check_soft(soft, dilate)
        out = []
        for i, m in enumerate(self._each()):
            alpha = self._soft(i, m) if soft else grow(m, dilate).astype(np.uint8) * 255
            img = Image.fromarray(alpha)
            out.append(
                atomic_write(Path(directory) / f"{prefix}_{i:03d}.png", lambda f, im=img: im.save(f, "PNG"))
            )
        return out

    def union(self, indices: int | list[int] | None = None, dilate: float = 0) -> np.ndarray:
        """HxW bool: the pixels of mask `indices` (one index, several, or None: every
        mask), grown by `dilate` pixels (a disc; 0: as they are)."""
        out = np.zeros(self.image.shape[:2], dtype=bool)
        for i in self._picked(indices):
            out |= self.mask(i)
        return grow(out, dilate) if dilate else out

    def _picked(self, indices: int | list[int] | None) -> list[int]:
        """One mask index, several, or None (every mask) -> the indices, each checked."""
        picked = range(len(self)) if indices is None else np.atleast_1d(np.asarray(indices)).ravel()
        for i in picked:
            if not (isinstance(i, (int, np.integer)) and -len(self) <= i < len(self)):
                raise IndexError(f"mask index {i!r} out of range: the result has {len(self)} masks")
        return [int(i) for i in picked]

    def cutout(
        self,
        indices: int | list[int] | None = None,
        crop: bool = True,
        dilate: float = 0,
        feather: float = 0,
        soft: bool = False,
    ) -> Image.Image:
        """The object on a transparent background: an RGBA image holding the image's
        pixels inside `union(indices, dilate)` (alpha 255) and nothing outside (alpha 0,
        colour 0), cropped to their extent unless `crop` is False; `feather`: a soft edge
        (`visualize.cutout`); `soft`: the alpha is the masks' `soft_mask` (the most of
        them at each pixel; not with `dilate`), the model's own edge. An empty selection is
        an `OutputError`: there is nothing to cut out."""
        check_soft(soft, dilate)
        if soft:  # a soft mask is 128 or more exactly on its mask: empty only where that is
            alpha = np.zeros(self.image.shape[:2], dtype=np.uint8)
            for i in self._picked(indices):
                np.maximum(alpha, self.soft_mask(i), out=alpha)
        else:
            alpha = self.union(indices, dilate)
        if not alpha.any():
            raise OutputError("nothing to cut out: the masks chosen are empty")
        return cutout(self.image, alpha, crop, feather)

    def save_cutout(
        self,
        path: str | PathLike,
        indices: int | list[int] | None = None,
        crop: bool = True,
        dilate: float = 0,
        feather: float = 0,
        soft: bool = False,
    ) -> Path:
        """`cutout(...)` written as PNG, lossless WebP or TIFF (by the path's suffix; a
        format without an alpha channel, such as JPEG, is an `OutputError`)."""
        fmt = cutout_format(path)
        img = self.cutout(indices, crop, dilate, feather, soft)
        options = {"lossless": True} if fmt == "WEBP" else {}  # PNG and TIFF are lossless anyway
        return atomic_write(path, lambda f: img.save(f, fmt, **options))

    def save_cutouts(
        self,
        directory: str | PathLike,
        prefix: str = "cutout",
        crop: bool = True,
        dilate: float = 0,
        feather: float = 0,
        soft: bool = False,
    ) -> list[Path]:
        """Every object on its own: one RGBA PNG per mask, `cutout(i, crop, dilate,
        feather, soft)` named `{prefix}_{i:03d}.png` (i: the mask's index, as `save_masks`
        names them; an empty mask has no file), the paths written."""
        check_soft(soft, dilate)
        out = []
        for i, area in enumerate(self.areas):
            if area:
                img = self.cutout(i, crop, dilate, feather, soft)
                path = Path(directory) / f"{prefix}_{i:03d}.png"
                out.append(atomic_write(path, lambda f, im=img: im.save(f, "PNG")))
        return out

    def label_map(self) -> np.ndarray:
        """HxW uint16: 0 background, i+1 where mask i is on top (smaller masks over larger).
        More than 65535 masks is an `OutputError` (their numbers would wrap round)."""
        if len(self) > MOST_LABELS:
            raise OutputError(
                f"{len(self)} masks: a label map numbers at most {MOST_LABELS} (16-bit); save them as masks or COCO JSON"
            )
        labels = np.zeros(self.image.shape[:2], dtype=np.uint16)
        for i in np.argsort(-self.areas, kind="stable"):  # `paint_order`, from the stored areas
            labels[self.mask(i)] = i + 1
        return labels

    def save_label_map(self, path: str | PathLike) -> Path:
        """Label map image, PNG (or TIFF for a .tif/.tiff path): 8-bit if there are fewer
        than 256 masks, else 16-bit. A lossy format is refused (`label_map_format`)."""
        fmt = label_map_format(path)
        labels = self.label_map()
        img = Image.fromarray(labels.astype(np.uint8)) if len(self) < 256 else Image.fromarray(labels)
        return atomic_write(path, lambda f: img.save(f, fmt))

    def polygons(self, i: int, tolerance: float = 1.0, holes: bool = True) -> list[np.ndarray]:
        """Mask i as polygons (Kx2 int32 x, y on pixel corners), one per part, largest
        first (see `utils.polygons`). tolerance: simplification in pixels, 0 for the exact
        outline; holes: cut into the polygon (exact, filled by the even-odd rule), or
        False to fill them."""
        return mask_to_polygons(self.mask(i), tolerance, holes)

    def to_coco(
        self,
        image_id: int = 1,
        first_annotation_id: int = 1,
        segmentation: str = "rle",
        tolerance: float = 1.0,
    ) -> dict:
        """COCO-style dict: one image, one annotation per mask. `bbox` is COCO's (the
        mask's pixel extent, as pycocotools' toBbox), one pixel wider and taller than
        segment-anything's `generate()` boxes.

        segmentation: "rle" (compressed RLE, exact) or "polygon" (one polygon per part,
        holes cut in; simplified by `tolerance` pixels, 0 for exact; a mask with no pixel
        has no polygon and no annotation). `area` is the mask's pixel count either way."""
        if segmentation not in ("rle", "polygon"):
            raise ValueError(f"segmentation must be 'rle' or 'polygon', got {segmentation!r}")
        h, w = self.image.shape[:2]
        areas = self.areas
        boxes = xyxy_to_coco_bbox(self.boxes, areas)
        anns = []
        for i in range(len(self)):
            if segmentation == "rle":
                seg = self._rle(i)
            else:
                seg = [p.ravel().tolist() for p in self.polygons(i, tolerance)]
                if not seg:
                    continue
            ann = {
                "id": first_annotation_id + i,
                "image_id": image_id,
                "category_id": 1,
                "segmentation": seg,
                "area": int(areas[i]),
                "bbox": [int(v) for v in boxes[i]],
                "iscrowd": 0,
                "score": float(self.scores[i]),
                "mask_id": int(self.mask_ids[i]),
            }
            if self.stability_scores is not None:  # segment everything
                ann["stability_score"] = float(self.stability_scores[i])
                ann["point_coords"] = [self.points[i].tolist()]
                ann["crop_box"] = xyxy_to_xywh(self.crop_boxes[i : i + 1])[0].tolist()
            else:
                ann["prompt"] = self._prompt_of(i)
            anns.append(ann)
        image = {"id": image_id, "width": int(w), "height": int(h), "file_name": self.file_name}
        return {"images": [image], "annotations": anns, "categories": [{"id": 1, "name": "object"}]}

    def to_yolo(self, class_id: int = 0, tolerance: float = 1.0) -> str:
        """YOLO segmentation labels: a line `class x1 y1 x2 y2 ...` per non-empty mask, x and y
        divided by the image's width and height. A mask of several parts is one polygon,
        its parts joined by zero-width cuts (as Ultralytics joins COCO's)."""
        h, w = self.image.shape[:2]
        lines = []
        for i in range(len(self)):
            poly = mask_to_polygon(self.mask(i), tolerance)
            if len(poly):
                lines.append(yolo_line(class_id, poly, (h, w)))
        return "".join(lines)

    def save_yolo(self, path: str | PathLike, class_id: int = 0, tolerance: float = 1.0) -> Path:
        return atomic_write_text(path, self.to_yolo(class_id, tolerance))

    def _rle(self, i: int) -> dict:
        """Mask i as compressed COCO RLE (straight from the packed bits when it has them)."""
        if self._packed is not None and self._masks is None:
            return self._packed.rle(i)
        return rle.encode(self.mask(i))

    def _prompt_of(self, i: int) -> dict:
        p = self.prompts
        prompt: dict = {}
        if p.boxes is not None:
            prompt["box"] = p.boxes[i].tolist()
        if p.points is not None:
            prompt["points"] = p.points.tolist()
            prompt["labels"] = p.labels.tolist()
        return prompt

    def save_logits(self, path: str | PathLike) -> Path:
        """The masks' low-res logits (N x S/4 x S/4 float32) as a .npy file: a later call's
        `mask_input` (`load_logits`). Prompt results only (an `OutputError` otherwise)."""
        if self.low_res_logits is None:
            raise OutputError(
                "no logits to save: only prompt results have them as mask prompts (segment "
                "everything's, kept with keep_logits=True, are each in its crop's frame)"
            )
        logits = np.asarray(self.low_res_logits, dtype=np.float32)
        return atomic_write(path, lambda f: np.save(f, logits, allow_pickle=False))

    def save_json(
        self, path: str | PathLike, image_id: int = 1, segmentation: str = "rle", tolerance: float = 1.0
    ) -> Path:
        """COCO JSON (see `to_coco`)."""
        coco = self.to_coco(image_id, segmentation=segmentation, tolerance=tolerance)
        return atomic_write_text(path, json.dumps(coco))

    def to_svg(self, indices: int | list[int] | None = None, tolerance: float = 1.0) -> str:
        """The masks (`indices`: one, several, None: all) as an SVG document of the image's
        size in pixels, for vector tools (Inkscape, Figma, cutting plotters): one `<path>`
        per non-empty mask (`id="mask-i"`), its polygons (see `polygons`; `tolerance` 0:
        exact pixel outlines) filled with the even-odd rule, so holes stay open; in the
        overlay's colours and order (smaller masks on top), half transparent."""
        h, w = self.image.shape[:2]
        colors = palette(len(self))
        lines = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}">']
        picked = {i % len(self) for i in self._picked(indices)}
        for i in sorted(picked, key=lambda i: (-self.areas[i], i)):
            parts = self.polygons(i, tolerance)
            if not parts:
                continue
            d = " ".join("M" + " L".join(f"{x} {y}" for x, y in part.tolist()) + " Z" for part in parts)
            r, g, b = colors[i].tolist()
            lines.append(
                f'<path id="mask-{i}" d="{d}" fill="rgb({r},{g},{b})" fill-opacity="0.5" '
                f'fill-rule="evenodd" stroke="none"/>'
            )
        return "\n".join([*lines, "</svg>\n"])

    def save_svg(
        self, path: str | PathLike, indices: int | list[int] | None = None, tolerance: float = 1.0
    ) -> Path:
        """The SVG document `to_svg` makes, written to `path`."""
        return atomic_write_text(path, self.to_svg(indices, tolerance))


class CropEdge(NamedTuple):
    """One segment-everything mask's edge as the model made it: its low-res logits, the
    input size they map from, and the part of the image they cover (its crop, XYXY in
    image pixels). Holds its own copy: it outlives the run's records."""

    low: np.ndarray
    input_size: tuple[int, int]
    box: tuple[int, ...]

    def matte(self, mask: np.ndarray) -> np.ndarray:
        """`soft_mask` of the whole image's HxW `mask` (this edge's mask): soft in its
        crop, hard outside it."""
        x0, y0, x1, y1 = self.box
        out = mask.astype(np.uint8) * 255
        out[y0:y1, x0:x1] = soft_mask(self.low, mask[y0:y1, x0:x1], self.input_size)
        return out


class CropLogitsOfImage:
    """Segment everything's kept logits (`keep_logits`), read one mask at a time."""

    def __init__(self, records: object, boxes: np.ndarray) -> None:
        self.records, self.boxes = records, boxes

    def read(self, i: int) -> CropEdge:
        low, input_size = self.records.read_logits(i)
        return CropEdge(low, input_size, tuple(int(v) for v in self.boxes[i]))


def check_soft(soft: bool, dilate: float) -> None:
    if soft and dilate:
        raise OutputError(
            "soft follows the model's outline and dilate grows the mask past it: use one of them"
        )


def load_logits(path: str | PathLike) -> np.ndarray:
    """A .npy file of low-res logits (`save_logits`) -> float32 array, for `mask_input`;
    a missing, unreadable or non-numeric file is a `PromptError` that names it."""
    try:
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise PromptError(f"mask input {path}: no such file") from None
    except (OSError, ValueError):  # not .npy (NumPy takes it for a pickle), or cut short
        raise PromptError(
            f"mask input {path}: not a NumPy .npy file of numbers (as --logits writes)"
        ) from None
    if not np.issubdtype(arr.dtype, np.number):
        raise PromptError(f"mask input {path}: holds {arr.dtype}, not numbers")
    return arr.astype(np.float32)


def label_map_format(path: str | PathLike) -> str:
    """The format a label map is written in at `path`: TIFF for .tif/.tiff, else PNG; a
    format that would change label values (JPEG, WebP, ...) is an `OutputError`."""
    suffix = Path(path).suffix.lower()
    fmt = Image.registered_extensions().get(suffix)
    if fmt in (None, "PNG", "TIFF"):
        return fmt or "PNG"
    raise OutputError(f"label map {path}: {suffix} cannot hold exact labels; use .png or .tif")


def cutout_format(path: str | PathLike) -> str:
    """The format a cutout is written in at `path`: PNG (also for no suffix), WebP
    (lossless) or TIFF; any other is an `OutputError`, since it would drop the
    transparency or the colours."""
    suffix = Path(path).suffix.lower()
    fmt = Image.registered_extensions().get(suffix)
    if fmt in (None, "PNG", "WEBP", "TIFF"):
        return fmt or "PNG"
    raise OutputError(
        f"cutout {path}: {suffix} cannot hold a transparent background; use .png, .webp or .tif"
    )


def yolo_line(class_id: int, polygon: np.ndarray, size: tuple[int, int]) -> str:
    """One YOLO segmentation label line: the polygon's x, y over the image width, height,
    clipped to the image (0-1; Ultralytics drops an image whose labels reach past it)."""
    h, w = size
    xy = np.clip(polygon / np.array([w, h], dtype=np.float64), 0.0, 1.0).ravel()
    return f"{class_id} " + " ".join(f"{v:.6g}" for v in xy) + "\n"


class PackedMasks:
    """N masks as packed column-major bits of size `size` (H, W), shown at `out_size`
    (nearest neighbour when they differ). areas / boxes: precomputed, when at out_size."""

    def __init__(
        self,
        bits: list[np.ndarray],
        size: tuple[int, int],
        out_size: tuple[int, int],
        areas: np.ndarray | None = None,
        boxes: np.ndarray | None = None,
    ) -> None:
        self.bits, self.size, self.out_size = bits, size, out_size
        self.areas, self.boxes = areas, boxes

    def __len__(self) -> int:
        return len(self.bits)

    def mask(self, i: int) -> np.ndarray:
        m = rle.bits_to_mask(self.bits[i], self.size)
        if self.size == self.out_size:
            return m
        (h, w), (sh, sw) = self.out_size, self.size
        return m[(np.arange(h) * sh // h)[:, None], (np.arange(w) * sw // w)[None, :]]

    def rle(self, i: int) -> dict:
        if self.size != self.out_size:
            return rle.encode(self.mask(i))
        counts = rle.bits_to_counts(self.bits[i], self.size)
        return rle.counts_to_rle(counts, self.size)


class _MaskView:
    """A result's masks as a sequence, built one at a time (for `overlay`)."""

    def __init__(self, result: SegmentationResult) -> None:
        self.result = result

    def __len__(self) -> int:
        return len(self.result)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.result.mask(i)
