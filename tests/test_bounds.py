"""Box bounds from low-res logits, and segment everything skipping the candidates NMS
surely suppresses: the bounds hold, the skip changes no output, and it does skip."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import IMAGES, SMALL
from PIL import Image

from mobilesam.automatic_mask_generator import SamAutomaticMaskGenerator, _Candidates
from mobilesam.modeling.sam import low_res_region, upscale_masks
from mobilesam.transforms import ResizeLongestSide
from mobilesam.utils import amg
from mobilesam.utils.bounds import box_bounds, surely_suppressed
from mobilesam.utils.nms import box_iou_one

SIZES = [(1, 1), (3, 700), (1200, 1800), (1024, 1024), (10000, 300), (517, 33), (77, 1301)]


def _logits(kind: str, n: int, size: int, gen: torch.Generator) -> torch.Tensor:
    if kind == "noise":  # the synthetic weights' logits: independent from cell to cell
        return torch.randn(n, size, size, generator=gen) * 40
    coarse = torch.randn(n, 1, 12, 12, generator=gen)  # a real model's: smooth blobs
    return F.interpolate(coarse, (size, size), mode="bicubic")[:, 0] * 20 + 2


@pytest.mark.parametrize("kind", ["noise", "smooth"])
@pytest.mark.parametrize("size", SIZES, ids=[f"{h}x{w}" for h, w in SIZES])
@pytest.mark.parametrize("low,threshold", [(256, 0.0), (200, 1.5)], ids=["256", "200-thr1.5"])
def test_box_bounds_hold(kind, size, low, threshold):
    """inner <= the real box <= outer wherever `known`; outer holds for every non-empty mask.
    low=200 takes upscale_masks' general path (1024 is not a multiple of 200)."""
    gen = torch.Generator().manual_seed(hash((kind, size, low)) % 2**31)
    logits = _logits(kind, 12, low, gen)
    inp = ResizeLongestSide.get_preprocess_shape(*size, 1024)
    rows, cols = low_res_region((low, low), inp, 1024)
    inner, outer, known = box_bounds(logits[:, :rows, :cols], (low, low), inp, size, 1024, threshold)
    masks = upscale_masks(logits[:, None], inp, size, 1024)[:, 0] > threshold
    boxes = amg.masks_to_boxes_torch(masks)
    for i in range(len(logits)):
        box = boxes[i]
        if masks[i].any():
            assert (box[:2] >= outer[i, :2]).all() and (box[2:] <= outer[i, 2:]).all()
        if known[i]:
            assert masks[i].any()
            assert (box[:2] <= inner[i, :2]).all() and (box[2:] >= inner[i, 2:]).all()
    if kind == "smooth" and size[0] * size[1] > 100:
        assert known.float().mean() > 0.8  # the bounds are not vacuous
        assert (inner - boxes)[known].abs().float().mean() < 0.02 * max(size)


def test_box_bounds_claim_nothing_for_non_finite_logits():
    logits = torch.full((3, 172, 257), 5.0)
    logits[0, 10, 10] = float("nan")
    logits[1, 0, 0] = float("inf")
    _, _, known = box_bounds(logits, (256, 256), (683, 1024), (1200, 1800), 1024, 0.0)
    assert known.tolist() == [False, False, True]


def test_surely_suppressed_is_sound():
    """Whenever it says so, every box between the bounds has NMS IoU above the threshold."""
    rng = np.random.default_rng(0)
    said = 0
    for _ in range(400):
        inner = np.sort(rng.integers(0, 200, (2, 2)), axis=0).T.reshape(-1)[[0, 2, 1, 3]]
        grow = rng.integers(0, 30, 4) * np.array([-1, -1, 1, 1])
        outer = inner + grow
        kept = np.concatenate([inner + rng.integers(-20, 20, 4) for _ in range(3)]).reshape(3, 4)
        kept = np.concatenate([np.minimum(kept[:, :2], kept[:, 2:]), np.maximum(kept[:, :2], kept[:, 2:])], 1)
        thresh = rng.uniform(0.3, 0.9)
        if not surely_suppressed(inner, outer, kept, thresh):
            continue
        said += 1
        for _ in range(20):
            box = np.array([rng.integers(outer[j], inner[j] + 1) for j in (0, 1)] + [0, 0])
            box[2:] = [rng.integers(inner[j], outer[j] + 1) for j in (2, 3)]
            iou = box_iou_one(box.astype(np.float32), kept.astype(np.float32)).astype(np.float64)
            assert (iou > thresh).any()
    assert said > 20
    assert not surely_suppressed(np.array([0, 0, 9, 9]), np.array([0, 0, 9, 9]), np.zeros((0, 4)), 0.5)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"points_per_side": 6},
        {"points_per_side": 5, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0},
        {"points_per_side": 5, "box_nms_thresh": 0.3, "mask_chunk": 3, "pred_iou_thresh": 0.5},
        {"points_per_side": 2, "crop_n_layers": 1, "pred_iou_thresh": 0.5},
    ],
    ids=["default", "no-filters", "nms0.3", "crops"],
)
def test_skipping_suppressed_candidates_changes_nothing(small_sam_vit_t, kwargs, monkeypatch):
    image = np.asarray(Image.open(IMAGES / "picture2.jpg").convert("RGB"))
    upsampled = []
    upscale = _Candidates.upscale
    monkeypatch.setattr(_Candidates, "upscale", lambda self, i: upsampled.append(len(i)) or upscale(self, i))
    every = SamAutomaticMaskGenerator(
        small_sam_vit_t, skip_suppressed=False, output_mode="coco_rle", **kwargs
    )
    expected = every.generate(image)
    all_candidates = sum(upsampled)
    upsampled.clear()
    fast = SamAutomaticMaskGenerator(small_sam_vit_t, output_mode="coco_rle", **kwargs).generate(image)
    assert fast == expected and expected
    assert sum(upsampled) < all_candidates  # some were skipped
    if "crop_n_layers" not in kwargs:  # the synthetic weights' masks overlap a lot
        assert sum(upsampled) < all_candidates / 2


def test_candidates_kept_on_the_device_change_nothing(small_sam_vit_t, monkeypatch):
    """A GPU keeps low-res candidates where they were decoded (up to a budget), the rest go
    to the host store: here on the CPU, a budget that holds some of them, the rest in a
    store that spills to its file. The same annotations as all in the host store."""
    from mobilesam import automatic_mask_generator as amg_module

    image = np.asarray(Image.open(IMAGES / "picture2.jpg").convert("RGB"))
    kwargs = {"points_per_side": 5, "pred_iou_thresh": 0.5, "box_nms_thresh": 0.3, "mask_chunk": 3}
    expected = SamAutomaticMaskGenerator(small_sam_vit_t, output_mode="coco_rle", **kwargs).generate(image)
    kinds = []
    add = _Candidates.add

    def spy(self, low_res, iou, points):
        add(self, low_res, iou, points)
        kinds[:] = [type(h).__name__ for h in self.handles]

    monkeypatch.setattr(_Candidates, "add", spy)
    block = (SMALL // 4) ** 2 * 4  # at most, per candidate
    monkeypatch.setattr(amg_module, "_resident_bytes", lambda device: 20 * block)
    spilled = SamAutomaticMaskGenerator(
        small_sam_vit_t, output_mode="coco_rle", mask_memory_bytes=block, **kwargs
    )
    assert spilled.generate(image) == expected and expected
    assert {"Tensor", "ndarray", "tuple"} <= set(kinds)  # on the device, in memory, in the file


@pytest.mark.parametrize("shape", [(1, 1), (31, 4)])
def test_skipping_on_tiny_images(small_sam_vit_t, shape):
    image = np.random.default_rng(0).integers(0, 255, (*shape, 3), dtype=np.uint8)
    kwargs = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
    every = SamAutomaticMaskGenerator(small_sam_vit_t, skip_suppressed=False, **kwargs).generate(image)
    fast = SamAutomaticMaskGenerator(small_sam_vit_t, **kwargs).generate(image)
    assert len(fast) == len(every) >= 1
    np.testing.assert_equal(fast, every)  # NaN stability scores (empty masks) compare equal


@pytest.mark.parametrize(
    "kwargs",
    [
        {"points_per_side": None, "point_grids": [np.zeros((0, 2))]},
        {"points_per_side": 2, "pred_iou_thresh": 0.0, "stability_score_thresh": 1.0},
    ],
    ids=["no-prompt", "nothing-passes-stability"],
)
def test_nothing_surviving_a_filter(small_sam_vit_t, kwargs):
    """No candidate at all (nothing stored, nothing to upsample), or candidates of which
    no chunk keeps one (empty chunks packed): an empty result, not an error."""
    image = np.asarray(Image.open(IMAGES / "picture2.jpg").convert("RGB"))
    generator = SamAutomaticMaskGenerator(small_sam_vit_t, output_mode="coco_rle", **kwargs)
    assert generator.generate(image) == []
    assert len(generator.generate_records(image)) == 0


def test_a_chunk_without_candidates_adds_nothing(small_sam_vit_t, truck):
    """Every prompt of a chunk filtered out by predicted IoU (the synthetic weights' IoUs
    exceed 1, so the filter cannot do it here): the decoder's empty output is skipped."""
    from mobilesam.predictor import SamPredictor

    p = SamPredictor(small_sam_vit_t)
    p.set_image(truck)
    low_res, iou, _ = p.decode_points(torch.tensor([[500.0, 300.0]]), float("inf"))
    candidates = _Candidates(p, truck.shape[:2], 1 << 20)
    candidates.add(low_res, iou, torch.zeros(0, 2, dtype=torch.float64))
    assert len(low_res) == 0 and candidates.handles == [] and len(candidates.iou) == 0
