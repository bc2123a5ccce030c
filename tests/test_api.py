"""The high-level API: prompts in, masks at the original size out, exports that round-trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import IMAGES, synthetic_state_dict
from PIL import Image

from mobilesam import MobileSAM, MobileSAMError, PromptError
from mobilesam.utils import rle

BOXES = [[425, 600, 700, 875], [1240, 675, 1400, 750], [1375, 550, 1650, 800]]


def same_mask(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to float32 last-bit differences between batched and single decoding
    (the parity fixture's rule: IoU >= 0.999)."""
    return np.logical_and(a, b).sum() >= 0.999 * np.logical_or(a, b).sum()


@pytest.fixture(scope="module")
def sam(ckpt_vit_t):
    return MobileSAM(ckpt_vit_t, device="cpu")


def test_boxes_batched_equal_one_by_one(sam, truck_predictor):
    result = sam.segment(IMAGES / "truck.jpg", input_box=json.dumps(BOXES))
    assert result.masks.shape == (3, 1200, 1800) and result.masks.dtype == bool
    assert result.file_name == "truck.jpg"
    for i, box in enumerate(BOXES):
        masks, scores, _ = truck_predictor.predict(box=np.array(box), multimask_output=False)
        assert same_mask(result.masks[i], masks[0])
        assert result.scores[i] == pytest.approx(scores[0], abs=1e-4)
    assert list(result.mask_ids) == [0, 0, 0]


def test_box_with_points_is_a_real_combination(sam, truck_predictor, truck):
    result = sam.segment(truck, input_box=BOXES[0], input_point=[[575, 750]], input_point_label=[1])
    masks, _, _ = truck_predictor.predict(
        point_coords=np.array([[575, 750]]),
        point_labels=np.array([1]),
        box=np.array(BOXES[0]),
        multimask_output=False,
    )
    assert same_mask(result.masks[0], masks[0])
    alone = sam.segment(truck, input_box=BOXES[0])
    assert not np.array_equal(alone.masks[0], result.masks[0])


def test_mask_id_selects_token_order(sam, truck_predictor, truck):
    masks, scores, _ = truck_predictor.predict(
        point_coords=np.array([[500, 375]]), point_labels=np.array([1])
    )
    for mask_id in (1, 2, 3):
        result = sam.segment(truck, input_point="[[500, 375]]", mask_id=str(mask_id))
        assert same_mask(result.masks[0], masks[mask_id - 1])
        assert result.mask_ids[0] == mask_id
    best = sam.segment(truck, input_point=[[500, 375]])
    assert same_mask(best.masks[0], masks[np.argmax(scores)])
    assert best.mask_ids[0] == np.argmax(scores) + 1


def test_input_size_percent_keeps_original_size(sam, truck):
    full = sam.segment(truck, input_box=BOXES[0])
    half = sam.segment(truck, input_box=BOXES[0], input_size_percent="50")
    assert half.masks.shape == full.masks.shape == (1, 1200, 1800)
    assert sam.predictor.original_size == (600, 900)
    inter = np.logical_and(half.masks, full.masks).sum()
    assert inter / np.logical_or(half.masks, full.masks).sum() > 0.5  # same object, coarser


def test_embedding_reused_for_same_image(sam, truck, monkeypatch):
    sam.segment(truck, input_box=BOXES[0])
    calls = []
    monkeypatch.setattr(sam.predictor, "set_image", lambda *a, **k: calls.append(1))
    sam.segment(truck.copy(), input_box=BOXES[1])
    assert calls == []


def test_embedding_of_changed_encoder_weights_not_reused(ckpt_vit_t, truck, tmp_path):
    """`MobileSAM.model` is the torch model: weights loaded into it (another fine-tune)
    make the next call encode the image again, even the same image."""
    other = tmp_path / "other.pt"
    torch.save(synthetic_state_dict("vit_t", seed=1, img_size=256), other)
    sam = MobileSAM(ckpt_vit_t, device="cpu", img_size=256)
    before = sam.segment(truck, input_box=BOXES[0])
    sam.model.load_state_dict(torch.load(other))
    after = sam.segment(truck, input_box=BOXES[0])
    expected = MobileSAM(other, device="cpu", img_size=256).segment(truck, input_box=BOXES[0])
    assert not np.allclose(after.low_res_logits, before.low_res_logits, atol=1e-2)
    np.testing.assert_allclose(after.low_res_logits, expected.low_res_logits, rtol=0, atol=1e-4)
    np.testing.assert_array_equal(after.masks, expected.masks)
    original = MobileSAM(ckpt_vit_t, device="cpu", img_size=256).model
    for part in ("image_encoder", "prompt_encoder", "mask_decoder"):  # the first weights back,
        setattr(sam.model, part, getattr(original, part))  # in other modules
    again = sam.segment(truck, input_box=BOXES[0])
    np.testing.assert_allclose(again.low_res_logits, before.low_res_logits, rtol=0, atol=1e-4)


def test_exports(sam, tmp_path):
    result = sam.segment(
        IMAGES / "truck.jpg", input_box=BOXES, input_point=[[575, 750], [1300, 700]], input_point_label=[1, 0]
    )
    overlay = result.save_overlay(tmp_path / "overlay.png")
    assert Image.open(overlay).size == (1800, 1200)
    files = result.save_masks(tmp_path / "masks")
    assert len(files) == 3
    np.testing.assert_array_equal(np.asarray(Image.open(files[1])) > 127, result.masks[1])
    coco = json.loads(result.save_json(tmp_path / "r.json").read_text())
    assert coco["images"][0] == {"id": 1, "width": 1800, "height": 1200, "file_name": "truck.jpg"}
    for ann, mask, score in zip(coco["annotations"], result.masks, result.scores):
        assert np.array_equal(rle.decode(ann["segmentation"]), mask)
        assert ann["area"] == mask.sum() and ann["score"] == pytest.approx(float(score))
        assert ann["prompt"]["labels"] == [1, 0]
    from pycocotools import mask as coco_mask

    for ann, mask in zip(coco["annotations"], result.masks):
        # COCO files: pycocotools' own box and area for the RLE (the mask's pixel extent).
        rle_ = {**ann["segmentation"], "counts": ann["segmentation"]["counts"].encode()}
        assert ann["bbox"] == coco_mask.toBbox(rle_).tolist() and ann["area"] == coco_mask.area(rle_)
        ys, xs = np.nonzero(mask)
        assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
    assert not list(tmp_path.glob(".*tmp"))  # atomic writes leave no temporaries
    import os

    umask = os.umask(0)
    os.umask(umask)
    assert overlay.stat().st_mode & 0o777 == 0o666 & ~umask  # as a plain open() would create it


@pytest.mark.parametrize("no_boxes", [[], np.zeros((0, 4)), "[]"])
def test_no_boxes_no_masks(sam, truck, no_boxes, tmp_path, monkeypatch):
    """A detector that found nothing passes an empty box list: zero masks (not segment
    everything, not an error), no encoder run, and every export still written."""
    monkeypatch.setattr(sam.predictor, "set_image", lambda *a, **k: pytest.fail("encoded for no box"))
    assert len(sam.segment(truck, input_box=no_boxes, input_point=[[5, 5]], mask_id=2)) == 0
    result = sam.segment(truck, input_box=no_boxes)
    assert len(result) == 0 and result.masks.shape == (0, 1200, 1800)
    assert result.scores.shape == (0,) and result.boxes.shape == (0, 4) and result.areas.shape == (0,)
    assert np.array_equal(np.asarray(Image.open(result.save_overlay(tmp_path / "o.png"))), truck)
    assert result.save_masks(tmp_path / "masks") == []
    assert json.loads(result.save_json(tmp_path / "r.json").read_text())["annotations"] == []
    with pytest.raises(PromptError, match="shape"):
        sam.segment(truck, input_box=[[]])


def test_bad_values(sam, truck):
    with pytest.raises(PromptError, match="mask_id needs a point or box"):
        sam.segment(truck, mask_id=1)
    with pytest.raises(PromptError, match="mask_id"):
        sam.segment(truck, input_point=[[5, 5]], mask_id=4)
    with pytest.raises(PromptError, match="input_size_percent"):
        sam.segment(truck, input_box=BOXES[0], input_size_percent=0)


def test_segment_anything_forward(sam_vit_t, truck_predictor, truck):
    """Sam.forward, segment-anything's batched end-to-end call, agrees with the predictor."""
    t = truck_predictor.transform
    image = torch.as_tensor(t.apply_image(truck)).permute(2, 0, 1).float()
    boxes = t.apply_boxes_torch(torch.tensor(BOXES[:1], dtype=torch.float), truck.shape[:2])
    with torch.no_grad():
        out = sam_vit_t(
            [{"image": image, "original_size": truck.shape[:2], "boxes": boxes}], multimask_output=False
        )
    masks, _, _ = truck_predictor.predict(box=np.array(BOXES[0]), multimask_output=False)
    assert same_mask(out[0]["masks"][0].numpy(), masks)
    # Without torch.no_grad, as segment-anything's notebook calls it: no autograd graph
    # either (upstream's forward is no_grad; recording one took 4.3 GB here, not 0.8)
    again = sam_vit_t([{"image": image, "original_size": truck.shape[:2], "boxes": boxes}], False)
    assert not again[0]["low_res_logits"].requires_grad
    assert torch.equal(again[0]["low_res_logits"], out[0]["low_res_logits"])
    # An empty batch is an empty answer; an image not resized to CHW, or a record without
    # original_size, is a PromptError naming it (not a stack, shape or key error)
    assert sam_vit_t([], multimask_output=False) == []
    for bad in ({"image": torch.zeros(1200, 1800, 3), "original_size": (1200, 1800)}, {"image": image}):
        with pytest.raises(PromptError, match=r"batched_input\[1\]"):
            sam_vit_t([{"image": image, "original_size": truck.shape[:2]}, bad], multimask_output=False)


def test_bf16_encoder_close_to_float32(ckpt_vit_t, sam):
    """Opt-in bf16 encoder: measured mask IoU 0.970-0.985 against float32 on the fixture."""
    fast = MobileSAM(ckpt_vit_t, device="cpu", precision="bf16")
    assert next(fast.model.image_encoder.parameters()).dtype == torch.bfloat16
    for kwargs in ({"input_box": BOXES[0]}, {"input_point": [[500, 375]], "mask_id": 1}):
        a = fast.segment(IMAGES / "truck.jpg", **kwargs).masks[0]
        b = sam.segment(IMAGES / "truck.jpg", **kwargs).masks[0]
        assert np.logical_and(a, b).sum() >= 0.95 * np.logical_or(a, b).sum()
    with pytest.raises(MobileSAMError, match="precision"):
        MobileSAM(ckpt_vit_t, precision="fp8")


def test_mask_prompts_refine_an_earlier_result(sam, truck_predictor, truck, tmp_path):
    """mask_input: an earlier result (its low-res logits) or logits, with the points or
    boxes, as SamPredictor.predict's mask_input; one mask for every box or one per box."""
    from mobilesam import SegmentationResult
    from mobilesam.result import load_logits

    first = sam.segment(IMAGES / "truck.jpg", input_point=[[500, 375]])
    points, labels = [[500, 375], [1125, 625]], [1, 0]
    refined = sam.segment(
        IMAGES / "truck.jpg", input_point=points, input_point_label=labels, mask_input=first
    )
    masks, scores, _ = truck_predictor.predict(
        np.array(points), np.array(labels), mask_input=first.low_res_logits[0][None], multimask_output=False
    )
    assert same_mask(refined.masks[0], masks[0]) and refined.scores[0] == pytest.approx(scores[0], abs=1e-4)
    assert not same_mask(
        refined.masks[0], sam.segment(truck, input_point=points, input_point_label=labels).masks[0]
    )
    # One per box (an earlier result of those boxes), or one for all of them.
    boxes = sam.segment(truck, input_box=BOXES[:2])
    again = sam.segment(
        truck, input_box=BOXES[:2], mask_input=load_logits(boxes.save_logits(tmp_path / "l.npy"))
    )
    shared = sam.segment(truck, input_box=BOXES[:2], mask_input=boxes.low_res_logits[1])
    for i, box in enumerate(BOXES[:2]):
        for result, logits in ((again, boxes.low_res_logits[i]), (shared, boxes.low_res_logits[1])):
            m, s, _ = truck_predictor.predict(
                box=np.array(box), mask_input=logits[None], multimask_output=False
            )
            assert same_mask(result.masks[i], m[0]) and result.scores[i] == pytest.approx(s[0], abs=1e-4)
    everything = SegmentationResult(truck, first.masks, first.scores, first.mask_ids, None)
    other = sam.segment(IMAGES / "picture1.jpg", input_point=[[100, 100]])
    for kwargs, error in (
        ({"mask_input": first}, "give one too"),  # no point or box
        ({"input_box": BOXES, "mask_input": boxes}, "2 masks for 3 prompt sets"),
        ({"input_point": [[5, 5]], "mask_input": first.masks}, "not a full-size mask"),
        ({"input_point": [[5, 5]], "mask_input": np.full((256, 256), np.nan)}, "NaN"),
        ({"input_point": [[5, 5]], "mask_input": "logits"}, "array of low-res logits"),
        ({"input_point": [[5, 5]], "mask_input": everything}, "keeps no logits"),
        ({"input_point": [[5, 5]], "mask_input": other}, "this one is 1800x1200"),
    ):
        with pytest.raises(PromptError, match=error):
            sam.segment(truck, **kwargs)


def test_img_size_runs_the_model_at_that_input(ckpt_vit_t, truck, tmp_path, capsys):
    """A student distilled at 256 px runs at 256 px: the same masks as `SamPredictor` on
    `build_sam(img_size=256)`, low-res logits of img_size / 4 (also an empty result's, and
    as a mask prompt), masks at the image's size; the CLI's --img-size is the API's."""
    from mobilesam import SamPredictor, build_sam
    from mobilesam.cli import main

    small = MobileSAM(ckpt_vit_t, device="cpu", img_size=256)
    assert small.model.img_size == 256 and small.model.prompt_encoder.image_embedding_size == (16, 16)
    result = small.segment(truck, input_box=BOXES)
    assert result.masks.shape == (3, 1200, 1800) and result.low_res_logits.shape == (3, 64, 64)
    predictor = SamPredictor(build_sam("vit_t", ckpt_vit_t, img_size=256))
    predictor.set_image(truck)
    for box, mask in zip(BOXES, result.masks):
        assert same_mask(predictor.predict(box=np.array(box), multimask_output=False)[0][0], mask)
    assert small.segment(truck, input_box=[]).low_res_logits.shape == (0, 64, 64)
    refined = small.segment(truck, input_box=BOXES, mask_input=result)
    assert refined.low_res_logits.shape == (3, 64, 64)
    with pytest.raises(
        PromptError,
        match=r"mask_input must be 64x64 low-res logits.*: 256x256 logits come from a model of 1024-px input, this one takes 256 px",
    ):
        small.segment(truck, input_box=BOXES[:1], mask_input=np.zeros((1, 256, 256), np.float32))
    with pytest.raises(PromptError, match=r"not a full-size mask\), got shape \(1, 128, 128\)$"):
        small.segment(truck, input_box=BOXES[:1], mask_input=np.ones((1, 128, 128), bool))  # a mask: no hint
    args = ["segment", str(IMAGES / "truck.jpg"), "--box", json.dumps(BOXES), "--checkpoint", str(ckpt_vit_t)]
    assert main([*args, "--img-size", "256", "--json", str(tmp_path / "m.json")]) == 0
    areas = [a["area"] for a in json.loads((tmp_path / "m.json").read_text())["annotations"]]
    assert areas == result.areas.tolist()
    capsys.readouterr()
    for bad, error in (
        (["--img-size", "100"], "img_size must be a positive multiple of 16, got 100"),
        (
            ["--img-size", "512", "--backend", "onnx", "--onnx", str(tmp_path)],
            "--img-size: not used by --backend onnx",
        ),
    ):
        assert main([*args, *bad]) == 2
        assert error in capsys.readouterr().err


def test_cutouts_and_grown_masks(tmp_path):
    """For photo and inpainting tools: the object on transparency, masks grown by a margin."""
    from mobilesam import SegmentationResult
    from mobilesam.errors import OutputError
    from mobilesam.utils.regions import dilate

    image = np.asarray(Image.open(IMAGES / "truck.jpg").convert("RGB"))
    masks = np.zeros((2, 1200, 1800), bool)
    masks[0, 600:875, 425:700] = True
    masks[1, 675:750, 1240:1400] = True
    result = SegmentationResult(image, masks, np.ones(2), np.zeros(2, int), None)
    assert np.array_equal(result.union(), masks[0] | masks[1])
    assert np.array_equal(result.union(1), masks[1]) and np.array_equal(result.union([0, -1]), result.union())
    assert np.array_equal(result.union(0, dilate=15), dilate(masks[0], 15))
    one = np.asarray(Image.open(result.save_cutout(tmp_path / "car.png", 0)))
    assert one.shape == (275, 275, 4) and (one[..., :3] == image[600:875, 425:700]).all()
    both = result.cutout(crop=False)
    assert both.size == (1800, 1200) and (np.asarray(both)[..., 3] > 0).sum() == masks.sum()
    grown = np.asarray(Image.open(result.save_cutout(tmp_path / "car.webp", 0, dilate=10)))
    assert grown.shape == (295, 295, 4) and (grown[..., 3] > 0).sum() == dilate(masks[0], 10).sum()
    assert (grown[10:-10, 10:-10, :3] == image[600:875, 425:700]).all()  # lossless WebP
    soft = np.asarray(Image.open(result.save_cutout(tmp_path / "soft.png", 0, feather=3)))
    assert soft.shape == (293, 293, 4) and 0 < soft[146, 9, 3] < 255  # a soft edge, 9 px more each side
    files = result.save_masks(tmp_path / "inpaint", dilate=15)
    assert np.array_equal(np.asarray(Image.open(files[1])) > 0, dilate(masks[1], 15))
    with pytest.raises(OutputError, match="transparent"):
        result.save_cutout(tmp_path / "car.jpg", 0)
    assert not (tmp_path / "car.jpg").exists()
    with pytest.raises(OutputError, match="nothing to cut out"):
        result.cutout([])
    for bad in (2, -3, 0.5, [0, 5]):
        with pytest.raises(IndexError, match="out of range"):
            result.union(bad)
    with pytest.raises(OutputError, match="keep_logits=True"):  # no logits kept
        result.cutout(0, soft=True)
    # Every object on its own (an empty mask has no file; names keep the masks' indices).
    three = SegmentationResult(
        image, np.concatenate([masks, masks[:1] & False]), np.ones(3), np.zeros(3, int), None
    )
    files = three.save_cutouts(tmp_path / "objects", dilate=2)
    assert [f.name for f in files] == ["cutout_000.png", "cutout_001.png"]
    for i, f in enumerate(files):
        assert np.array_equal(np.asarray(Image.open(f)), np.asarray(three.cutout(i, dilate=2)))


def test_soft_edges_from_the_models_logits(sam, tmp_path):
    """Photo tools composite with an anti-aliased edge: the sigmoid of the model's own
    logits on the outline, the mask everywhere else, for cutouts and mask files."""
    from mobilesam.errors import OutputError

    result = sam.segment(IMAGES / "truck.jpg", input_box=BOXES[:2])
    assert result.logits_input_size == (683, 1024)
    logits = sam.model.postprocess_masks(
        torch.from_numpy(result.low_res_logits)[:, None], result.logits_input_size, (1200, 1800)
    )[:, 0].numpy()
    mattes = [result.soft_mask(i) for i in range(2)]
    for i, alpha in enumerate(mattes):
        assert alpha.shape == (1200, 1800) and alpha.dtype == np.uint8
        assert np.array_equal(alpha >= 128, result.masks[i])
        soft = (alpha > 0) & (alpha < 255)
        assert soft.sum() > 100
        sigmoid = 255 / (1 + np.exp(-logits[i][soft].astype(np.float64)))
        assert np.abs(alpha[soft] - sigmoid).max() <= 1.01
    files = result.save_masks(tmp_path / "soft", soft=True)
    assert all(np.array_equal(np.asarray(Image.open(f)), m) for f, m in zip(files, mattes))
    both = np.asarray(Image.open(result.save_cutout(tmp_path / "both.png", soft=True, crop=False)))
    assert np.array_equal(both[..., 3], np.maximum(*mattes))
    one = np.asarray(result.cutout(1, soft=True))
    ys, xs = np.nonzero(mattes[1])
    assert one.shape == (ys.max() - ys.min() + 1, xs.max() - xs.min() + 1, 4)
    assert np.array_equal(one[..., 3], mattes[1][ys.min() : ys.max() + 1, xs.min() : xs.max() + 1])
    with pytest.raises(OutputError, match="use one of them"):
        result.save_masks(tmp_path / "none", dilate=5, soft=True)
    assert not (tmp_path / "none").exists()
    with pytest.raises(IndexError, match="out of range"):
        result.soft_mask(2)
    with pytest.raises(OutputError, match="nothing to cut out"):
        result.cutout([], soft=True)
    # A shrunk encoding (input_size_percent) maps its logits back onto the full image.
    small = sam.segment(IMAGES / "truck.jpg", input_point=[[500, 375]], input_size_percent=40)
    alpha = small.soft_mask(0)
    assert np.array_equal(alpha >= 128, small.masks[0]) and ((alpha > 0) & (alpha < 255)).any()
