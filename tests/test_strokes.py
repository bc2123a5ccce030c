"""Brush and eraser strokes (ui/strokes.py): which pixels a stroke covers, the checks on
what a client sends, and the UI endpoints that apply them (`/paint`, `/predict`, saves)."""

from __future__ import annotations

import itertools
import math
import shutil

import numpy as np
import pytest
from conftest import IMAGES

from mobilesam.errors import PromptError
from mobilesam.ui.strokes import MAX_POINTS, MAX_RADIUS, OUTLINE_LOOPS, check_strokes, outline, paint
from mobilesam.utils import rle


def _stroke(points, radius=0.5, mode="add"):
    return {"mode": mode, "radius": radius, "points": points}


def _brute(shape, stroke) -> np.ndarray:
    """Pixel by pixel: the centre's distance to the nearest point of the polyline, sampled
    finely (independent of `paint`'s per-segment projection)."""
    pts = np.asarray(stroke["points"], float)
    if len(pts) > 1:
        t = np.linspace(0, 1, 2001)[:, None]
        pts = np.concatenate([a + t * (b - a) for a, b in itertools.pairwise(pts)])
    ys, xs = np.mgrid[: shape[0], : shape[1]] + 0.5
    d2 = ((xs[..., None] - pts[:, 0]) ** 2 + (ys[..., None] - pts[:, 1]) ** 2).min(-1)
    return d2 <= stroke["radius"] ** 2 + 1e-6


def test_a_point_is_a_disc_of_pixel_centres():
    empty = np.zeros((20, 30), bool)
    one = paint(empty, [_stroke([[10.5, 5.5]])])
    assert np.argwhere(one).tolist() == [[5, 10]]  # radius 0.5 on a centre: that pixel
    disc = paint(empty, [_stroke([[15, 10]], radius=3)])
    assert disc.sum() == sum(
        1 for y in range(20) for x in range(30) if (x + 0.5 - 15) ** 2 + (y + 0.5 - 10) ** 2 <= 9
    )
    assert abs(disc.sum() - math.pi * 9) < 6 and not empty.any()  # the input is not changed


@pytest.mark.parametrize(
    "stroke",
    [
        _stroke([[2.5, 5.5], [10.5, 5.5]]),
        _stroke([[3, 3], [17, 12], [4, 14]], radius=2.2),
        _stroke([[-5, -5], [40, 25]], radius=1.5),  # starts and ends outside the image
        _stroke([[7, 7], [7, 7], [7.2, 7.1]], radius=4),  # repeated points: zero-length segments
    ],
)
def test_a_polyline_covers_the_pixels_within_its_radius(stroke):
    got = paint(np.zeros((20, 30), bool), [stroke])
    assert np.array_equal(got, _brute((20, 30), stroke))


def _inside(shape, points) -> np.ndarray:
    """Pixel centres inside a polygon by the even-odd rule, one crossing test per edge."""
    ys, xs = np.mgrid[: shape[0], : shape[1]] + 0.5
    inside = np.zeros(shape, bool)
    pts = np.asarray(points, float)
    for (x0, y0), (x1, y1) in zip(pts, np.roll(pts, -1, axis=0)):
        if y0 == y1:
            continue
        crosses = (y0 > ys) != (y1 > ys)
        inside ^= crosses & (xs < x0 + (ys - y0) * (x1 - x0) / (y1 - y0))
    return inside


@pytest.mark.parametrize(
    "points",
    [
        [[3.3, 2.2], [20.7, 4.1], [9.2, 17.6]],  # a triangle
        [
            [2.2, 2.3],
            [25.1, 2.4],
            [25.3, 6.2],
            [8.1, 6.4],
            [8.3, 13.7],
            [25.2, 13.6],
            [24.9, 17.8],
            [2.4, 17.7],
        ],  # a C
        [[-10.3, -5.2], [12.4, 8.7], [40.1, -3.3], [35.2, 30.6], [-4.7, 26.1]],  # beyond the image
        [[2.2, 2.3], [27.6, 17.2], [27.4, 2.1], [2.3, 17.4]],  # a bow tie: two triangles
    ],
)
@pytest.mark.parametrize("radius", [0.5, 2.0])
def test_a_polygon_covers_its_inside_and_its_closed_outline(points, radius):
    stroke = {**_stroke(points, radius=radius), "closed": True}
    got = paint(np.zeros((20, 30), bool), [stroke])
    outline = _brute((20, 30), _stroke([*points, points[0]], radius=radius))
    assert np.array_equal(got, _inside((20, 30), points) | outline)
    assert (got & ~outline).any()  # filled, not only outlined
    full = np.ones((20, 30), bool)
    assert np.array_equal(paint(full, [{**stroke, "mode": "erase"}]), ~got)  # erasing: its complement


def test_strokes_apply_in_order_and_erase_clears():
    mask = np.zeros((20, 30), bool)
    mask[5:15, 5:25] = True
    erased = paint(mask, [_stroke([[0, 10], [30, 10]], radius=2, mode="erase")])
    assert not erased[8:12].any() and erased[5:8, 5:25].all() and erased[12:15, 5:25].all()
    again = paint(erased, [_stroke([[15, 10]], radius=1)])
    assert again[9:11, 14:16].all() and again.sum() == erased.sum() + 4
    assert np.array_equal(paint(mask, []), mask)
    nowhere = paint(mask, [_stroke([[-50, -50], [-40, -60]], radius=5)])  # entirely outside
    assert np.array_equal(nowhere, mask)


@pytest.mark.parametrize(
    ("strokes", "message"),
    [
        ("a line", "must be a list"),
        (["a line"], "stroke 0 is not an object"),
        ([_stroke([[1, 1]], mode="paint")], "mode must be 'add' or 'erase'"),
        ([_stroke([[1, 1]], radius=0)], "radius must be a number"),
        ([_stroke([[1, 1]], radius=MAX_RADIUS + 1)], "radius must be a number"),
        ([_stroke([[1, 1]], radius=True)], "radius must be a number"),
        ([_stroke([[1, 1]], radius=float("nan"))], "radius must be a number"),
        ([_stroke([])], "points must be a list of 1 to"),
        ([_stroke([[1, 1]] * (MAX_POINTS + 1))], "points must be a list of 1 to"),
        ([_stroke([[1, 1], [2]])], "a point is not"),
        ([_stroke([[1, "2"]])], "a point is not"),
        ([_stroke([[1, float("inf")]])], "a point is not"),
        ([_stroke([[1, 1]]), _stroke([[1, 1e9]])], "stroke 1: a point is not"),
        ([{**_stroke([[1, 1], [5, 5]]), "closed": True}], "a closed stroke .a polygon. needs at least 3"),
        ([{**_stroke([[1, 1], [5, 5], [1, 5]]), "closed": "yes"}], "closed must be true or false"),
    ],
)
def test_bad_strokes_are_refused_naming_the_stroke(strokes, message):
    with pytest.raises(PromptError, match=message):
        check_strokes(strokes)


def test_checked_strokes_are_plain_floats():
    got = check_strokes([{"mode": "erase", "radius": 3, "points": [[1, 2]], "colour": "red"}])
    assert got == [{"mode": "erase", "radius": 3.0, "points": [[1.0, 2.0]]}]
    polygon = check_strokes(
        [{"mode": "add", "radius": 1, "points": [[1, 2], [3, 4], [1, 4]], "closed": True}]
    )
    assert polygon[0]["closed"] is True
    assert "closed" not in check_strokes([{**_stroke([[1, 1]]), "closed": False}])[0]


# ---- the endpoints ----------------------------------------------------------------------


def _nested() -> np.ndarray:
    """A ring, an island in its hole with a hole of its own, a diagonal edge, a lone pixel."""
    m = np.zeros((60, 70), bool)
    m[5:50, 5:55] = True
    m[10:45, 10:50] = False
    m[15:40, 15:45] = True
    m[25:30, 25:30] = False
    m[55, 60] = True
    ys, xs = np.mgrid[:60, :70]
    m |= (xs - ys > 55) & (ys < 20)  # a staircase: simplified to a slope
    return m


def test_an_outline_painted_on_nothing_gives_the_mask_back():
    rng = np.random.default_rng(1)
    masks = [_nested(), np.ones((1, 1), bool), *(rng.random((30, 40)) < p for p in (0.2, 0.5, 0.8))]
    for mask in masks:
        out = outline(mask, tolerance=0)
        assert out["tolerance"] == 0 and out["left_out"] == 0
        strokes = check_strokes(out["strokes"])  # what the page sends back is accepted as is
        assert np.array_equal(paint(np.zeros(mask.shape, bool), strokes), mask)
    nested = outline(_nested(), tolerance=0)["strokes"]
    assert [s["mode"] for s in nested] == ["add", "erase", "add", "add", "erase", "add"]  # the largest first
    assert all(s["closed"] for s in nested)


def test_a_simplified_outline_stays_close_to_the_mask():
    mask = np.zeros((300, 400), bool)
    ys, xs = np.mgrid[:300, :400]
    mask[((xs - 200) / 150) ** 2 + ((ys - 150) / 100) ** 2 <= 1] = True  # an ellipse: a staircase outline
    mask[((xs - 200) / 40) ** 2 + ((ys - 150) / 30) ** 2 <= 1] = False  # with a hole
    exact, simple = outline(mask, tolerance=0), outline(mask)
    n = [sum(len(s["points"]) for s in o["strokes"]) for o in (exact, simple)]
    assert n[1] < n[0] / 5  # few vertices to drag
    back = paint(np.zeros(mask.shape, bool), simple["strokes"])
    assert (back & mask).sum() / (back | mask).sum() > 0.99
    assert not back[150, 200] and back[150, 300]  # the hole stays a hole


def test_an_outline_stays_editable_on_any_mask():
    rng = np.random.default_rng(2)
    noise = rng.random((400, 500)) < 0.5  # thousands of specks and holes
    out = outline(noise)
    assert len(out["strokes"]) == OUTLINE_LOOPS and out["left_out"] > 0 and out["left_out_px"] > 0
    assert sum(len(s["points"]) for s in out["strokes"]) <= 4000 and out["tolerance"] > 1
    check_strokes(out["strokes"])
    with pytest.raises(PromptError, match="empty"):
        outline(np.zeros((5, 5), bool))
    for bad in (-1, float("nan"), 100, "1"):
        with pytest.raises(PromptError, match="tolerance"):
            outline(_nested(), bad)


pytest.importorskip("fastapi")


@pytest.fixture()
def client(sam_vit_t, tmp_path):
    from fastapi.testclient import TestClient

    from mobilesam import SamPredictor
    from mobilesam.ui.model import ModelService
    from mobilesam.ui.server import create_app
    from mobilesam.ui.workspace import Workspace

    shutil.copy(IMAGES / "truck.jpg", tmp_path / "truck.jpg")
    service = ModelService(SamPredictor(sam_vit_t), cache_images=1)
    yield TestClient(create_app(Workspace(tmp_path, tmp_path / "out"), service, "vit_t"))
    service.close()


def test_paint_endpoint_draws_on_a_mask_or_on_nothing(client):
    url = "/api/images/truck.jpg/paint"
    line = _stroke([[100, 100], [300, 100]], radius=10)
    out = client.post(url, json={"strokes": [line]}).json()["mask"]
    want = paint(np.zeros((1200, 1800), bool), [line])
    assert np.array_equal(rle.decode(out["rle"]), want) and out["area"] == int(want.sum())
    assert out["bbox"] == [90, 90, 220, 20]
    erase = _stroke([[200, 100]], radius=30, mode="erase")
    out2 = client.post(url, json={"rle": out["rle"], "strokes": [erase]}).json()["mask"]
    assert np.array_equal(rle.decode(out2["rle"]), paint(want, [erase]))
    for body, status in (
        ({"rle": {"size": [10, 10], "counts": "0"}, "strokes": [line]}, 422),  # not a 10x10 RLE
        ({"rle": rle.encode(np.zeros((12, 18), bool)), "strokes": [line]}, 422),  # another size
        ({"strokes": [_stroke([[1, 1]], mode="blur")]}, 422),
        ({}, 422),
    ):
        r = client.post(url, json=body)
        assert r.status_code == status and "detail" in r.json(), body


def test_predict_applies_the_objects_strokes_and_saves_keep_them(client):
    body = {"points": [[500, 375, 1]]}
    plain = client.post("/api/images/truck.jpg/predict", json=body).json()
    strokes = [_stroke([[50, 50], [400, 60]], radius=25), _stroke([[500, 375]], radius=40, mode="erase")]
    painted = client.post("/api/images/truck.jpg/predict", json={**body, "strokes": strokes}).json()
    want = paint(rle.decode(plain["mask"]["rle"]), strokes)
    assert np.array_equal(rle.decode(painted["mask"]["rle"]), want)
    assert painted["mask"]["area"] == int(want.sum()) and painted["candidates"] == plain["candidates"]
    bad = client.post("/api/images/truck.jpg/predict", json={**body, "strokes": [{"mode": "add"}]})
    assert bad.status_code == 422 and "stroke 0" in bad.json()["detail"]

    obj = {"label": "car", "rle": painted["mask"]["rle"], "points": [[500, 375, 1]], "strokes": strokes}
    assert (
        client.put("/api/images/truck.jpg/annotations", json={"revision": 0, "objects": [obj]}).status_code
        == 200
    )
    saved = client.get("/api/images/truck.jpg/annotations").json()["objects"][0]
    assert saved["strokes"] == check_strokes(strokes)
    refused = client.put(
        "/api/images/truck.jpg/annotations",
        json={"revision": 1, "objects": [{**obj, "strokes": [_stroke([[1, 1]], radius=-1)]}]},
    )
    assert refused.status_code == 422 and "object 0: stroke 0" in refused.json()["detail"]


def test_outline_endpoint_gives_strokes_that_paint_the_mask(client):
    mask = np.zeros((1200, 1800), bool)
    mask[300:700, 400:1000] = True
    mask[400:500, 500:600] = False
    out = client.post("/api/images/truck.jpg/outline", json={"rle": rle.encode(mask), "tolerance": 0}).json()
    assert [s["mode"] for s in out["strokes"]] == ["add", "erase"]
    painted = client.post("/api/images/truck.jpg/paint", json={"rle": None, "strokes": out["strokes"]}).json()
    assert np.array_equal(rle.decode(painted["mask"]["rle"]), mask)
    for body in (
        {"rle": rle.encode(np.zeros((1200, 1800), bool))},  # nothing to outline
        {"rle": rle.encode(mask[:10])},  # another image's size
        {"rle": rle.encode(mask), "tolerance": -2},
        {},
    ):
        r = client.post("/api/images/truck.jpg/outline", json=body)
        assert r.status_code == 422 and r.json()["detail"], body
