"""Parse and check prompts and parameters given as Python values or as strings.

The Ikomia MobileSAM task passes everything as strings
(`{"input_box": "[[425, 600, 700, 875]]", "points_per_side": "16"}`); the same names
are accepted here with real values too. Coordinates are original-image pixels.

Out-of-image prompts: a point must lie inside the image ([0, W] x [0, H]) or it is
rejected; a box that sticks out is clipped to the image, and one entirely outside is
rejected. An empty list of boxes is zero prompts (zero masks), not a missing prompt.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np

from .errors import PromptError


def as_number_array(value: object, name: str) -> np.ndarray:
    """A list of numbers (or a JSON / comma-separated string of them) -> float64 array, all finite."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise PromptError(f"{name} is empty")
        try:
            value = json.loads(text) if text.startswith("[") else [float(v) for v in text.split(",")]
        except ValueError as exc:  # JSONDecodeError is a ValueError too
            raise PromptError(f"{name} is not a list of numbers: {value!r}") from exc
    return finite_numbers(value, name)


def finite_numbers(values: object, name: str) -> np.ndarray:
    """`values` (numbers, lists or arrays of them; not text) as a float64 array of finite
    numbers, or a PromptError naming `name` (a NaN coordinate would make a mask of nothing
    in particular, silently)."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise PromptError(f"{name} must be an array of numbers, got {values!r:.80}") from None
    if not np.isfinite(arr).all():
        raise PromptError(f"{name} holds NaN or infinite values: {arr.tolist()!s:.80}")
    return arr


def parse_boxes(value: object, image_size: tuple[int, int]) -> np.ndarray:
    """One [x0, y0, x1, y1] or many -> Nx4 float64 XYXY, clipped to the (H, W) image.
    An empty list (a detector that found nothing) is 0x4: no box, so no mask."""
    boxes = as_number_array(value, "input_box")
    if boxes.shape == (0,):
        boxes = boxes.reshape(0, 4)
    if boxes.ndim == 1:
        boxes = boxes[None]
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise PromptError(f"input_box must be [x0, y0, x1, y1] or a list of them, got shape {boxes.shape}")
    h, w = image_size
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        if x1 < x0 or y1 < y0:
            raise PromptError(
                f"input_box #{i} {boxes[i].tolist()} has x1 < x0 or y1 < y0 (want x0, y0, x1, y1)"
            )
        if x1 < 0 or y1 < 0 or x0 > w or y0 > h:
            raise PromptError(f"input_box #{i} {boxes[i].tolist()} lies entirely outside the {w}x{h} image")
    boxes = boxes.copy()
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
    return boxes


def parse_points(value: object, image_size: tuple[int, int]) -> np.ndarray:
    """[[x, y], ...] (or one [x, y]) -> Nx2 float64, each inside the (H, W) image."""
    points = as_number_array(value, "input_point")
    if points.ndim == 1:
        points = points[None]
    if points.ndim != 2 or points.shape[1] != 2 or points.shape[0] == 0:
        raise PromptError(f"input_point must be [[x, y], ...], got shape {points.shape}")
    h, w = image_size
    outside = (points[:, 0] < 0) | (points[:, 0] > w) | (points[:, 1] < 0) | (points[:, 1] > h)
    if outside.any():
        raise PromptError(f"input_point {points[outside].tolist()} outside the {w}x{h} image")
    return points


def parse_labels(value: object, n_points: int) -> np.ndarray:
    """Labels 1 (foreground) / 0 (background), default all 1 -> N int64."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return np.ones(n_points, dtype=np.int64)
    labels = as_number_array(value, "input_point_label").reshape(-1)
    if labels.shape[0] != n_points:
        raise PromptError(f"input_point_label has {labels.shape[0]} labels for {n_points} points")
    if not np.all(np.isin(labels, (0, 1))):
        raise PromptError(
            f"input_point_label must be 0 (background) or 1 (foreground), got {labels.tolist()}"
        )
    return labels.astype(np.int64)


def parse_int(value: object, name: str, low: int, high: int | None = None) -> int:
    try:
        number = float(value.strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError) as exc:
        raise PromptError(f"{name} must be an integer, got {value!r}") from exc
    if not number.is_integer():
        raise PromptError(f"{name} must be an integer, got {value!r}")
    if number < low or (high is not None and number > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise PromptError(f"{name} must be {bound}, got {value!r}")
    return int(number)


def is_number(v: object) -> bool:
    """Whether `v` is a finite int or float and not a bool (a JSON number, as read)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def parse_float(value: object, name: str, low: float, high: float) -> float:
    try:
        number = float(value.strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError) as exc:
        raise PromptError(f"{name} must be a number, got {value!r}") from exc
    if not (low <= number <= high):
        raise PromptError(f"{name} must be between {low} and {high}, got {value!r}")
    return number


@dataclass(frozen=True)
class Prompts:
    """Checked prompts in original-image pixels."""

    boxes: np.ndarray | None = None  # Nx4 XYXY
    points: np.ndarray | None = None  # Mx2 (x, y)
    labels: np.ndarray | None = None  # M, 1 foreground / 0 background

    @property
    def empty(self) -> bool:
        return self.boxes is None and self.points is None


def _given(value: object) -> bool:
    return value is not None and not (isinstance(value, str) and not value.strip())


def parse_prompts(
    image_size: tuple[int, int],
    input_box: object = None,
    input_point: object = None,
    input_point_label: object = None,
) -> Prompts:
    boxes = parse_boxes(input_box, image_size) if _given(input_box) else None
    points = labels = None
    if _given(input_point):
        points = parse_points(input_point, image_size)
        labels = parse_labels(input_point_label, len(points))
    elif _given(input_point_label):
        raise PromptError("input_point_label given without input_point")
    return Prompts(boxes, points, labels)


def wants_multimask(prompts: Prompts, mask_id: int | None) -> bool:
    """Multi-mask output when a candidate is asked for, or for one lone point (ambiguous:
    the best of three is returned); otherwise SAM's single-mask output."""
    return mask_id is not None or (prompts.boxes is None and len(prompts.points) == 1)


def pick_candidates(scores: np.ndarray, mask_id: int | None) -> np.ndarray:
    """Nx3 multi-mask scores -> the 0-based candidate per row: mask_id - 1, or the best."""
    if mask_id is not None:
        return np.full(len(scores), mask_id - 1)
    return np.asarray(scores).argmax(axis=1)


def point_arrays(point_coords: object, point_labels: object) -> tuple[np.ndarray, np.ndarray]:
    """SamPredictor.predict's point arguments, checked: Nx2 float64 coords, N labels."""
    if point_labels is None:
        raise PromptError("point_labels must be given with point_coords")
    coords = finite_numbers(point_coords, "point_coords")
    labels = finite_numbers(point_labels, "point_labels")
    if coords.ndim != 2 or coords.shape[1] != 2 or labels.shape != (coords.shape[0],):
        raise PromptError(
            f"point_coords must be Nx2 and point_labels N, got {coords.shape} and {labels.shape}"
        )
    return coords, labels


def box_array(box: object) -> np.ndarray:
    """SamPredictor.predict's box, checked: 1x4 float64 XYXY (from 4 numbers of any shape)."""
    box = finite_numbers(box, "box")
    if box.size != 4:
        raise PromptError(f"box must hold 4 numbers (x0, y0, x1, y1), got shape {box.shape}")
    return box.reshape(1, 4)


def mask_prompts(mask_input: object, sets: int, side: tuple[int, int]) -> np.ndarray:
    """The high-level API's mask_input: low-res logits (hxw = `side`, 256x256 at 1024 px)
    of one mask for every prompt set (hxw, 1xhxw, 1x1xhxw), or of one mask per set (Bxhxw,
    Bx1xhxw), as an earlier result's `low_res_logits` -> `sets` x h x w float32."""
    h, w = side
    try:
        arr = np.asarray(mask_input, dtype=np.float32)
    except (TypeError, ValueError):
        raise PromptError(
            f"mask_input must be an array of low-res logits, got {type(mask_input).__name__}"
        ) from None
    if arr.ndim == 4 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[1:] != (h, w):
        side_given = arr.shape[-1] if arr.ndim == 3 and arr.shape[1] == arr.shape[2] else None
        floats = getattr(mask_input, "dtype", np.dtype(bool)).kind == "f"  # logits, not a mask
        hint = (
            f": {side_given}x{side_given} logits come from a model of {4 * side_given}-px input, this "
            f"one takes {4 * h} px (img_size)"
            if side_given and floats and h == w
            else ""
        )
        raise PromptError(
            f"mask_input must be {h}x{w} low-res logits, or Nx{h}x{w} for N prompt sets (an "
            f"earlier result's low_res_logits; not a full-size mask), got shape {arr.shape}{hint}"
        )
    if len(arr) not in (1, sets):
        raise PromptError(
            f"mask_input holds {len(arr)} masks for {sets} prompt sets (one per box): give one, or one per set"
        )
    if not np.all(np.isfinite(arr)):
        raise PromptError("mask_input holds NaN or infinite values")
    return np.repeat(arr, sets // len(arr), axis=0)  # a new array: the caller's is not shared


def mask_input_array(mask_input: object, side: tuple[int, int]) -> np.ndarray:
    """SamPredictor.predict's mask_input, checked: 1xHxW float32 logits with (H, W) =
    `side` (256x256 at 1024 px), as an earlier call's `low_res_logits[i][None]`; an HxW or
    1x1xHxW array is reshaped to it."""
    mask = np.asarray(mask_input, dtype=np.float32)
    if mask.shape[-2:] != tuple(side) or mask.size != side[0] * side[1]:
        raise PromptError(
            f"mask_input must be 1x{side[0]}x{side[1]} low-res logits (an earlier call's "
            f"low_res_logits[i][None]), got shape {mask.shape}"
        )
    if not np.all(np.isfinite(mask)):
        raise PromptError("mask_input holds NaN or infinite values")
    return mask.reshape(1, *side)
