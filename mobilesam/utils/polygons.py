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


def _joined(loops: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Loops (not none) as one array: (vertices, each loop's start, each vertex's next
    vertex in its own loop)."""
    xy = np.concatenate(loops)
    starts = np.cumsum([0] + [len(loop) for loop in loops[:-1]])
    nxt = np.arange(1, len(xy) + 1)
    nxt[np.append(starts[1:], len(xy)) - 1] = starts  # each loop's last vertex -> its first
    return xy, starts, nxt


def _areas(loops: list[np.ndarray]) -> np.ndarray:
    """Signed shoelace areas of integer loops, all in one pass (exact: integer sums)."""
    if not loops:
        return np.zeros(0)
    xy, starts, nxt = _joined(loops)
    xy = xy.astype(np.int64)
    cross = xy[:, 0] * xy[nxt, 1] - xy[nxt, 0] * xy[:, 1]
    return np.add.reduceat(cross, starts) / 2


def _part_of_loops(mask: np.ndarray, loops: list[np.ndarray], areas: np.ndarray) -> np.ndarray:
    """For every loop of `mask`, the index of its part's outer loop (an outer loop's own).

    A hole's part is the one its mask pixels belong to: those just right of its rightmost
    edge. The run of mask pixels from there along the row ends at an edge of another loop
    of the same part: its outer loop, or a hole reaching further right, whose part is found
    the same way (so the chain ends). All holes at once: runs from the mask's rows, the
    edge they end at looked up among every loop's vertical edges."""
    owner = np.arange(len(loops))
    holes = np.flatnonzero(areas < 0)
    if len(holes) == 0:
        return owner
    xy, _, nxt = _joined(loops)
    loop_of = np.repeat(owner, [len(loop) for loop in loops])
    vertical = np.flatnonzero(xy[:, 0] == xy[nxt, 0])  # edge i -> nxt[i] on the line x
    x, y0 = xy[vertical, 0], np.minimum(xy[vertical, 1], xy[nxt[vertical], 1])
    # Each hole's rightmost vertical edge: the pixel right of its top row is the part's.
    top = np.lexsort((y0, -x, loop_of[vertical]))  # per loop: largest x, then smallest y
    first = top[np.searchsorted(loop_of[vertical][top], holes)]
    col, row = x[first], y0[first]
    # Where that row's run of mask pixels ends (the padding column ends every row).
    rows, at = np.unique(row, return_inverse=True)
    padded = np.pad(np.asarray(mask, dtype=bool)[rows], ((0, 0), (0, 1)))
    gaps = np.flatnonzero(~padded.ravel())
    width = padded.shape[1]
    end = gaps[np.searchsorted(gaps, at * width + col)] - at * width
    # The vertical edge at (end, row): edges sorted by x, then top; the last one starting
    # at or above the row's centre.
    key = x.astype(np.float64) * (mask.shape[0] + 2) + y0
    order = np.argsort(key)
    hit = order[np.searchsorted(key[order], end * (mask.shape[0] + 2) + row + 0.5) - 1]
    owner[holes] = loop_of[vertical[hit]]
    while True:  # a hole's owner may be a hole further right: follow to the outer loop
        step = owner[owner]
        if np.array_equal(step, owner):
            return owner
        owner = step


def simplify_loop(loop: np.ndarray, tolerance: float) -> np.ndarray:
    """Douglas-Peucker on a closed loop; the loop itself if fewer than 3 vertices would stay."""
    return simplify_loops([loop], tolerance)[0]


def _first_max(values: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per segment of `values` (segments begin at `starts`, none empty): the largest value
    and the index of its first occurrence, as np.argmax gives."""
    best = np.maximum.reduceat(values, starts)
    seg = np.repeat(np.arange(len(starts)), np.diff(np.append(starts, len(values))))
    index = np.where(values == best[seg], np.arange(len(values)), len(values))
    return best, np.minimum.reduceat(index, starts)


def simplify_loops(loops: list[np.ndarray], tolerance: float) -> list[np.ndarray]:
    """`simplify_loop` of every loop, all loops at once: Douglas-Peucker on closed loops, from
    each loop's first vertex and the vertex farthest from it, splitting every segment whose
    farthest inner vertex is more than `tolerance` from its chord. One numpy pass per level
    of splitting over all loops' segments (a mask's thousands of specks cost one call each
    when simplified one by one). A loop keeps itself if fewer than 3 vertices would stay."""
    todo = [i for i, loop in enumerate(loops) if tolerance > 0 and len(loop) > 4]
    out = list(loops)
    if not todo:
        return out
    # Every loop closed by its first vertex again, all in one array.
    sizes = np.array([len(loops[i]) for i in todo])
    begin = np.append(0, np.cumsum(sizes[:-1]))  # each loop's start in `flat`
    flat = np.concatenate([loops[i] for i in todo])
    pts = np.insert(flat, begin + sizes, flat[begin], axis=0).astype(np.float64)
    first = begin + np.arange(len(todo))  # each loop's start in `pts`
    own = np.repeat(np.arange(len(todo)), sizes + 1)
    vertex = np.ones(len(pts), dtype=bool)
    vertex[first + sizes] = False  # the closing copies are no candidates for the farthest
    span = np.flatnonzero(vertex)
    reach, far = _first_max(((pts[span] - pts[first[own[span]]]) ** 2).sum(1), begin)
    far = span[far]
    keep = np.zeros(len(pts), dtype=bool)
    keep[first] = keep[far] = True
    # A loop whose vertices all coincide has nothing to split (and its chords no length);
    # in any other, no chord is of zero length: a split vertex lies off its chord's line.
    spread = np.tile(reach > 0, 2)
    a, b = np.concatenate([first, far])[spread], np.concatenate([far, first + sizes])[spread]
    while True:
        inner = b - a - 1
        a, b, inner = a[inner > 0], b[inner > 0], inner[inner > 0]
        if len(a) == 0:
            break
        starts = np.append(0, np.cumsum(inner[:-1]))
        seg = np.repeat(np.arange(len(a)), inner)
        mid = pts[a[seg] + 1 + np.arange(len(seg)) - starts[seg]]
        pa, d = pts[a], pts[b] - pts[a]
        norm = np.hypot(d[:, 0], d[:, 1])
        dist = np.abs(d[seg, 0] * (mid[:, 1] - pa[seg, 1]) - d[seg, 1] * (mid[:, 0] - pa[seg, 0]))
        dist /= norm[seg]
        best, at = _first_max(dist, starts)
        split = best > tolerance
        m = a[split] + 1 + at[split] - starts[split]
        keep[m] = True
        a, b = np.concatenate([a[split], m]), np.concatenate([m, b[split]])
    keep = keep[vertex]  # as `flat`
    kept = np.add.reduceat(keep, begin)
    for k in np.flatnonzero(kept >= 3).tolist():
        out[todo[k]] = loops[todo[k]][keep[begin[k] : begin[k] + sizes[k]]]  # its own dtype
    return out


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
    if len(loops) == 1:
        return loops[0].copy()
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
    signed = _areas(loops)
    areas = signed.tolist()
    outers = sorted((i for i, a in enumerate(areas) if a > 0), key=lambda i: -areas[i])
    simple = simplify_loops(loops, tolerance)  # the exact loops stay for finding holes' parts
    parts: dict[int, list[np.ndarray]] = {i: [simple[i]] for i in outers}
    if holes and outers:
        owner = _part_of_loops(mask, loops, signed)
        for h in (i for i, a in enumerate(areas) if a < 0):
            parts[int(owner[h])].append(simple[h])
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
    areas = _areas(loops).tolist()
    order = sorted(range(len(loops)), key=lambda i: -abs(areas[i]))
    return [loops[i].astype(np.int32) for i in order]


def loop_area(loop: np.ndarray) -> float:
    """Signed area (shoelace, y down): positive for an outer outline, negative for a hole."""
    return float(_areas([np.asarray(loop)])[0])


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
    xy, _, ahead = _joined(loops)
    x0, y0 = xy.T
    x1, y1, owner = x0[ahead], y0[ahead], np.repeat(np.arange(len(loops)), [len(q) for q in loops])
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
