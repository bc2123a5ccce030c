"""Binary masks as polygons: exact pixel-edge outlines, simplified on request.

Coordinates are COCO's: x right, y down, and pixel (row r, column c) is the unit square
[c, c+1] x [r, r+1]. Outlines follow pixel edges, so the pixel centres inside a mask's
polygon (even-odd rule, as pycocotools and OpenCV fill) are exactly its pixels; with a
`tolerance` the outlines are simplified (Douglas-Peucker, in pixels) and that holds
within the tolerance.

A part is a set of pixels joined by shared edges (pixels touching at a corner are two
parts). A polygon with holes, or with several parts, is one closed path: its loops are
joined by zero-width cuts walked there and back, which add no area.
"""

from __future__ import annotations

import itertools

import numpy as np

from .boxes import masks_to_boxes

# Step of each edge direction: 0 +x, 1 +y, 2 -x, 3 -y (y down; outer loops run clockwise).
_STEP = np.array([[1, 0], [0, 1], [-1, 0], [0, -1]])


def _edges(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every pixel edge between the mask and the rest, directed so that the mask is on
    its right: (start vertex (x, y), direction) per edge."""
    p = np.pad(mask.astype(bool), 1)
    h = p[1:, 1:-1] != p[:-1, 1:-1]  # edge on line y = r, from x = c to c + 1
    v = p[1:-1, 1:] != p[1:-1, :-1]  # edge on line x = c, from y = r to r + 1
    hy, hx = np.nonzero(h)
    vy, vx = np.nonzero(v)
    right = p[hy + 1, hx + 1]  # the pixel below is in the mask: the edge runs +x
    down = p[vy + 1, vx]  # the pixel left of it is in the mask: the edge runs +y
    starts = np.concatenate(
        [
            np.stack([np.where(right, hx, hx + 1), hy], 1),
            np.stack([vx, np.where(down, vy, vy + 1)], 1),
        ]
    )
    dirs = np.concatenate([np.where(right, 0, 2), np.where(down, 1, 3)])
    return starts, dirs


def _loops(mask: np.ndarray) -> list[np.ndarray]:
    """The mask's boundary loops as corner vertices (Kx2 int x, y): outer loops clockwise on
    screen (positive shoelace area, y down), holes the other way. Traced inside the mask's
    extent: an object in a big image costs its own size (an export of 10,000 objects on
    1800x1200 images spent 8 of its 10 ms per object on the empty rest of the image)."""
    if not mask.any():
        return []
    x0, y0, x1, y1 = (int(v) for v in masks_to_boxes(mask[None])[0])
    corner = np.array([x0, y0])
    return [loop + corner for loop in _traced(mask[y0 : y1 + 1, x0 : x1 + 1])]


def _traced(mask: np.ndarray) -> list[np.ndarray]:
    """`_loops` of a mask, in its own coordinates."""
    starts, dirs = _edges(mask)
    if len(dirs) == 0:
        return []
    width = mask.shape[1] + 1
    key = (starts[:, 1] * width + starts[:, 0]) * 4 + dirs
    order = np.argsort(key)
    key = key[order]
    ends = starts + _STEP[dirs]
    end_vertex = ends[:, 1] * width + ends[:, 0]
    nxt = np.full(len(dirs), -1)
    # Where two edges leave a vertex (pixels touching at a corner), turn right: the loop
    # stays with its pixel, so those pixels are two parts.
    for turn in (1, 0, 3):
        want = end_vertex * 4 + (dirs + turn) % 4
        at = np.minimum(np.searchsorted(key, want), len(key) - 1)
        found = (key[at] == want) & (nxt < 0)
        nxt[found] = order[at[found]]
    corner = dirs != dirs[nxt]  # the next edge turns: its start is a vertex of the polygon
    nxt_list, corner_list = nxt.tolist(), corner.tolist()
    seen = bytearray(len(dirs))
    loops = []
    for first in np.flatnonzero(corner).tolist():
        if seen[first]:
            continue
        vertices, e = [], first
        while not seen[e]:
            seen[e] = 1
            if corner_list[e]:
                vertices.append(e)
            e = nxt_list[e]
        loops.append(ends[vertices])
    return loops


def _area(loop: np.ndarray) -> float:
    x, y = loop[:, 0].astype(np.float64), loop[:, 1].astype(np.float64)
    return float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y)) / 2


def _inside(point: np.ndarray, loop: np.ndarray) -> bool:
    """Even-odd test of a point that lies on no pixel edge (a pixel centre)."""
    x, y = point
    a, b = loop, np.roll(loop, -1, axis=0)
    crosses = (a[:, 1] > y) != (b[:, 1] > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        at_x = a[:, 0] + (y - a[:, 1]) * (b[:, 0] - a[:, 0]) / (b[:, 1] - a[:, 1])
    return bool(np.count_nonzero(crosses & (at_x > x)) % 2)


def simplify_loop(loop: np.ndarray, tolerance: float) -> np.ndarray:
    """Douglas-Peucker on a closed loop; the loop itself if fewer than 3 vertices would stay."""
    if tolerance <= 0 or len(loop) <= 4:
        return loop
    pts = loop.astype(np.float64)
    far = int(np.argmax(((pts - pts[0]) ** 2).sum(1)))
    keep = np.zeros(len(loop), dtype=bool)
    keep[[0, far]] = True
    stack = [(0, far), (far, len(loop))]  # index len(loop) is vertex 0 again
    closed = np.vstack([pts, pts[:1]])
    while stack:
        i, j = stack.pop()
        if j - i < 2:
            continue
        a, b, mid = closed[i], closed[j], closed[i + 1 : j]
        d = b - a
        norm = np.hypot(*d)
        if norm == 0:
            dist = np.hypot(*(mid - a).T)
        else:
            dist = np.abs(d[0] * (mid[:, 1] - a[1]) - d[1] * (mid[:, 0] - a[0])) / norm
        k = int(np.argmax(dist))
        if dist[k] > tolerance:
            keep[i + 1 + k] = True
            stack += [(i, i + 1 + k), (i + 1 + k, j)]
    return loop[keep] if keep.sum() >= 3 else loop


def _nearest(a: np.ndarray, b: np.ndarray, most: int = 2048) -> tuple[int, int]:
    """Indices of a near pair of vertices, one of a and one of b: the nearest pair when
    both have at most `most` vertices, else the nearest pair of every k-th vertex, refined
    (the cost stays under most**2 distances; any pair gives a correct path)."""
    sa, sb = -(-len(a) // most), -(-len(b) // most)
    best = (np.inf, 0, 0)
    for s in range(0, len(b), 256 * sb):  # in slices, to bound memory
        d = ((a[::sa, None, :] - b[None, s : s + 256 * sb : sb, :]) ** 2).sum(-1)
        i, j = np.unravel_index(int(np.argmin(d)), d.shape)
        if d[i, j] < best[0]:
            best = (d[i, j], int(i) * sa, s + int(j) * sb)
    _, i, j = best
    if sa > 1 or sb > 1:
        i = int(np.argmin(((a - b[j]) ** 2).sum(1)))
        j = int(np.argmin(((b - a[i]) ** 2).sum(1)))
    return i, j


def join_polygons(loops: list[np.ndarray]) -> np.ndarray:
    """One closed path through the polygons, in scan order (top to bottom): each loop is cut
    into the one before it at their nearest vertices, walked round, and left by the same
    cut. The path reads: every loop up to its cut, the last loop, every loop after its cut."""
    loops = sorted(loops, key=lambda loop: tuple(loop[np.lexsort(loop.T)[0]][::-1]))
    heads, tails, entry = [], [], 0
    for a, b in itertools.pairwise(loops):
        i, j = _nearest(a, b)
        ring = np.roll(a, -entry, axis=0)
        if heads:  # not the first loop: walked back to where it was entered
            ring = np.vstack([ring, ring[:1]])
        cut = (i - entry) % len(a)
        heads.append(ring[: cut + 1])
        tails.append(ring[cut:])
        entry = j
    last = np.roll(loops[-1], -entry, axis=0)
    if heads:
        last = np.vstack([last, last[:1]])
    return np.concatenate([*heads, last, *tails[::-1]])


def mask_to_polygons(mask: np.ndarray, tolerance: float = 0.0, holes: bool = True) -> list[np.ndarray]:
    """HxW bool mask -> one polygon (Kx2 int32 x, y) per part, largest part first.

    holes: each part's holes are cut into its polygon (filled, the polygon is the part);
    False fills them (the outer outline only, as most polygon tools draw). tolerance:
    Douglas-Peucker simplification in pixels (0: exact, every corner)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be HxW, got shape {mask.shape}")
    loops = _loops(mask)
    areas = [_area(loop) for loop in loops]
    outers = sorted((i for i, a in enumerate(areas) if a > 0), key=lambda i: -areas[i])
    parts: dict[int, list[np.ndarray]] = {i: [simplify_loop(loops[i], tolerance)] for i in outers}
    if holes and outers:
        x0, y0, x1, y1 = np.array([[*loops[i].min(0), *loops[i].max(0)] for i in outers]).T
        for h in (i for i, a in enumerate(areas) if a < 0):
            # A pixel centre inside the hole: left of its first edge (the mask is on the right).
            a, b = loops[h][-1], loops[h][0]
            step = np.sign(b - a)
            point = a + 0.5 * step + 0.5 * np.array([step[1], -step[0]])
            x, y = point
            near = np.flatnonzero((x0 < x) & (x < x1) & (y0 < y) & (y < y1))
            # The smallest outline around the hole is that of the part it is a hole of.
            part = next(outers[k] for k in near[::-1] if _inside(point, loops[outers[k]]))
            parts[part].append(simplify_loop(loops[h], tolerance))
    return [join_polygons(parts[i]).astype(np.int32) for i in outers]


def mask_outlines(mask: np.ndarray) -> list[np.ndarray]:
    """Every boundary loop of an HxW bool mask (Kx2 int32 corner vertices, exact), the
    largest enclosed area first. Outer outlines run clockwise on screen (positive
    `loop_area`, y down), holes the other way. A loop lies inside every larger loop around
    it, so filling them in this order (an outline's inside set, a hole's cleared) gives
    the mask back: each pixel takes the value of the smallest loop around it."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be HxW, got shape {mask.shape}")
    loops = _loops(mask)
    areas = [_area(loop) for loop in loops]
    order = sorted(range(len(loops)), key=lambda i: -abs(areas[i]))
    return [loops[i].astype(np.int32) for i in order]


def loop_area(loop: np.ndarray) -> float:
    """Signed area (shoelace, y down): positive for an outer outline, negative for a hole."""
    return _area(np.asarray(loop))


def mask_to_polygon(mask: np.ndarray, tolerance: float = 0.0, holes: bool = True) -> np.ndarray:
    """The whole mask as one polygon (Kx2 int32; 0x2 for an empty mask): its parts, largest
    first, joined by zero-width cuts. For formats with one polygon per object (YOLO)."""
    polygons = mask_to_polygons(mask, tolerance, holes)
    return join_polygons(polygons) if polygons else np.zeros((0, 2), dtype=np.int32)


def fill_polygons(polygons: list[np.ndarray], size: tuple[int, int]) -> np.ndarray:
    """Polygons -> HxW bool mask: the pixel centres inside any of them (each filled by the
    even-odd rule; several are a union, as COCO's). The inverse of `mask_to_polygons` at
    tolerance 0; a polygon from elsewhere fills as pycocotools does but on some pixels its
    outline passes close to. An edge counts for the centre lines in [its top, its bottom),
    so an outline through a pixel centre's line at a vertex crosses it once; a centre on a
    left or top edge is inside, on a right or bottom edge outside."""
    h, w = size
    loops = [q for q in (np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in polygons) if len(q) >= 3]
    if not loops:
        return np.zeros((h, w), dtype=bool)
    # Every polygon's edges at once: vertex i runs to vertex i + 1 of its own polygon.
    sizes = np.array([len(q) for q in loops])
    x0, y0 = np.concatenate(loops).T
    ahead = np.arange(len(x0)) + 1
    ahead[np.cumsum(sizes) - 1] = np.cumsum(sizes) - sizes
    x1, y1, owner = x0[ahead], y0[ahead], np.repeat(np.arange(len(loops)), sizes)
    # Rows whose centre line y = r + 0.5 an edge crosses, half-open: lo <= r + 0.5 < hi.
    lo, hi = np.minimum(y0, y1), np.maximum(y0, y1)
    first = np.clip(np.ceil(lo - 0.5), 0, h).astype(np.int64)
    count = np.maximum(np.clip(np.ceil(hi - 0.5), 0, h).astype(np.int64) - first, 0)
    if not count.any():
        return np.zeros((h, w), dtype=bool)
    edge = np.repeat(np.arange(len(x0)), count)  # each edge's rows: first, first + 1, ...
    rows = np.repeat(first, count) + (np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count))
    x = x0[edge] + (rows + 0.5 - y0[edge]) * (x1[edge] - x0[edge]) / (y1[edge] - y0[edge])
    # Per polygon and row, crossings left to right: inside between pairs (even-odd).
    order = np.lexsort((x, rows, owner[edge]))
    rows, cols = rows[order], np.clip(np.ceil(x[order] - 0.5), 0, w).astype(np.int64)
    # Columns whose centre c + 0.5 lies in [x_in, x_out): +1 / -1 per row, summed over the
    # polygons (a union: covered by one or more), within the rows and columns they reach.
    r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    flat = (rows - r0) * (c1 - c0) + (cols - c0)
    n = (r1 - r0) * (c1 - c0)
    diff = np.bincount(flat[0::2], minlength=n) - np.bincount(flat[1::2], minlength=n)
    out = np.zeros((h, w), dtype=bool)
    out[r0:r1, c0 : c1 - 1] = np.cumsum(diff.reshape(r1 - r0, c1 - c0), axis=1)[:, :-1] > 0
    return out
