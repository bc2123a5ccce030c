"""Pure helpers: COCO RLE (byte-compatible with pycocotools), boxes, overlay drawing."""

from __future__ import annotations

import numpy as np
import pytest

from mobilesam.utils import rle
from mobilesam.utils.boxes import masks_to_boxes, xyxy_to_xywh
from mobilesam.visualize import mask_edges, overlay, palette


def test_rle_matches_pycocotools_strings(parity_cases):
    """Decoding the fixture's pycocotools RLE and re-encoding gives the same bytes."""
    checked = 0
    for case in parity_cases:
        for ref in case.get("masks_rle", [])[:2]:
            mask = rle.decode(ref)
            assert mask.shape == tuple(ref["size"])
            assert rle.encode(mask)["counts"] == ref["counts"]
            assert rle.area(ref) == mask.sum()
            checked += 1
    assert checked > 5


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (64, 48)])
def test_rle_round_trip(shape):
    rng = np.random.default_rng(shape[0])
    for mask in (rng.random(shape) > 0.5, np.zeros(shape, bool), np.ones(shape, bool)):
        for compressed in (True, False):
            enc = rle.encode(mask, compressed)
            assert np.array_equal(rle.decode(enc), mask)
            assert rle.area(enc) == mask.sum()


def test_rle_hand_made():
    mask = np.array([[0, 1], [1, 1]], bool)  # column-major: 0, 1, 1, 1
    assert rle.encode(mask, compressed=False)["counts"] == [1, 3]
    assert rle.encode(np.ones((2, 2), bool), compressed=False)["counts"] == [0, 4]
    with pytest.raises(ValueError, match="sum to"):
        rle.decode({"size": [2, 2], "counts": [1, 2]})


def test_masks_to_boxes():
    masks = np.zeros((3, 10, 12), bool)
    masks[0, 2:5, 3:9] = True
    masks[1, 7, 11] = True
    boxes = masks_to_boxes(masks)
    np.testing.assert_array_equal(boxes, [[3, 2, 8, 4], [11, 7, 11, 7], [0, 0, 0, 0]])
    np.testing.assert_array_equal(xyxy_to_xywh(boxes[:1]), [[3, 2, 5, 2]])


def test_overlay_colours_masks_and_draws_prompts():
    image = np.full((60, 80, 3), 100, np.uint8)
    masks = np.zeros((2, 60, 80), bool)
    masks[0, 10:50, 10:70] = True
    masks[1, 20:30, 20:30] = True  # small, inside the big one: painted last, stays visible
    colors = palette(2)
    assert len({tuple(c) for c in colors}) == 2
    out = np.asarray(overlay(image, masks, alpha=0.5, contours=False))
    np.testing.assert_allclose(out[40, 60], 0.5 * 100 + 0.5 * colors[0], atol=1)
    np.testing.assert_allclose(out[25, 25], 0.5 * (0.5 * 100 + 0.5 * colors[0]) + 0.5 * colors[1], atol=1)
    np.testing.assert_array_equal(out[5, 5], [100, 100, 100])
    drawn = np.asarray(overlay(image, masks[:0], points=np.array([[40, 30]]), labels=np.array([0])))
    assert tuple(drawn[30, 40]) == (230, 0, 0)
    np.testing.assert_array_equal(
        np.asarray(overlay(image, masks, alpha=1, contours=False))[40, 60], colors[0]
    )
    from mobilesam import PromptError

    for alpha in (-0.1, 1.5, float("nan")):  # would wrap around uint8 (or be NaN): refused
        with pytest.raises(PromptError, match="alpha"):
            overlay(image, masks, alpha=alpha)


def test_mask_edges():
    m = np.zeros((7, 7), bool)
    m[1:6, 1:6] = True
    e = mask_edges(m, width=1)
    assert e[1, 3] and e[3, 1] and not e[3, 3] and not e[0, 0]


def test_tune_allocator_on_glibc():
    import sys

    from mobilesam import tune_allocator

    result = tune_allocator()
    assert result is tune_allocator()  # applied once, cached
    if sys.platform.startswith("linux") and "glibc" in " ".join(__import__("platform").libc_ver()):
        assert result is True


def test_overlay_paints_each_mask_in_its_box_largest_first():
    """The banded, box-limited overlay equals the plain per-pixel blend."""
    from mobilesam.visualize import mask_edges, overlay, palette

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (300, 280, 3), dtype=np.uint8)
    masks = np.zeros((3, 300, 280), bool)
    masks[0, 10:290, 5:270] = True  # large, painted first
    masks[1, 50:120, 60:200] = True
    masks[2, 299, 0] = True  # one pixel in a corner
    got = np.asarray(overlay(image, list(masks), alpha=0.4))
    ref = image.copy()
    colors = palette(3)
    for i in (0, 1, 2):
        m = masks[i]
        ref[m] = ((ref[m] * np.float32(0.6) + colors[i].astype(np.float32) * np.float32(0.4)).round()).astype(
            np.uint8
        )
        ref[mask_edges(m)] = (colors[i] * 0.6).round().astype(np.uint8)
    np.testing.assert_array_equal(got, ref)


def _brute_dilate(mask: np.ndarray, radius: float) -> np.ndarray:
    """Every pixel whose centre is within `radius` of a mask pixel's, by all distances."""
    ys, xs = np.nonzero(mask)
    if not len(ys):
        return mask.copy()
    gy, gx = np.mgrid[: mask.shape[0], : mask.shape[1]]
    return ((gy[..., None] - ys) ** 2 + (gx[..., None] - xs) ** 2).min(-1) <= radius * radius


def test_dilate_grows_a_mask_by_a_disc():
    from mobilesam.utils.regions import dilate

    rng = np.random.default_rng(0)
    shapes = [(1, 1), (1, 9), (9, 1), *[tuple(rng.integers(2, 30, 2)) for _ in range(40)]]
    for shape in shapes:
        mask = rng.random(shape) < rng.random() * 0.1
        for radius in (0, 0.5, 1, 1.5, 2, 2.9, 5, 7.3, 40):
            assert np.array_equal(dilate(mask, radius), _brute_dilate(mask, radius)), (shape, radius)
    one = np.zeros((50, 50), bool)
    one[25, 25] = True
    assert dilate(one, 15).sum() == 709  # the lattice points of a radius-15 disc
    assert dilate(one, 15)[25].sum() == 31 and not dilate(one, 15)[25 - 11, 25 - 11]  # 11² + 11² > 15²
    assert dilate(one, 3) is not one and dilate(np.zeros((4, 4), bool), 3).sum() == 0
    for bad in (-1, float("nan"), float("inf"), "2", True):
        with pytest.raises(ValueError, match="radius"):
            dilate(one, bad)
    with pytest.raises(ValueError, match="HxW"):
        dilate(np.zeros((2, 2, 2), bool), 1)


def test_cutout_keeps_the_masked_pixels_on_transparency():
    from mobilesam.visualize import cutout

    image = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    mask = np.zeros((40, 60), bool)
    mask[10:20, 30:45] = True
    mask[12, 31] = False  # a hole
    out = np.asarray(cutout(image, mask))
    assert out.shape == (10, 15, 4)
    inside = mask[10:20, 30:45]
    assert (out[..., 3] == inside * 255).all()
    assert (out[inside][:, :3] == image[10:20, 30:45][inside]).all() and (out[~inside] == 0).all()
    whole = np.asarray(cutout(image, mask, crop=False))
    assert whole.shape == (40, 60, 4) and (whole[..., 3] > 0).sum() == mask.sum()
    with pytest.raises(ValueError, match="nothing to cut out"):
        cutout(image, np.zeros((40, 60), bool))

    big = np.zeros((80, 100), bool)
    big[20:60, 30:70] = True
    photo = np.full((80, 100, 3), 200, np.uint8)
    soft = np.asarray(cutout(photo, big, feather=2))  # a soft edge: the crop grows by 6 each side
    assert soft.shape == (52, 52, 4)
    alpha = soft[..., 3].astype(int)
    assert alpha[26, 26] == 255 and alpha[0, 0] == 0 and alpha[26, 0] == 0  # deep inside, far outside
    assert 96 < alpha[26, 6] < 160 and 0 < alpha[26, 4] < alpha[26, 6] < alpha[26, 8] < 255  # across the edge
    assert (soft[alpha > 0][:, :3] == 200).all() and (soft[alpha == 0] == 0).all()
    edge = np.asarray(cutout(photo, big[:, :40], feather=2))  # the crop stays inside the image
    assert edge.shape[:2] == (52, 16)
    for bad in (-1, float("nan"), 1000, True):
        with pytest.raises(ValueError, match="feather"):
            cutout(photo, big, feather=bad)


def test_rle_area_and_box_from_the_runs_alone():
    """A COCO RLE's area and XYWH box without decoding it: pycocotools' area and toBbox."""
    from pycocotools import mask as coco_mask

    rng = np.random.default_rng(0)
    shapes = [(1, 1), (1, 7), (7, 1), *[tuple(rng.integers(2, 25, 2)) for _ in range(300)]]
    for shape in shapes:
        mask = rng.random(shape) < rng.random() ** 3  # empty, sparse and full masks
        ref = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
        for r in (rle.encode(mask), rle.encode(mask, compressed=False)):
            area, bbox = rle.area_bbox(r)
            assert area == coco_mask.area(ref) and bbox == coco_mask.toBbox(ref).astype(int).tolist(), shape


def test_atomic_writes_name_the_place_in_the_way(tmp_path):
    """A result saved over a folder, or below a file, is an OSError naming that place, not
    the rename of a temporary file; nothing is left behind, and a plain write replaces
    the file whole."""
    from mobilesam.utils.files import atomic_write_text

    (tmp_path / "a_file").write_text("kept")
    (tmp_path / "a_folder").mkdir()
    with pytest.raises(IsADirectoryError, match=r"a folder is there, not a file: '.*a_folder'"):
        atomic_write_text(tmp_path / "a_folder", "{}")
    with pytest.raises(NotADirectoryError, match=r"a file is there, not a folder: '.*a_file'"):
        atomic_write_text(tmp_path / "a_file" / "out.json", "{}")
    assert (tmp_path / "a_file").read_text() == "kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "a_folder"]
    assert list((tmp_path / "a_folder").iterdir()) == []
    atomic_write_text(tmp_path / "new" / "out.json", "{}")
    assert (tmp_path / "new" / "out.json").read_text() == "{}"
