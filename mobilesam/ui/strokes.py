"""Brush, eraser and polygon strokes: hand corrections of an object's mask in the UI, kept
with the object and applied again on top of every new prediction for it.

A stroke is {"mode": "add" | "erase", "radius": r, "points": [[x, y], ...]} in
original-image pixels (x right, y down; pixel (i, j) is the square [i, i+1) x [j, j+1),
its centre (i + 0.5, j + 0.5), as the prompts' coordinates). It covers every pixel whose
centre lies within r of the polyline through its points (one point: a disc), and sets
those pixels ("add") or clears them ("erase"). A polygon is a stroke with "closed": true
(3 points or more): it also covers the pixel centres inside the polygon (even-odd, as
COCO's polygons fill), and its outline includes the closing edge. Strokes apply in order.

`outline` turns a mask into closed strokes whose vertices a person can drag (the page's
vertex tool): its outlines add, its holes erase, the largest first, at a radius too small
to touch a pixel centre, so the strokes alone paint the outlined shape.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import PromptError
from ..prompts import is_number
from ..utils.polygons import fill_polygons, loop_area, mask_outlines, simplify_loops

MAX_RADIUS = 256.0
MAX_POINTS = 5000  # per stroke; the page sends a point per radius/2 of movement
MAX_STROKES = 1000  # per object
OUTLINE_RADIUS = 0.01  # an outline stroke's reach beyond its inside: no pixel centre in practice
OUTLINE_LOOPS = 500  # the most loops (outlines and holes) an outline gives, the largest
OUTLINE_VERTICES = 4000  # in all; the tolerance doubles until the outline fits


def check_strokes(strokes: object) -> list[dict]:
    """The strokes as sent by a client (not trusted): a list of strokes, each checked field
    by field, returned with plain float coordinates. PromptError names the bad one."""
    if not isinstance(strokes, list):
        raise PromptError("strokes must be a list of {mode, radius, points}")
    if len(strokes) > MAX_STROKES:
        raise PromptError(f"at most {MAX_STROKES} strokes per object")
    return [_check_stroke(s, i) for i, s in enumerate(strokes)]


def _check_stroke(stroke: object, i: int) -> dict:
    if not isinstance(stroke, dict):
        raise PromptError(f"stroke {i} is not an object")
    mode, radius, points = stroke.get("mode"), stroke.get("radius"), stroke.get("points")
    if mode not in ("add", "erase"):
        raise PromptError(f"stroke {i}: mode must be 'add' or 'erase', got {mode!r}")
    if not is_number(radius) or not 0 < radius <= MAX_RADIUS:
        raise PromptError(f"stroke {i}: radius must be a number in (0, {MAX_RADIUS:g}], got {radius!r}")
    if not isinstance(points, list) or not 1 <= len(points) <= MAX_POINTS:
        raise PromptError(f"stroke {i}: points must be a list of 1 to {MAX_POINTS} [x, y] pairs")
    for p in points:
        if not (isinstance(p, list) and len(p) == 2 and all(is_number(v) and abs(v) < 1e6 for v in p)):
            raise PromptError(f"stroke {i}: a point is not [x, y] with finite numbers: {p!r}")
    out = {"mode": mode, "radius": float(radius), "points": [[float(x), float(y)] for x, y in points]}
    closed = stroke.get("closed", False)
    if not isinstance(closed, bool):
        raise PromptError(f"stroke {i}: closed must be true or false, got {closed!r}")
    if closed:
        if len(points) < 3:
            raise PromptError(f"stroke {i}: a closed stroke (a polygon) needs at least 3 points")
        out["closed"] = True
    return out


def paint(mask: np.ndarray, strokes: list[dict]) -> np.ndarray:
    """HxW bool `mask` with `strokes` (checked: `check_strokes`) applied in order, as a new
    array. Each segment of a stroke touches only its bounding box, clipped to the image."""
    out = np.array(mask, dtype=bool)
    h, w = out.shape
    for stroke in strokes:
        r, value = stroke["radius"], stroke["mode"] == "add"
        pts = np.asarray(stroke["points"], dtype=np.float64).reshape(-1, 2)
        if stroke.get("closed"):
            _fill(out, pts, value)
            pts = np.concatenate([pts, pts[:1]])  # the outline with its closing edge
        ends = pts[1:] if len(pts) > 1 else pts
        for a, b in zip(pts, ends):
            x0, y0 = (max(0, math.floor(min(a[k], b[k]) - r)) for k in (0, 1))
            x1, y1 = min(w, math.ceil(max(a[0], b[0]) + r)), min(h, math.ceil(max(a[1], b[1]) + r))
            if x0 >= x1 or y0 >= y1:
                continue  # the segment's reach lies outside the image
            cx = np.arange(x0, x1) + 0.5  # pixel centres
            cy = np.arange(y0, y1)[:, None] + 0.5
            d = b - a
            length2 = float(d @ d)
            t = 0.0 if length2 == 0 else np.clip(((cx - a[0]) * d[0] + (cy - a[1]) * d[1]) / length2, 0, 1)
            near = (cx - a[0] - t * d[0]) ** 2 + (cy - a[1] - t * d[1]) ** 2 <= r * r
            out[y0:y1, x0:x1][near] = value
    return out


def _fill(out: np.ndarray, pts: np.ndarray, value: bool) -> None:
    """Set the pixels of `out` whose centres lie inside polygon `pts`, within its bounding box."""
    h, w = out.shape
    x0, y0 = (max(0, math.floor(v)) for v in pts.min(0))
    x1, y1 = min(w, math.ceil(pts[:, 0].max())), min(h, math.ceil(pts[:, 1].max()))
    if x0 < x1 and y0 < y1:
        inside = fill_polygons([pts - (x0, y0)], (y1 - y0, x1 - x0))  # whole pixels: centres kept
        out[y0:y1, x0:x1][inside] = value


def outline(mask: np.ndarray, tolerance: float = 1.0) -> dict:
    """HxW bool `mask` as closed strokes to edit vertex by vertex: {"strokes", the
    "tolerance" used (Douglas-Peucker, pixels; doubled from the one asked for until
    every vertex fits in OUTLINE_VERTICES), "left_out": loops beyond the OUTLINE_LOOPS
    largest (specks), "left_out_px": their area}. Painted in order on an empty mask the
    strokes give back `mask` (exactly at tolerance 0, the loops left out aside)."""
    if not is_number(tolerance) or not 0 <= tolerance <= 64:
        raise PromptError(f"tolerance must be a number of pixels in [0, 64], got {tolerance!r}")
    loops = mask_outlines(mask)
    if not loops:
        raise PromptError("the mask is empty: it has no outline to edit")
    kept, rest = loops[:OUTLINE_LOOPS], loops[OUTLINE_LOOPS:]
    while True:
        simple = simplify_loops(kept, tolerance)
        if sum(map(len, simple)) <= OUTLINE_VERTICES or tolerance >= 64:
            break
        tolerance = min(64.0, max(2 * tolerance, 0.5))
    strokes = [
        {
            "mode": "add" if loop_area(loop) > 0 else "erase",
            "radius": OUTLINE_RADIUS,
            "points": loop.astype(float).tolist(),
            "closed": True,
        }
        for loop in simple
    ]
    return {
        "strokes": strokes,
        "tolerance": float(tolerance),
        "left_out": len(rest),
        "left_out_px": int(sum(abs(loop_area(loop)) for loop in rest)),
    }
