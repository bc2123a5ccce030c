"""Code written for segment-anything / MobileSAM runs with only the import changed.

Each test is a pattern real clients use (the notebooks, scripts/amg.py, annotation-tool
backends, samexporter), written as they write it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import IMAGES
from PIL import Image

from mobilesam import SamAutomaticMaskGenerator, SamPredictor, build_sam
from mobilesam.utils import amg

# Loose generator settings that keep dozens of masks of this image on the synthetic weights.
LOOSE_IMAGE = ("picture2.jpg", (200, 150))
LOOSE = {"points_per_side": 4, "pred_iou_thresh": 0.5, "stability_score_thresh": 0.8, "box_nms_thresh": 1.0}


def _image(name: str, size: tuple[int, int] | None = None) -> np.ndarray:
    img = Image.open(IMAGES / name).convert("RGB")
    return np.asarray(img.resize(size) if size else img)


def test_module_paths_and_builders(ckpt_vit_t):
    from mobilesam.build_sam import build_sam, build_sam_vit_t, sam_model_registry
    from mobilesam.modeling import ImageEncoderViT, TinyViT
    from mobilesam.modeling.tiny_vit_sam import TinyViT as TinyViT2
    from mobilesam.utils.onnx import SamOnnxModel  # noqa: F401
    from mobilesam.utils.transforms import ResizeLongestSide

    assert TinyViT2 is TinyViT
    sam = build_sam_vit_t(checkpoint=str(ckpt_vit_t))
    assert isinstance(sam.image_encoder, TinyViT)
    encoder = sam.image_encoder
    assert (
        encoder.num_layers == 4
        and encoder.depths == [2, 2, 6, 2]
        and encoder.patches_resolution == (256, 256)
    )
    with torch.device("meta"):  # ViT-H without allocating 2.5 GB
        assert isinstance(build_sam().image_encoder, ImageEncoderViT)  # upstream: build_sam is ViT-H
        assert build_sam().image_encoder.blocks[0].attn.qkv.in_features == 1280
        assert sam_model_registry["default"]().image_encoder.patch_embed.proj.out_channels == 1280
    assert ResizeLongestSide(1024).apply_coords(np.array([[100.0, 50.0]]), (500, 1000)).tolist() == [
        [102.4, 51.2]
    ]
    # The package's own registry-name builder still works after the module import.
    import mobilesam

    assert isinstance(mobilesam.build_sam("vit_t", ckpt_vit_t).image_encoder, TinyViT)
    from mobilesam.build import resolve_model_type

    assert mobilesam.MobileSAM.__init__.__defaults__[1] is None  # read from the checkpoint, and
    assert resolve_model_type(None, None) == "vit_t"  # MobileSAM() with no checkpoint stays MobileSAM


def test_predictor_sizes_and_package_names(truck_predictor):
    import mobilesam

    p = truck_predictor
    assert (
        (p.orig_h, p.orig_w, p.input_h, p.input_w)
        == (*p.original_size, *p.input_size)
        == (1200, 1800, 683, 1024)
    )
    assert {"SamPredictor", "SamAutomaticMaskGenerator", "sam_model_registry"} <= set(dir(mobilesam))


def test_model_attributes_upstream_code_reads(sam_vit_t):
    pe = sam_vit_t.prompt_encoder
    assert pe.num_point_embeddings == len(pe.point_embeddings) == 4
    assert sam_vit_t.mask_decoder.num_multimask_outputs == 3
    coords = torch.rand(1, 3, 2)
    assert torch.equal(pe.pe_layer._pe_encoding(coords), pe.pe_layer._encode(coords))
    assert pe._get_batch_size(None, torch.zeros(3, 4), None) == 3 and pe._get_device() == torch.device("cpu")
    # what adapter / LoRA / HQ-style code reads off segment-anything's modules
    t = sam_vit_t.mask_decoder.transformer
    assert (t.depth, t.embedding_dim, t.num_heads, t.mlp_dim) == (2, 256, 8, 2048)
    attn = t.layers[0].cross_attn_token_to_image
    assert (attn.embedding_dim, attn.internal_dim, attn.num_heads) == (256, 128, 8)
    x = torch.randn(2, 5, 128)
    assert attn._separate_heads(x, 8).shape == (2, 8, 5, 16)
    assert torch.equal(attn._recombine_heads(attn._separate_heads(x, 8)), x)
    with torch.device("meta"):
        vit = build_sam("vit_b").image_encoder
    assert [b.window_size for b in vit.blocks[:3]] == [14, 14, 0]  # block 2: global
    assert vit.blocks[0].attn.use_rel_pos and vit.blocks[0].attn.scale == 64**-0.5


def test_image_encoder_helpers_upstream_code_imports():
    """Adapter code builds its own ViT blocks from segment-anything's image_encoder helpers."""
    from mobilesam.modeling.image_encoder import (
        Attention,
        add_decomposed_rel_pos,
        get_rel_pos,
        window_partition,
        window_unpartition,
    )

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 20, 17, 8, generator=g)
    windows, padded = window_partition(x, 7)
    assert windows.shape == (2 * 3 * 3, 7, 7, 8) and padded == (21, 21)
    assert torch.equal(windows[0], x[0, :7, :7]) and not windows[2, :, 3:].any()  # zero padding
    assert torch.equal(window_unpartition(windows, 7, padded, (20, 17)), x)
    whole, unpadded = window_partition(x[:, :14, :14], 7)  # whole windows: nothing padded
    assert whole.shape == (8, 7, 7, 8) and unpadded == (14, 14)
    assert torch.equal(window_unpartition(whole, 7, unpadded, (14, 14)), x[:, :14, :14])
    # a query axis half as long as the key axis is stretched onto it (worked by hand)
    assert get_rel_pos(2, 4, torch.arange(7.0)[:, None])[..., 0].tolist() == [[3, 2, 1, 0], [5, 4, 3, 2]]
    # attention written the upstream way with these helpers = our Attention, on a grid of the
    # table's size and on a larger one (the tables resampled)
    attn = Attention(32, num_heads=4, qkv_bias=True, use_rel_pos=True, input_size=(5, 5))
    with torch.no_grad():
        for p in attn.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        for size in (5, 6):
            x = torch.randn(2, size, size, 32, generator=g)
            qkv = (
                attn.qkv(x)
                .reshape(2, size * size, 3, 4, -1)
                .permute(2, 0, 3, 1, 4)
                .reshape(3, 8, size * size, -1)
            )
            q, k, v = qkv.unbind(0)
            logits = add_decomposed_rel_pos(
                (q * attn.scale) @ k.transpose(-2, -1),
                q,
                attn.rel_pos_h,
                attn.rel_pos_w,
                (size, size),
                (size, size),
            )
            out = (
                (logits.softmax(-1) @ v)
                .view(2, 4, size, size, -1)
                .permute(0, 2, 3, 1, 4)
                .reshape(2, size, size, -1)
            )
            assert torch.allclose(attn.proj(out), attn(x), atol=1e-5)


def test_generator_accepts_what_upstream_accepts(small_sam_vit_t):
    image = _image("picture1.jpg", (160, 120))
    ref = SamAutomaticMaskGenerator(small_sam_vit_t, points_per_side=4, pred_iou_thresh=0.5).generate(image)
    for side in (4.0, np.int64(4), np.float32(4.0)):
        anns = SamAutomaticMaskGenerator(
            small_sam_vit_t,
            points_per_side=side,
            points_per_batch=np.int32(64),
            pred_iou_thresh=np.float64(0.5),
        ).generate(image)
        assert [a["area"] for a in anns] == [a["area"] for a in ref]
    # the attributes upstream sets, which configuration-logging clients read
    gen = SamAutomaticMaskGenerator(small_sam_vit_t, crop_n_layers=1, crop_n_points_downscale_factor=2)
    assert (gen.crop_n_layers, gen.crop_n_points_downscale_factor, len(gen.point_grids)) == (1, 2, 2)
    assert len(gen.point_grids[1]) == 16 * 16  # 32 / 2 per side in the crops
    with pytest.raises(ValueError, match="points_per_side"):  # PromptError is a ValueError
        SamAutomaticMaskGenerator(small_sam_vit_t, points_per_side=4.5)


def test_prompts_upstream_takes_silently_are_refused_by_name(small_truck_predictor, small_sam_vit_t):
    """What segment-anything turns into a mask of nothing in particular (a NaN point, an
    infinite box, grid points off the crop, an empty image) or a shape error deep in the
    prompt encoder (predict_torch's points without their batch) is a ValueError naming the
    argument; the prompts it takes as they are (point lists, int and torch points, a 2-D box)
    answer as before."""
    from mobilesam import ImageLoadError, PromptError

    p = small_truck_predictor
    point = {"point_coords": np.array([[500.0, 375.0]]), "point_labels": np.array([1])}
    want = p.predict(**point)[2]
    for coords, labels in (([[500, 375]], [1]), (np.array([[500, 375]], np.int64), [True])):
        assert np.array_equal(p.predict(point_coords=coords, point_labels=labels)[2], want)
    assert np.array_equal(p.predict(point_coords=torch.tensor([[500.0, 375.0]]), point_labels=[1])[2], want)
    box = np.array([425, 600, 700, 875])
    assert np.array_equal(p.predict(box=box[None])[2], p.predict(box=box)[2])
    for kwargs, match in (
        ({"point_coords": [[np.nan, 5]], "point_labels": [1]}, "point_coords holds NaN"),
        ({"point_coords": [[5, 5]], "point_labels": [np.inf]}, "point_labels holds NaN"),
        ({"point_coords": [[5, 5], [6]], "point_labels": [1, 1]}, "point_coords must be an array of numbers"),
        ({"point_coords": [[5, 5]], "point_labels": ["fg"]}, "point_labels must be an array of numbers"),
        ({"box": [0, 0, np.inf, 5]}, "box holds NaN"),
    ):
        with pytest.raises(PromptError, match=match):
            p.predict(**kwargs)
    coords = torch.as_tensor(p.transform.apply_coords(point["point_coords"], p.original_size)).float()
    labels = torch.tensor([1])
    assert torch.equal(p.predict_torch(coords[None], labels[None])[2][0], torch.as_tensor(want))
    for c, lab in ((coords, labels), (coords[None], None), (coords[None], labels[None, None])):
        with pytest.raises(PromptError, match="predict_torch takes point_coords BxNx2 and point_labels BxN"):
            p.predict_torch(c, lab)
    predictor = SamPredictor(small_sam_vit_t)
    with pytest.raises(ImageLoadError, match=r"image is empty: shape \(0, 5, 3\)"):
        predictor.set_image(np.zeros((0, 5, 3), np.uint8))
    grids = [np.array([[0.5, 0.5], [1.0, 0.0]]), np.zeros((0, 2))]  # edges in, a layer without points
    gen = SamAutomaticMaskGenerator(small_sam_vit_t, points_per_side=None, point_grids=grids, crop_n_layers=1)
    assert [len(g) for g in gen.point_grids] == [2, 0]
    for bad in (
        [np.array([[1.5, 0.5]])],
        [np.array([0.5, 0.5])],
        [np.array([[np.nan, 0.5]])],
        [[["a", "b"]]],
    ):
        with pytest.raises(PromptError, match=r"point_grids\[0\] must be an Nx2 array"):
            SamAutomaticMaskGenerator(small_sam_vit_t, points_per_side=None, point_grids=bad)


def test_supervision_reads_and_draws_the_generators_output(small_sam_vit_t):
    """Roboflow's supervision (autodistill's SAM module, the SAM notebooks) turns
    generate()'s records into Detections, from dense masks or uncompressed RLE, and draws
    them: the real library, run on our output."""
    sv = pytest.importorskip("supervision")
    image, kwargs = _image(*LOOSE_IMAGE), LOOSE
    anns = SamAutomaticMaskGenerator(small_sam_vit_t, **kwargs).generate(image)
    assert len(anns) > 1
    detections = sv.Detections.from_sam(anns)
    by_area = sorted(anns, key=lambda a: a["area"], reverse=True)  # supervision's order
    assert np.array_equal(detections.mask, np.stack([a["segmentation"] for a in by_area]))
    assert np.array_equal(detections.area, [a["area"] for a in by_area])
    boxes = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in by_area)]
    assert np.array_equal(detections.xyxy, boxes)
    rle = SamAutomaticMaskGenerator(small_sam_vit_t, output_mode="uncompressed_rle", **kwargs).generate(image)
    assert np.array_equal(sv.Detections.from_sam(rle).mask, detections.mask)
    detections.class_id = np.arange(len(detections))  # as autodistill does
    drawn = sv.MaskAnnotator().annotate(image.copy(), detections)
    changed = (drawn != image).any(axis=-1)
    assert changed.any() and not (changed & ~detections.mask.any(axis=0)).any()


def test_generator_options_set_after_construction_are_used(small_sam_vit_t):
    """Demos and annotation tools change thresholds on an existing generator
    (`gen.pred_iou_thresh = ...`) between calls; upstream reads them at generate time."""
    image, base = _image(*LOOSE_IMAGE), LOOSE
    changed = {"pred_iou_thresh": 0.6, "box_nms_thresh": 0.7, "output_mode": "uncompressed_rle"}
    gen = SamAutomaticMaskGenerator(small_sam_vit_t, **base)
    before = gen.generate(image)
    for name, value in changed.items():
        setattr(gen, name, value)
    after = gen.generate(image)
    ref = SamAutomaticMaskGenerator(small_sam_vit_t, **{**base, **changed}).generate(image)
    assert len(after) == len(ref) < len(before)
    assert [a["segmentation"] for a in after] == [a["segmentation"] for a in ref]
    assert isinstance(after[0]["segmentation"], dict)


@pytest.mark.parametrize("reset", [False, True])
def test_embedding_cache_swap_gives_the_assigned_embedding(small_sam_vit_t, reset):
    """Label Studio-style backends store `predictor.features` per image and assign it back
    later (with or without reset_image) instead of calling set_image again."""
    a, b = _image("picture1.jpg"), _image("picture2.jpg")
    predictor = SamPredictor(small_sam_vit_t)
    predictor.set_image(a)
    cache_a = (predictor.features, predictor.original_size, predictor.input_size)
    box_a = np.array([100, 100, 500, 400])
    ref = predictor.predict(box=box_a, multimask_output=False)
    predictor.set_image(b)
    other = predictor.predict(box=box_a, multimask_output=False)
    if reset:
        predictor.reset_image()
    predictor.features, predictor.original_size, predictor.input_size = cache_a
    predictor.is_image_set = True
    again = predictor.predict(box=box_a, multimask_output=False)
    assert np.array_equal(again[2], ref[2]) and not np.array_equal(again[2], other[2])
    assert np.array_equal(again[0], ref[0])


def test_predictor_hands_out_ordinary_tensors(small_sam_vit_t, truck):
    """segment-anything's predictor runs under no_grad, not inference_mode, so what it hands
    out is an ordinary tensor: code uses the embedding or the logits with autograd (a
    learnable head on top) and changes `predictor.features` in place."""
    predictor = SamPredictor(small_sam_vit_t)
    predictor.set_image(truck)
    weight = torch.nn.Parameter(torch.ones(1))
    (predictor.get_image_embedding() * weight).sum().backward()  # saves the embedding
    box = np.array([300, 250, 1300, 900])
    model_box = predictor.transform.apply_boxes_torch(torch.tensor([box], dtype=torch.float), truck.shape[:2])
    _, _, low_res = predictor.predict_torch(None, None, model_box)
    (low_res * weight).sum().backward()
    assert weight.grad is not None
    before = predictor.predict(box=box)
    predictor.features.mul_(0.5)  # the next prediction uses the changed embedding
    after = predictor.predict(box=box)
    fresh = SamPredictor(small_sam_vit_t)
    fresh.set_image(truck)
    fresh.features = fresh.features * 0.5
    expected = fresh.predict(box=box)
    assert not np.allclose(after[1], before[1])
    np.testing.assert_allclose(after[2], expected[2], rtol=0, atol=1e-4)
    np.testing.assert_allclose(after[1], expected[1], rtol=0, atol=1e-6)


def test_return_logits_gives_what_the_masks_threshold(small_truck_predictor):
    """predict(return_logits=True): full-size float logits instead of masks (the official
    code's to 2e-4 on the synthetic weights, checked by hand)."""
    p, box = small_truck_predictor, np.array([300, 250, 1300, 900])
    masks, scores, _ = p.predict(box=box)
    logits, logit_scores, _ = p.predict(box=box, return_logits=True)
    assert logits.dtype == np.float32 and logits.shape == masks.shape == (3, 1200, 1800)
    np.testing.assert_array_equal(logits > p.model.mask_threshold, masks)
    np.testing.assert_array_equal(scores, logit_scores)


def test_amg_helpers_with_upstream_names():
    masks = torch.zeros(2, 3, 5, 6, dtype=torch.bool)
    masks[0, 1, 1:3, 2:5] = True
    masks[1, 2, 4, 0] = True
    boxes = amg.batched_mask_to_box(masks)
    assert boxes.shape == (2, 3, 4)
    assert boxes[0, 1].tolist() == [2, 1, 4, 2] and boxes[1, 2].tolist() == [0, 4, 0, 4]
    assert boxes[0, 0].tolist() == [0, 0, 0, 0]  # empty mask
    assert amg.batched_mask_to_box(torch.zeros(0, 5, 6, dtype=torch.bool)).shape == (0, 4)
    assert amg.box_xyxy_to_xywh(torch.tensor([2, 1, 4, 2])).tolist() == [2, 1, 2, 1]

    rles = amg.mask_to_rle_pytorch(masks[0])
    for rle_, mask in zip(rles, masks[0]):
        assert np.array_equal(amg.rle_to_mask(rle_), mask.numpy())
        assert amg.area_from_rle(rle_) == int(mask.sum())
    from pycocotools import mask as coco_mask

    coded = amg.coco_encode_rle(rles[1])
    ref = coco_mask.encode(np.asfortranarray(masks[0, 1].numpy().astype(np.uint8)))
    assert coded["counts"] == ref["counts"].decode() and coded["size"] == [5, 6]

    batches = list(amg.batch_iterator(2, np.arange(5), list("abcde")))
    assert [b[1] for b in batches] == [["a", "b"], ["c", "d"], ["e"]]
    data = amg.MaskData(x=torch.arange(4), y=np.arange(4) * 10, z=list("abcd"))
    data.filter(torch.tensor([True, False, True, True]))
    data.cat(amg.MaskData(x=torch.tensor([9]), y=np.array([90]), z=["q"]))
    data.to_numpy()
    assert (
        data["x"].tolist() == [0, 2, 3, 9]
        and data["y"].tolist() == [0, 20, 30, 90]
        and data["z"] == list("acdq")
    )
    logits = torch.randn(3, 8, 8)
    assert torch.equal(amg.calculate_stability_score(logits, 0.0, 1.0), amg.stability_score(logits, 0.0, 1.0))


def test_generate_masks_and_postprocess_small_regions_as_upstream_calls_them(small_sam_vit_t):
    """scripts/amg.py-style subclasses call `_generate_masks` then
    `postprocess_small_regions`: the same masks as `generate` with min_mask_region_area."""
    image, kwargs = _image(*LOOSE_IMAGE), LOOSE
    gen = SamAutomaticMaskGenerator(small_sam_vit_t, min_mask_region_area=300, **kwargs)
    data = gen._generate_masks(image)
    assert len(data["rles"]) == len(data["boxes"]) > 0
    data = gen.postprocess_small_regions(data, 300, max(gen.box_nms_thresh, gen.crop_nms_thresh))
    ref = gen.generate(image)
    assert len(data["rles"]) == len(ref)
    for rle_, box, ann in zip(data["rles"], data["boxes"], ref):
        assert np.array_equal(amg.rle_to_mask(rle_), ann["segmentation"])
        assert amg.box_xyxy_to_xywh(torch.as_tensor(box)).tolist() == ann["bbox"]


def test_upstream_generate_body_on_generate_masks(small_sam_vit_t):
    """Forks that subclass the generator copy segment-anything's `generate` body: records
    built from `_generate_masks`' MaskData (numpy fields, as upstream's after `to_numpy`)
    with the amg helpers. They are `generate()`'s records."""
    image = _image(*LOOSE_IMAGE)
    gen = SamAutomaticMaskGenerator(small_sam_vit_t, **LOOSE)
    mask_data = gen._generate_masks(image)
    mask_data["segmentations"] = [amg.rle_to_mask(rle) for rle in mask_data["rles"]]
    records = []
    for idx in range(len(mask_data["segmentations"])):
        records.append(
            {
                "segmentation": mask_data["segmentations"][idx],
                "area": amg.area_from_rle(mask_data["rles"][idx]),
                "bbox": amg.box_xyxy_to_xywh(mask_data["boxes"][idx]).tolist(),
                "predicted_iou": mask_data["iou_preds"][idx].item(),
                "point_coords": [mask_data["points"][idx].tolist()],
                "stability_score": mask_data["stability_score"][idx].item(),
                "crop_box": amg.box_xyxy_to_xywh(mask_data["crop_boxes"][idx]).tolist(),
            }
        )
    ref = gen.generate(image)
    assert len(records) == len(ref) > 1
    for record, expected in zip(records, ref):
        assert np.array_equal(record.pop("segmentation"), expected["segmentation"])
        assert record == {k: expected[k] for k in record}
    row = np.array([[10, 20, 50, 80]])[0]  # (the synthetic masks' boxes all start at 0, 0)
    assert amg.box_xyxy_to_xywh(row).tolist() == [10, 20, 40, 60]
    assert row.tolist() == [10, 20, 50, 80]  # a copy, as upstream's deepcopy


@pytest.mark.slow
def test_sam_onnx_model_exports_as_the_notebook_does(sam_vit_t, truck_predictor, tmp_path):
    """segment-anything's ONNX notebook, import changed: export SamOnnxModel, run it in
    onnxruntime, get the predictor's masks."""
    import onnxruntime

    from mobilesam.utils.onnx import SamOnnxModel

    onnx_model = SamOnnxModel(sam_vit_t, return_single_mask=True)
    dynamic_axes = {"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}}
    embed_dim = sam_vit_t.prompt_encoder.embed_dim
    embed_size = sam_vit_t.prompt_encoder.image_embedding_size
    mask_input_size = [4 * x for x in embed_size]
    dummy_inputs = {
        "image_embeddings": torch.randn(1, embed_dim, *embed_size, dtype=torch.float),
        "point_coords": torch.randint(low=0, high=1024, size=(1, 5, 2), dtype=torch.float),
        "point_labels": torch.randint(low=0, high=4, size=(1, 5), dtype=torch.float),
        "mask_input": torch.randn(1, 1, *mask_input_size, dtype=torch.float),
        "has_mask_input": torch.tensor([1], dtype=torch.float),
        "orig_im_size": torch.tensor([1500, 2250], dtype=torch.float),
    }
    output_names = ["masks", "iou_predictions", "low_res_masks"]
    path = tmp_path / "sam_onnx_example.onnx"
    with open(path, "wb") as f:
        torch.onnx.export(
            onnx_model,
            tuple(dummy_inputs.values()),
            f,
            export_params=True,
            verbose=False,
            opset_version=17,
            do_constant_folding=True,
            input_names=list(dummy_inputs.keys()),
            output_names=output_names,
            dynamic_axes=dynamic_axes,
            # The notebook's call predates torch's dynamo exporter (the default since torch
            # 2.9), whose dynamic_axes conversion pairs these axes with the wrong inputs
            # when they are not the leading ones (any model, segment-anything's own too).
            dynamo=False,
        )
    assert not sam_vit_t.training  # exporting left the model in eval mode
    ort_session = onnxruntime.InferenceSession(str(path))
    p = truck_predictor
    input_point, input_label = np.array([[500, 375], [1125, 625]]), np.array([1, 0])
    onnx_coord = np.concatenate([input_point, np.array([[0.0, 0.0]])], axis=0)[None, :, :]
    onnx_label = np.concatenate([input_label, np.array([-1])], axis=0)[None, :].astype(np.float32)
    onnx_coord = p.transform.apply_coords(onnx_coord, p.original_size).astype(np.float32)
    ort_inputs = {
        "image_embeddings": p.get_image_embedding().cpu().numpy(),
        "point_coords": onnx_coord,
        "point_labels": onnx_label,
        "mask_input": np.zeros((1, 1, 256, 256), dtype=np.float32),
        "has_mask_input": np.zeros(1, dtype=np.float32),
        "orig_im_size": np.array(p.original_size, dtype=np.float32),
    }
    masks, scores, low_res = ort_session.run(None, ort_inputs)
    masks = masks > p.model.mask_threshold
    ref_masks, ref_scores, ref_low = p.predict(input_point, input_label, multimask_output=False)
    assert masks.shape == (1, 1, 1200, 1800)
    assert np.abs(scores[0] - ref_scores).max() <= 1e-3
    assert np.abs(low_res[0] - ref_low).max() <= 1e-3 * max(1.0, float(np.abs(ref_low).max()))
    inter, union = np.logical_and(masks[0], ref_masks).sum(), np.logical_or(masks[0], ref_masks).sum()
    assert inter >= 0.999 * union


# ---- models built with upstream's constructors -------------------------------------------


def _build_as_upstream(model_type: str, img_size: int):
    """A model built the way segment-anything's `_build_sam` and MobileSAM's
    `build_sam_vit_t` build it (and Grounded-SAM's `setup_mobile_sam`, which copies the
    latter), every keyword as they pass it; only the imports changed."""
    from functools import partial

    from mobilesam.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
    from mobilesam.modeling.tiny_vit_sam import TinyViT

    if model_type == "vit_t":
        encoder = TinyViT(
            img_size=img_size,
            in_chans=3,
            num_classes=1000,
            embed_dims=[64, 128, 160, 320],
            depths=[2, 2, 6, 2],
            num_heads=[2, 4, 5, 10],
            window_sizes=[7, 7, 14, 7],
            mlp_ratio=4.0,
            drop_rate=0.0,
            drop_path_rate=0.0,
            use_checkpoint=False,
            mbconv_expand_ratio=4.0,
            local_conv_size=3,
            layer_lr_decay=0.8,
        )
    else:  # segment-anything's build_sam_vit_b
        encoder = ImageEncoderViT(
            depth=12,
            embed_dim=768,
            img_size=img_size,
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=12,
            patch_size=16,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=[2, 5, 8, 11],
            window_size=14,
            out_chans=256,
        )
    grid = img_size // 16
    return Sam(
        image_encoder=encoder,
        prompt_encoder=PromptEncoder(
            embed_dim=256,
            image_embedding_size=(grid, grid),
            input_image_size=(img_size, img_size),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
            transformer_dim=256,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )


@pytest.mark.parametrize("model_type", ["vit_t", "vit_b"])
def test_models_built_with_upstream_constructors(model_type):
    """Grounded-SAM's MobileSAM demo builds the model itself with the official classes'
    keywords (`drop_rate`, `use_checkpoint`, `layer_lr_decay`, ...; `norm_layer`,
    `qkv_bias`, `use_rel_pos` for SAM's ViT), loads `mobile_sam.pt` strictly and predicts;
    with our classes it gets our registry model's answers."""
    from conftest import synthetic_state_dict

    size = 256
    state = synthetic_state_dict(model_type, img_size=size)
    sam = _build_as_upstream(model_type, size)
    sam.load_state_dict(state, strict=True)
    sam.eval()
    reference = build_sam(model_type, img_size=size)
    reference.load_state_dict(state, strict=True)
    image = _image("truck.jpg", (300, 200))
    answers = []
    for model in (sam, reference):
        predictor = SamPredictor(model)
        predictor.set_image(image)
        answers.append(predictor.predict(box=np.array([40, 50, 200, 150]), multimask_output=True))
    for ours, ref in zip(*answers, strict=True):
        np.testing.assert_array_equal(ours, ref)
    # pixel_mean / pixel_std are 3x1x1 as upstream's: normalising a CxHxW image with them, as
    # fine-tuning code does, is the model's own preprocessing
    x = torch.rand(3, 12, 10) * 255
    assert sam.pixel_mean.shape == (3, 1, 1)
    torch.testing.assert_close(
        ((x - sam.pixel_mean) / sam.pixel_std)[None], sam.preprocess(x[None])[..., :12, :10]
    )


def test_vit_constructor_options_mean_what_upstream_means():
    """ImageEncoderViT's upstream options: no absolute or relative positions, no qkv bias
    (the parameters are absent, as upstream's), the norm and activation layers given."""
    from functools import partial

    from torch import nn

    from mobilesam.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, TwoWayTransformer
    from mobilesam.modeling.common import MLPBlock
    from mobilesam.modeling.image_encoder import Attention

    torch.manual_seed(0)
    vit = ImageEncoderViT(
        img_size=64,
        embed_dim=32,
        depth=2,
        num_heads=2,
        out_chans=16,
        qkv_bias=False,
        norm_layer=partial(nn.LayerNorm, eps=0.25),
        act_layer=nn.ReLU,
        use_abs_pos=False,
        use_rel_pos=False,
        window_size=0,
        global_attn_indexes=(),
    ).eval()
    keys = set(vit.state_dict())
    assert "pos_embed" not in keys and "blocks.0.attn.qkv.weight" in keys
    assert not any("rel_pos" in k or "qkv.bias" in k for k in keys)
    assert vit.blocks[0].norm1.eps == 0.25 and vit.blocks[1].window_size == 0
    assert vit(torch.randn(1, 3, 64, 64)).shape == (1, 16, 4, 4)
    # the MLP's activation is the one given
    mlp, h = vit.blocks[0].mlp, torch.randn(5, 32)
    torch.testing.assert_close(mlp(h), mlp.lin2(torch.relu(mlp.lin1(h))))
    assert type(mlp.act) is nn.ReLU and type(MLPBlock(8, 16, "gelu").act) is nn.GELU  # or by name
    # attention without relative positions: plain softmax attention
    attn = Attention(16, num_heads=2)
    x = torch.randn(2, 3, 4, 16)
    q, k, v = attn.qkv(x).reshape(2, 12, 3, 2, 8).permute(2, 0, 3, 1, 4)
    out = ((q * attn.scale) @ k.transpose(-2, -1)).softmax(-1) @ v
    torch.testing.assert_close(attn(x), attn.proj(out.transpose(1, 2).reshape(2, 3, 4, 16)))
    with pytest.raises(ValueError, match="input_size"):
        Attention(16, num_heads=2, use_rel_pos=True)
    # any activation class, as upstream (tests/test_observed.py: what each computes)
    pe = PromptEncoder(32, (4, 4), (64, 64), 16, activation=nn.SiLU)
    assert isinstance(pe.mask_downscaling[2], nn.SiLU) and isinstance(pe.mask_downscaling[5], nn.SiLU)
    vit = ImageEncoderViT(img_size=64, embed_dim=32, depth=1, num_heads=2, act_layer=nn.SiLU)
    assert type(vit.blocks[0].mlp.act) is nn.SiLU
    decoder = MaskDecoder(
        transformer_dim=32, transformer=TwoWayTransformer(1, 32, 2, 64, nn.Tanh), activation=nn.ReLU
    )
    assert [type(m) for m in decoder.output_upscaling[2::2]] == [nn.ReLU, nn.ReLU]
    assert type(decoder.transformer.layers[0].mlp.act) is nn.Tanh
    with pytest.raises(ValueError, match="unknown activation 'silu'"):
        MLPBlock(8, 16, "silu")
    # the random Fourier features' scale (None or <= 0: 1, as upstream)
    from mobilesam.modeling.prompt_encoder import PositionEmbeddingRandom

    matrices = []
    for scale in (None, 0.0, 3.0):
        torch.manual_seed(0)
        matrices.append(PositionEmbeddingRandom(8, scale).positional_encoding_gaussian_matrix)
    assert torch.equal(matrices[0], matrices[1]) and torch.equal(matrices[2], 3 * matrices[0])


def _tiny_vit(**options):
    from mobilesam.modeling.tiny_vit_sam import TinyViT

    torch.manual_seed(0)
    return TinyViT(img_size=64, **options)


def test_tiny_vit_training_options_mean_what_upstream_means(monkeypatch):
    """TinyViT's training options, as the official class defines them: layer-wise lr decay
    as each parameter's `lr_scale`, stochastic depth rising linearly over the blocks,
    dropout in the MLPs, activation checkpointing with the same numbers, the local
    convolution's size, TinyViT's initialisation."""
    from torch import nn
    from torch.utils.checkpoint import checkpoint as torch_checkpoint

    from mobilesam.modeling.tiny_vit import DropPath, MBConv, TinyViTBlock

    vit = _tiny_vit(layer_lr_decay=0.5)
    blocks = [b for layer in vit.layers for b in layer.blocks]
    assert len(blocks) == 12
    for i, block in enumerate(blocks):  # the last block 1, each one before it half
        assert {p.lr_scale for p in block.parameters()} == {0.5 ** (11 - i)}
    assert {p.lr_scale for p in vit.patch_embed.parameters()} == {0.5**11}
    assert {p.lr_scale for p in vit.layers[1].downsample.parameters()} == {0.5**8}  # its stage's last block
    assert {p.lr_scale for p in [*vit.norm_head.parameters(), *vit.head.parameters()]} == {1.0}
    assert not any(hasattr(p, "lr_scale") for p in vit.neck.parameters())  # MobileSAM's, added after

    vit = _tiny_vit(drop_path_rate=0.33, drop_rate=0.25, local_conv_size=5)
    rates = [
        getattr(b.drop_path, "drop_prob", 0.0) for b in vit.modules() if isinstance(b, MBConv | TinyViTBlock)
    ]
    np.testing.assert_allclose(rates, np.linspace(0, 0.33, 12), atol=1e-7)
    assert isinstance(blocks[0].drop_path, nn.Identity)  # rate 0: no module
    block = vit.layers[1].blocks[0]
    assert block.local_conv.c.kernel_size == (5, 5) and block.mlp.drop.p == 0.25
    tokens = torch.randn(2, 16, 128)
    with torch.no_grad():  # the MLP's dropout applies in training only
        assert not torch.equal(block.mlp.train()(tokens), block.mlp(tokens))
        torch.testing.assert_close(block.mlp.eval()(tokens), block.mlp(tokens))
    x = torch.randn(2, 3, 64, 64)
    plain = _tiny_vit(local_conv_size=5)
    plain.load_state_dict(vit.state_dict())  # same parameters: eval mode drops nothing
    vit.eval(), plain.eval()
    with torch.no_grad():
        torch.testing.assert_close(vit(x), plain(x))
    # DropPath: whole samples zeroed at the rate, the others scaled up; identity in eval
    drop = DropPath(0.75).train()
    y = drop(torch.ones(4000, 3))
    assert set(y.unique().tolist()) == {0.0, 4.0}
    assert (y[:, 0] == 0).float().mean().item() == pytest.approx(0.75, abs=0.03)
    assert (y == y[:, :1]).all() and torch.equal(drop.eval()(y), y)
    assert not DropPath(1.0).train()(torch.ones(8, 3)).any()  # every branch dropped, nothing scaled

    # Activation checkpointing: every block checkpointed when training, with the same
    # outputs and gradients, drop paths included
    from mobilesam.modeling import tiny_vit

    checkpointed = []
    monkeypatch.setattr(
        tiny_vit, "checkpoint", lambda fn, *a, **k: checkpointed.append(fn) or torch_checkpoint(fn, *a, **k)
    )
    grads = []
    for use_checkpoint in (False, True):
        vit = _tiny_vit(drop_path_rate=0.5, use_checkpoint=use_checkpoint).train()
        torch.manual_seed(1)
        out = vit(x)
        out.square().mean().backward()
        grads.append((out.detach(), [p.grad for p in vit.parameters() if p.grad is not None]))
        with torch.no_grad():
            vit(x)  # nothing to recompute without gradients: not checkpointed
    assert checkpointed == [b for layer in vit.layers for b in layer.blocks]
    torch.testing.assert_close(grads[0][0], grads[1][0])
    assert len(grads[0][1]) == len(grads[1][1]) > 0
    for a, b in zip(grads[0][1], grads[1][1], strict=True):
        torch.testing.assert_close(a, b)

    # TinyViT's initialisation: linear weights truncated normal (std 0.02), zero biases,
    # each MBConv's last batch norm at zero (the block starts as the identity); no head
    # with num_classes=0
    linears = [m for m in plain.modules() if isinstance(m, nn.Linear)]
    weights = torch.cat([m.weight.flatten() for m in linears])
    assert weights.std().item() == pytest.approx(0.02, rel=0.1) and weights.abs().max() <= 2
    assert not any(m.bias.any() for m in linears)
    assert all(not m.conv3.bn.weight.any() for m in plain.modules() if isinstance(m, MBConv))
    headless = _tiny_vit(num_classes=0)
    assert isinstance(headless.head, nn.Identity) and not any(
        k.startswith("head.") for k in headless.state_dict()
    )


# ---- adapters: LoRA layers wrapping ours -----------------------------------------------

# Every kind of layer a fast path reads the weights of instead of calling: the linears with
# a fused activation (TinyViT's fc1, the decoder's lin1 and its MLP heads), the decoder's
# attention projections (few-token shortcuts), 1x1 convolutions (batch norm folded into
# them); and the plain ones (qkv, proj, fc2, lin2).
LORA_TARGETS = (
    r".*image_encoder.*\.(qkv|proj|fc1|fc2|conv1\.c|conv3\.c)"
    r"|.*mask_decoder.*\.((q|k|v|out)_proj|lin1|lin2|(output_hypernetworks_mlps\.\d+|iou_prediction_head)\.layers\.\d+)"
)


def _box_answer(model, image, box=(40, 50, 200, 150)):
    predictor = SamPredictor(model)
    predictor.set_image(image)
    with torch.no_grad():
        _, scores, logits = predictor.predict(box=np.array(box), multimask_output=True)
    return predictor.get_image_embedding(), torch.as_tensor(logits), torch.as_tensor(scores)


def test_peft_lora_adapters_act_as_their_merged_weights(small_sam_vit_t):
    """PEFT's LoRA layers on every kind of layer our fast paths fold (fused activations,
    the few-token attention, batch norm folded into convolutions) give what the same
    adapters merged into the weights give, fast paths on or off. Before, an activation
    fused into fc1 / lin1 came before the adapter's update (logits 164 off at 1024 px),
    the decoder's few-token attention and its MLP heads ignored their adapters (109 and
    203 off), and an adapted convolution failed in eval mode."""
    import copy

    from peft import LoraConfig, get_peft_model

    from mobilesam.modeling import fast_paths

    image = _image("truck.jpg", (300, 200))
    torch.manual_seed(0)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=LORA_TARGETS, init_lora_weights=False)
    peft_model = get_peft_model(copy.deepcopy(small_sam_vit_t), config)
    adapted = peft_model.base_model.model.eval()
    kinds = {type(m).__name__ for m in adapted.modules() if type(m).__module__.startswith("peft.")}
    assert {"Linear", "Conv2d"} <= kinds
    merged = copy.deepcopy(peft_model).merge_and_unload().eval()  # the updates in the weights
    assert not any(type(m).__module__.startswith("peft.") for m in merged.modules())
    expected = _box_answer(merged, image)
    base = _box_answer(small_sam_vit_t, image)
    assert (expected[1] - base[1]).abs().max() > 1  # the adapters change the answer
    for fast in (True, False):
        with fast_paths.configured(adapted, on=fast):
            answer = _box_answer(adapted, image)
        for got, want in zip(answer, expected, strict=True):
            torch.testing.assert_close(got, want, atol=2e-3, rtol=1e-4)


class _Adapted(torch.nn.Module):
    """A LoRA-style wrapper as adapter code writes one: the layer's output plus a low-rank
    update, whatever the layer is."""

    def __init__(self, layer: torch.nn.Module, update: torch.nn.Module) -> None:
        super().__init__()
        self.layer, self.update = layer, update

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x) + self.update(x)


def test_wrapped_upscaling_layers_run_as_upstream_runs_them(small_truck_predictor):
    """The decoder's upscaling (transposed convolutions read as matmuls) with a wrapped layer
    (PEFT has no LoRA for transposed convolutions; hand-written adapters do) runs the layers
    themselves: the same masks as the matmul form when the update is zero, other masks when
    it is not."""
    decoder = small_truck_predictor.model.mask_decoder
    tokens = torch.randn(2, 16, 16, 256)
    hyper_in = torch.randn(2, 3, 32)
    with torch.no_grad():
        expected = decoder.upscale_and_project(tokens, hyper_in)
        up1 = decoder.output_upscaling[0]
        update = torch.nn.ConvTranspose2d(256, 64, 2, 2)
        torch.nn.init.zeros_(update.weight), torch.nn.init.zeros_(update.bias)
        decoder.output_upscaling[0] = _Adapted(up1, update)
        try:
            torch.testing.assert_close(
                decoder.upscale_and_project(tokens, hyper_in), expected, atol=1e-4, rtol=1e-4
            )
            torch.nn.init.normal_(update.weight)
            assert (decoder.upscale_and_project(tokens, hyper_in) - expected).abs().max() > 1
        finally:
            decoder.output_upscaling[0] = up1


def test_private_build_sam_builds_other_vit_sizes(tmp_path):
    """segment-anything's `_build_sam(embed_dim, depth, heads, global_attn_indexes,
    checkpoint)`, which code building ViT sizes the registry lacks calls: SAM's layout at
    any size, in eval mode, its checkpoint loaded strictly."""
    from mobilesam.build_sam import _build_sam
    from mobilesam.errors import CheckpointError

    small = _build_sam(64, 2, 2, [1])
    encoder = small.image_encoder
    assert not small.training and [b.window_size for b in encoder.blocks] == [14, 0]
    assert encoder.pos_embed.shape == (1, 64, 64, 64) and encoder.blocks[0].attn.rel_pos_h.shape == (27, 32)
    torch.save(small.state_dict(), tmp_path / "small.pth")
    again = _build_sam(64, 2, 2, [1], checkpoint=tmp_path / "small.pth")
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in small.state_dict().items())
    with pytest.raises(CheckpointError, match=r"(?s)depth 3\).*2 blocks.*missing keys"):
        _build_sam(64, 3, 2, [1], checkpoint=tmp_path / "small.pth")
    with torch.device("meta"):  # the registry's ViT-B, as upstream builds it from the same call
        shapes = [
            {k: v.shape for k, v in m.state_dict().items()}
            for m in (_build_sam(768, 12, 12, [2, 5, 8, 11]), build_sam("vit_b"))
        ]
    assert shapes[0] == shapes[1]
