"""Soft masks from the model's logits (`utils.matte`): the model's upscaling without torch,
and an alpha that is soft only on the outline and never contradicts the mask."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mobilesam.modeling.sam import upscale_masks
from mobilesam.transforms import ResizeLongestSide
from mobilesam.utils.matte import resize_bilinear, soft_mask, upscale_logits

# (H, W) of photos: wider and taller than the model input, smaller (a downscale), tiny.
SIZES = [(1200, 1800), (4000, 3000), (375, 500), (7, 5), (1, 1), (1, 3000)]


def model_logits(low: np.ndarray, input_size: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    return upscale_masks(torch.from_numpy(low)[None, None], input_size, size, 1024)[0, 0].numpy()


def test_resize_bilinear_is_torchs_interpolate():
    rng = np.random.default_rng(0)
    for _ in range(30):
        a = rng.standard_normal(tuple(rng.integers(1, 40, 2))).astype(np.float32)
        size = tuple(int(v) for v in rng.integers(1, 90, 2))
        ref = F.interpolate(torch.from_numpy(a)[None, None], size, mode="bilinear", align_corners=False)[0, 0]
        assert np.abs(resize_bilinear(a, size) - ref.numpy()).max() < 1e-5, (a.shape, size)
        x0, y0 = int(rng.integers(0, size[1])), int(rng.integers(0, size[0]))
        x1, y1 = int(rng.integers(x0 + 1, size[1] + 1)), int(rng.integers(y0 + 1, size[0] + 1))
        part = resize_bilinear(a, size, (x0, y0, x1, y1))
        assert np.array_equal(part, resize_bilinear(a, size)[y0:y1, x0:x1])


@pytest.mark.parametrize("size", SIZES)
def test_upscale_logits_is_the_models_upscaling(size):
    """The same logits as `upscale_masks` (up to float rounding), for the image as encoded
    and for one shrunk by input_size_percent (smaller in the model frame)."""
    low = (np.random.default_rng(1).standard_normal((256, 256)) * 8).astype(np.float32)
    for shrink in (1.0, 0.37):
        small = (max(1, round(size[0] * shrink)), max(1, round(size[1] * shrink)))
        input_size = ResizeLongestSide.get_preprocess_shape(*small, 1024)
        ref = model_logits(low, input_size, size)
        assert np.abs(upscale_logits(low, input_size, size) - ref).max() < 2e-3
        window = (size[1] // 3, size[0] // 4, size[1] // 3 + 1 + size[1] // 5, size[0] // 2 + 1)
        x0, y0, x1, y1 = window
        assert np.abs(upscale_logits(low, input_size, size, window) - ref[y0:y1, x0:x1]).max() < 2e-3


def blob_logits() -> np.ndarray:
    """A round object with steep edges (12 logits per low-res cell), a weak patch inside it
    (+0.4) and a weak patch outside (-0.4): where a sigmoid alone would leave a hole and
    a halo."""
    yy, xx = np.mgrid[:256, :256]
    r = np.hypot(yy - 90, xx - 110)
    low = np.clip((40 - r) * 12, -20, 20)
    low[(np.abs(yy - 90) < 6) & (np.abs(xx - 110) < 6)] = 0.4
    low[(np.abs(yy - 90) < 6) & (np.abs(xx - 162) < 6)] = -0.4
    return low.astype(np.float32)


@pytest.mark.parametrize("size", [(1200, 1800), (375, 500), (2400, 1600)])  # portrait: several row bands
def test_soft_mask_is_soft_on_the_outline_only(size):
    low = blob_logits()
    input_size = ResizeLongestSide.get_preprocess_shape(*size, 1024)
    logits = model_logits(low, input_size, size)
    mask = logits > 0
    alpha = soft_mask(low, mask, input_size)
    assert alpha.dtype == np.uint8 and alpha.shape == size
    assert np.array_equal(alpha >= 128, mask)  # never contradicts the mask
    partial = (alpha > 0) & (alpha < 255)
    ys, xs = np.nonzero(partial)
    # Soft pixels exist and lie on the object's outline (its radius, 40 cells, in pixels) ...
    cell = size[0] / input_size[0] * 4
    r = np.hypot((ys + 0.5) / cell - 90, (xs + 0.5) / cell - 110)
    assert len(ys) > 100 and np.abs(r - 40).max() < 2
    # ... where they are the logits' sigmoid.
    expected = 255 / (1 + np.exp(-logits[ys, xs].astype(np.float64)))
    assert np.abs(alpha[ys, xs] - expected).max() <= 1.01
    # No hole where the logits are weak inside, no halo where they are weak outside.
    inner = (int(90 * cell), int(110 * cell))
    weak_out = (int(90 * cell), int(162 * cell))
    assert mask[inner] and alpha[inner] == 255
    assert not mask[weak_out] and alpha[weak_out] == 0
    # Along a ray out of the centre the alpha only falls.
    row = alpha[inner[0], inner[1] :].astype(int)
    assert (np.diff(row) <= 0).all() and row[0] == 255 and row[-1] == 0
    # The whole matte, computed over the whole image with torch's upscaling: the sigmoid
    # where the pixel's cells straddle the threshold, the mask elsewhere.
    share = model_logits((low > 0).astype(np.float32), input_size, size)
    edge = (share > 1e-6) & (share < 1 - 1e-6)
    sigmoid = 255 / (1 + np.exp(-logits.astype(np.float64)))
    expected = np.where(edge, sigmoid, mask * 255.0)
    assert np.abs(alpha - expected).max() <= 1.01
    assert (partial & ~mask).sum() > 100  # the soft edge reaches outside the mask too


def test_soft_mask_follows_the_mask_it_is_given():
    """Another runtime's upscaling (ONNX, a GPU) can put a pixel on the other side of the
    threshold: the matte still agrees with the mask given, 128 or more exactly on it."""
    low = blob_logits()
    size = (1200, 1800)
    input_size = ResizeLongestSide.get_preprocess_shape(*size, 1024)
    logits = model_logits(low, input_size, size)
    near = np.abs(logits) < 1.5
    mask = (logits > 0) ^ (near & (np.random.default_rng(2).random(size) < 0.5))
    assert (mask != (logits > 0)).sum() > 50
    alpha = soft_mask(low, mask, input_size)
    assert np.array_equal(alpha >= 128, mask)


def test_soft_mask_of_nothing_and_of_a_hard_edge():
    low = np.full((256, 256), -20, np.float32)
    assert soft_mask(low, np.zeros((30, 40), bool), (768, 1024)).sum() == 0
    # Steps of +-20 between cells: the only soft pixels are the few on the step itself.
    low[:, :128] = 20
    size = (768, 1024)
    mask = model_logits(low, size, size) > 0
    alpha = soft_mask(low, mask, size)
    assert np.array_equal(alpha >= 128, mask)
    assert set(np.nonzero((alpha > 0) & (alpha < 255))[1]) <= {510, 511, 512, 513}


def test_soft_mask_of_an_edited_mask_leaves_no_ghosts():
    """A mask edited after the model (segment everything's min_mask_region_area: an island
    removed, a hole filled) has no soft edge where it has no edge: no faint ring where the
    hole was, no faint outline where the island was; the rest of the matte is unchanged."""
    low = blob_logits()
    yy, xx = np.mgrid[:256, :256]
    island, hole = (
        (np.abs(yy - 90) < 3) & (np.abs(xx - 200) < 3),
        (np.abs(yy - 90) < 3) & (np.abs(xx - 95) < 3),
    )
    low[island], low[hole] = 6, -6
    size = (1200, 1800)
    input_size = ResizeLongestSide.get_preprocess_shape(*size, 1024)
    cell = size[0] / input_size[0] * 4
    py, px = (np.mgrid[: size[0], : size[1]] + 0.5) / cell

    def near(cy, cx, cells):  # pixels within `cells` low-res cells of a cell's centre
        return (np.abs(py - cy - 0.5) < cells) & (np.abs(px - cx - 0.5) < cells)

    raw = model_logits(low, input_size, size) > 0
    edited = raw.copy()
    edited[near(90, 200, 6)] = False
    edited[near(90, 95, 6)] = True
    assert (raw != edited).sum() > 1000
    before, after = soft_mask(low, raw, input_size), soft_mask(low, edited, input_size)
    assert np.array_equal(after >= 128, edited)
    ghost, ring = near(90, 200, 8), near(90, 95, 8)
    assert ((before > 0) & (before < 255) & ghost).sum() > 100  # the logits' edges are there
    assert ((before > 0) & (before < 255) & ring).sum() > 100
    assert (after[ghost] == 0).all() and (after[ring] == 255).all()
    assert np.array_equal(after[~ghost & ~ring], before[~ghost & ~ring])
