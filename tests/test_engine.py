"""The GPU engine's CPU-testable core: buckets, the eager fallback, results equal to the
plain predictor, capture safety (no host-to-device copy or sync inside a captured
call), device preprocessing against PIL, on-device bit packing (bf16 teacher caching:
test_distill_cache.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import IMAGES, SMALL
from PIL import Image
from torch.utils._python_dispatch import TorchDispatchMode

from mobilesam import SamPredictor, build_sam
from mobilesam.automatic_mask_generator import SamAutomaticMaskGenerator
from mobilesam.engine import BUCKETS, Engine, GraphCache, bucket, pad_rows
from mobilesam.transforms import ResizeLongestSide
from mobilesam.utils import rle


def test_buckets_and_padding():
    assert [bucket(n) for n in (1, 2, 3, 5, 8, 9, 33, 64)] == [1, 2, 4, 8, 8, 16, 64, 64]
    with pytest.raises(ValueError, match="largest bucket"):
        bucket(BUCKETS[-1] + 1)
    x = torch.arange(6.0).view(3, 2)
    padded = pad_rows(x, 8)
    assert padded.shape == (8, 2) and torch.equal(padded[:3], x) and (padded[3:] == x[-1]).all()
    assert pad_rows(x, 3) is x


def test_graph_cache_runs_eagerly_off_cuda():
    cache = GraphCache(capture=True)
    assert cache.run("double", lambda t: (t * 2,), torch.ones(3))[0].tolist() == [2, 2, 2]
    assert len(cache) == 0  # nothing captured on a CPU


@pytest.fixture(scope="module")
def engine_pair(small_sam_vit_t, truck):
    plain = SamPredictor(small_sam_vit_t)
    plain.set_image(truck)
    graphed = SamPredictor(small_sam_vit_t, Engine(small_sam_vit_t))
    graphed.set_image(truck)
    return plain, graphed


def test_engine_encodes_as_the_model(engine_pair):
    plain, graphed = engine_pair
    assert torch.equal(plain.features, graphed.features)


@pytest.mark.parametrize("n_boxes", [1, 3, 70])  # 70: two chunks, the second padded from 6 to 8
def test_engine_boxes_match_the_plain_decoder(engine_pair, n_boxes):
    plain, graphed = engine_pair
    rng = np.random.default_rng(n_boxes)
    xy = rng.uniform(0, 0.75, (n_boxes, 2)) * SMALL  # in the model's frame
    boxes = torch.as_tensor(
        np.concatenate([xy, xy + rng.uniform(0.02, 0.25, (n_boxes, 2)) * SMALL], 1)
    ).float()
    for multimask in (False, True):
        want = plain.decode(None, None, boxes, None, multimask)
        got = graphed.decode(None, None, boxes, None, multimask)
        assert got[0].shape == want[0].shape == (n_boxes, 3 if multimask else 1, SMALL // 4, SMALL // 4)
        torch.testing.assert_close(got[0], want[0], atol=2e-3, rtol=1e-4)
        torch.testing.assert_close(got[1], want[1], atol=1e-5, rtol=1e-5)


def test_zero_prompt_sets_decode_to_nothing(engine_pair):
    """An empty batch goes through the decoder (the engine and the plain path, both
    attention shortcuts) instead of failing on an ambiguous reshape."""
    for predictor in engine_pair:
        for boxes, coords, labels in (
            (torch.zeros(0, 4), None, None),
            (None, torch.zeros(0, 1, 2), torch.ones(0, 1, dtype=torch.int)),
        ):
            low_res, iou = predictor.decode(coords, labels, boxes, None, True)
            assert low_res.shape == (0, 3, SMALL // 4, SMALL // 4) and iou.shape == (0, 3)


def test_engine_points_and_everything_match(engine_pair):
    plain, graphed = engine_pair
    masks_p, scores_p, _ = plain.predict(
        np.array([[500, 375], [900, 600]]), np.array([1, 0]), box=[300, 200, 1100, 800]
    )
    masks_g, scores_g, _ = graphed.predict(
        np.array([[500, 375], [900, 600]]), np.array([1, 0]), box=[300, 200, 1100, 800]
    )
    np.testing.assert_allclose(scores_g, scores_p, atol=1e-5)
    assert (masks_g != masks_p).mean() < 1e-4
    coords = torch.rand(11, 2) * SMALL
    for a, b in zip(plain.decode_points(coords, 0.5), graphed.decode_points(coords, 0.5)):
        assert a.shape == b.shape
        torch.testing.assert_close(b.float(), a.float(), atol=2e-3, rtol=1e-4)


def test_engine_segment_everything_matches(small_sam_vit_t, truck):
    kwargs = {"points_per_side": 4, "pred_iou_thresh": 0.5, "stability_score_thresh": 0.5}
    sam = small_sam_vit_t
    want = SamAutomaticMaskGenerator(SamPredictor(sam), **kwargs).generate(truck)
    got = SamAutomaticMaskGenerator(SamPredictor(sam, Engine(sam)), **kwargs).generate(truck)
    assert len(got) == len(want) > 0
    for g, w in zip(got, want):
        inter = np.logical_and(g["segmentation"], w["segmentation"]).sum()
        assert inter / np.logical_or(g["segmentation"], w["segmentation"]).sum() > 0.999


def test_compiled_engine_wiring(small_sam_vit_t, small_truck_predictor):
    """compile=True goes through torch.compile (the eager backend here: inductor takes minutes
    on a CPU) and gives the plain decoder's masks."""
    sam, plain = small_sam_vit_t, small_truck_predictor
    compiled = SamPredictor(sam, Engine(sam, compile=True, compile_backend="eager"))
    compiled.features, compiled.is_image_set = plain.features, True
    compiled.original_size, compiled.input_size = plain.original_size, plain.input_size
    box = np.array([425, 600, 700, 875])
    got = compiled.predict(box=box, multimask_output=False)
    want = plain.predict(box=box, multimask_output=False)
    np.testing.assert_allclose(got[2], want[2], atol=2e-3)


class _HostTraffic(TorchDispatchMode):
    """Records every operation that moves a tensor from the CPU to another device: inside
    a CUDA graph capture such a copy is an error (and a sync, with `.item()`, raises on
    the meta device anyway). Tensors built from Python data on a device (`torch.tensor`,
    `new_tensor`) are copied below the dispatcher, so those constructors are watched too."""

    def __init__(self, monkeypatch) -> None:
        super().__init__()
        self.copies: list[str] = []
        for owner, name in ((torch, "tensor"), (torch, "as_tensor"), (torch.Tensor, "new_tensor")):
            monkeypatch.setattr(owner, name, self._watch(getattr(owner, name), name))

    def _watch(self, build, name):
        def watched(*args, **kwargs):
            out = build(*args, **kwargs)
            if out.device.type != "cpu":
                self.copies.append(name)
            return out

        return watched

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        sources = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
        outs = out if isinstance(out, (tuple, list)) else (out,)
        to_device = any(isinstance(o, torch.Tensor) and o.device.type != "cpu" for o in outs)
        from_host = any(s.device.type == "cpu" and s.dim() > 0 for s in sources)
        if to_device and from_host:
            self.copies.append(str(func))
        return out


@pytest.mark.parametrize("kinds", [(False, True, False), (True, False, True), (True, True, True)])
def test_decoder_is_capturable(kinds, monkeypatch):
    """The engine's decode on meta tensors makes no host-to-device copy (the first GPU run
    found one: a scale tensor built from a Python list in the prompt encoder)."""
    with torch.device("meta"):
        sam = build_sam("vit_t")
        engine = Engine(sam, graphs=False)
        features = torch.zeros(1, 256, 64, 64)
        pe = torch.zeros(1, 256, 64, 64)
        coords, labels, boxes = torch.zeros(4, 2, 2), torch.ones(4, 2, dtype=torch.int), torch.zeros(4, 4)
    has_points, has_box, multimask = kinds
    autocast_enabled = torch.is_autocast_enabled  # has no answer for "meta"
    monkeypatch.setattr(
        torch, "is_autocast_enabled", lambda *d: False if d == ("meta",) else autocast_enabled(*d)
    )
    mode = _HostTraffic(monkeypatch)
    with torch.inference_mode(), mode:
        low_res, _ = engine.decode(
            features,
            pe,
            coords if has_points else None,
            labels if has_points else None,
            boxes if has_box else None,
            multimask,
        )
    assert low_res.shape == (4, 3 if multimask else 1, 256, 256)
    assert mode.copies == []


def test_host_traffic_check_catches_copies(monkeypatch):
    mode = _HostTraffic(monkeypatch)
    x = torch.zeros(2, 2, device="meta")
    with mode:
        x * torch.ones(2).to("meta")
        x * x.new_tensor([1.0, 2.0])
    assert mode.copies == ["aten._to_copy.default", "new_tensor"]


@pytest.mark.parametrize("name", ["truck.jpg", "picture1.jpg", "picture3.jpg"])
def test_device_resize_matches_pil(name):
    """99.9% of pixels equal PIL's, none off by more than 1 (both downscaling and, for
    picture1 (770x769), enlarging)."""
    rgb = np.asarray(Image.open(IMAGES / name).convert("RGB"))
    t = ResizeLongestSide(1024)
    want = t.apply_image(rgb).astype(np.int16)
    got = t.apply_image_uint8_torch(torch.from_numpy(rgb.copy()))[0].permute(1, 2, 0).numpy()
    assert got.shape == want.shape
    diff = np.abs(got.astype(np.int16) - want)
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3


def test_device_resize_tiny_and_exact_sizes():
    t = ResizeLongestSide(1024)
    one = torch.full((1, 1, 3), 200, dtype=torch.uint8)
    assert t.apply_image_uint8_torch(one).shape == (1, 3, 1024, 1024)
    assert (t.apply_image_uint8_torch(one) == 200).all()
    same = torch.randint(0, 256, (1024, 600, 3), dtype=torch.uint8)
    assert torch.equal(t.apply_image_uint8_torch(same)[0], same.permute(2, 0, 1).float())


def test_device_preprocess_masks_match(sam_vit_t, truck, truck_predictor):
    on_device = SamPredictor(sam_vit_t, device_preprocess=True)
    on_device.set_image(truck)
    assert (on_device.features - truck_predictor.features).abs().max() < 0.05
    for box in ([425, 600, 700, 875], [0, 0, 1799, 1199], [1240, 675, 1400, 750]):
        a = on_device.predict(box=np.array(box))[0]
        b = truck_predictor.predict(box=np.array(box))[0]
        assert np.logical_and(a, b).sum() / max(1, np.logical_or(a, b).sum()) > 0.995


@pytest.mark.parametrize("shape", [(3, 7, 5), (2, 8, 8), (0, 4, 4), (1, 1, 1)])
def test_pack_columns_torch_equals_numpy(shape):
    masks = torch.rand(shape) > 0.5
    packed, areas = rle.pack_columns_torch(masks)
    want_bits, want_areas = rle.pack_columns(masks.numpy())
    assert packed.dtype == torch.uint8 and packed.shape == (shape[0], -(-shape[1] * shape[2] // 8))
    assert np.array_equal(packed.numpy(), np.array(want_bits).reshape(packed.shape))
    assert np.array_equal(areas.numpy(), want_areas)
