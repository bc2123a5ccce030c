"""Segment-everything options, defined once for the CLI, the high-level API and the generator.

Each option has the Ikomia / high-level name (`iou_thres`), the `SamAutomaticMaskGenerator`
argument it sets (`pred_iou_thresh`), its type, segment-anything's default, its bounds and
the help text the CLI shows.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import PromptError
from .prompts import parse_float, parse_int


@dataclass(frozen=True)
class Option:
    name: str  # high-level API and CLI name (--iou-thres)
    generator: str  # SamAutomaticMaskGenerator argument
    kind: type  # int or float
    default: float
    low: float
    high: float | None
    help: str

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def parse(self, value: object, name: str | None = None) -> int | float:
        """A value (number or string) checked against the bounds; an int option takes 32.0 too.
        Errors call it `name` (default: the high-level name)."""
        name = name or self.name
        if self.kind is int:
            return parse_int(value, name, int(self.low), None if self.high is None else int(self.high))
        return parse_float(value, name, self.low, self.high if self.high is not None else float("inf"))


EVERYTHING = (
    Option("points_per_side", "points_per_side", int, 32, 1, None, "grid of N x N point prompts"),
    Option("points_per_batch", "points_per_batch", int, 64, 1, None, "point prompts per batch (memory)"),
    Option("iou_thres", "pred_iou_thresh", float, 0.88, 0, 1, "keep masks whose predicted IoU is above this"),
    Option(
        "stability_score_thres",
        "stability_score_thresh",
        float,
        0.95,
        0,
        1,
        "keep masks whose stability score (IoU of the mask at threshold -1 and +1) is at least this",
    ),
    Option("box_nms_thres", "box_nms_thresh", float, 0.7, 0, 1, "box IoU above which NMS drops a mask"),
    Option("crop_n_layers", "crop_n_layers", int, 0, 0, None, "extra layers of 2^i x 2^i image crops"),
    Option("crop_nms_thres", "crop_nms_thresh", float, 0.7, 0, 1, "NMS box IoU between masks of crops"),
    Option(
        "crop_overlap_ratio", "crop_overlap_ratio", float, 512 / 1500, 0, 1, "overlap of neighbouring crops"
    ),
    Option(
        "crop_n_points_downscale_factor",
        "crop_n_points_downscale_factor",
        int,
        1,
        1,
        None,
        "points per side divided by this in each crop layer",
    ),
    Option(
        "min_mask_region_area",
        "min_mask_region_area",
        int,
        0,
        0,
        None,
        "remove islands and fill holes smaller than this many pixels (needs the amg extra)",
    ),
)
BY_NAME = {o.name: o for o in EVERYTHING}
# The mask decoder's precision in segment everything (not an Option: a choice, not a number).
DECODER_PRECISIONS = ("float32", "bf16")
BY_GENERATOR = {o.generator: o for o in EVERYTHING}


def check_decoder_precision(value: object, name: str = "decoder_precision") -> str:
    """`value` if it is one of DECODER_PRECISIONS, else a PromptError naming `name`."""
    if value not in DECODER_PRECISIONS:
        raise PromptError(f"{name} must be one of {DECODER_PRECISIONS}, got {value!r}")
    return value


def generator_kwargs(options: dict[str, object]) -> dict[str, int | float]:
    """High-level options (values or strings) -> checked SamAutomaticMaskGenerator arguments."""
    unknown = sorted(set(options) - set(BY_NAME))
    if unknown:
        renamed = [f"{k} is {BY_GENERATOR[k].name} here" for k in unknown if k in BY_GENERATOR]
        hint = f" ({'; '.join(renamed)})" if renamed else ""
        raise PromptError(f"unknown segment-everything option(s) {unknown}{hint}; known: {sorted(BY_NAME)}")
    return {BY_NAME[k].generator: BY_NAME[k].parse(v) for k, v in options.items() if v is not None}
