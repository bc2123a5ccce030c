"""Float32 outputs against the official MobileSAM/SAM code on the fixture's synthetic weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import IMAGES, synthetic_state_dict
from PIL import Image

from mobilesam import SamPredictor, build_sam
from mobilesam.modeling import fast_paths
from mobilesam.utils import rle


def _close(ours: np.ndarray, ref: np.ndarray) -> None:
    """The fixture README's rule: max |ours - expected| <= 1e-3 * max(1, max |expected|)."""
    tol = 1e-3 * max(1.0, float(np.abs(ref).max()))
    assert np.abs(ours.reshape(ref.shape) - ref).max() <= tol


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else np.logical_and(a, b).sum() / union


def case_outputs(predictor, case: dict, done: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A `predict` case's masks, IoU predictions and low-res logits: many boxes through
    `predict_torch` where the predictor has it, else one `predict` per box; a mask input
    is the best low-res mask of the case it names (`done`: name -> outputs)."""
    args = dict(case["args"])
    if "boxes" in args and hasattr(predictor, "predict_torch"):
        boxes = predictor.transform.apply_boxes_torch(torch.tensor(args["boxes"]), predictor.original_size)
        masks, iou, low = predictor.predict_torch(None, None, boxes, None, args["multimask_output"])
        return masks.numpy(), iou.numpy(), low.numpy()
    if "boxes" in args:
        runs = [
            predictor.predict(box=np.array(b), multimask_output=args["multimask_output"])
            for b in args["boxes"]
        ]
        return tuple(np.stack(x) for x in zip(*runs))
    source = args.pop("mask_input_from", None)
    if source:
        _, prev_iou, prev_low = done[source]
        args["mask_input"] = prev_low[np.argmax(prev_iou)][None]
    return predictor.predict(**args)


@pytest.fixture(scope="module")
def predictors():
    out = {}
    for name in ("vit_t", "vit_b"):
        sam = build_sam(name)
        sam.load_state_dict(synthetic_state_dict(name))
        out[name] = SamPredictor(sam)
    return out


def _image(name: str) -> np.ndarray:
    return np.asarray(Image.open(IMAGES / name).convert("RGB"))


@pytest.fixture(params=[True, False], ids=["fast", "reference"])
def fast(request, predictors):
    """Each parity test runs with every fast path on, then with all off (the reference path)."""
    on = request.param
    with (
        fast_paths.configured(predictors["vit_t"].model, on=on),
        fast_paths.configured(predictors["vit_b"].model, on=on),
    ):
        yield on


def test_predict_cases(predictors, parity_cases, expected, fast):
    """Every `predict` case: low-res logits, predicted IoU and full-resolution masks."""
    assert fast_paths.state(predictors["vit_t"].model) == {
        "onednn": fast,
        "few_token": fast,
        "flex_attention": False,
    }
    assert fast_paths.state(predictors["vit_b"].model)["flex_attention"] is fast  # eager: the reference path
    done: dict[str, tuple] = {}
    current: dict[str, str] = {}
    cases = [c for c in parity_cases if c["kind"] == "predict"]
    assert {c.get("model", "vit_t") for c in cases} == {"vit_t", "vit_b"}
    for case in cases:
        model = case.get("model", "vit_t")
        predictor = predictors[model]
        if current.get(model) != case["image"]:
            predictor.set_image(_image(case["image"]))
            current[model] = case["image"]
            key = "embedding_" + case["image"] if model == "vit_t" else "vit_b/embedding_" + case["image"]
            if key in expected:
                _close(predictor.get_image_embedding()[0, :, ::8, ::8].numpy(), expected[key])
        masks, iou, low = done[case["name"]] = case_outputs(predictor, case, done)
        assert list(masks.shape) == case["masks_shape"], case["name"]
        _close(low, expected[case["name"] + "/low_res_logits"])
        ref_iou = expected[case["name"] + "/iou_predictions"]
        assert np.abs(iou.reshape(ref_iou.shape) - ref_iou).max() <= 1e-3, case["name"]
        flat = masks.reshape(-1, *masks.shape[-2:])
        assert len(flat) == len(case["masks_rle"])
        for ours, ref in zip(flat, case["masks_rle"]):
            assert _iou(ours, rle.decode(ref)) >= 0.999, case["name"]


def test_embedding_every_fixture_image(predictors, expected, fast):
    names = [k[len("embedding_") :] for k in expected if k.startswith("embedding_")]
    assert names
    predictor = predictors["vit_t"]
    for name in names:
        predictor.set_image(_image(name))
        _close(predictor.get_image_embedding()[0, :, ::8, ::8].numpy(), expected["embedding_" + name])


def test_bgr_input_matches_rgb(predictors, truck):
    predictor = predictors["vit_t"]
    predictor.set_image(truck)
    rgb = predictor.get_image_embedding().clone()
    predictor.set_image(np.ascontiguousarray(truck[..., ::-1]), image_format="BGR")
    assert torch.equal(rgb, predictor.get_image_embedding())


def test_training_mode_batchnorm_matches_folded(sam_vit_t):
    """Eval mode folds BN into the convolutions; the result must equal conv + BN."""
    x = torch.randn(1, 3, 256, 256)
    enc = sam_vit_t.image_encoder.patch_embed
    with torch.no_grad():
        folded = enc(x)
        plain = enc.seq[2].bn(enc.seq[2].c(enc.seq[1](enc.seq[0].bn(enc.seq[0].c(x)))))
    assert torch.allclose(folded, plain, atol=1e-4, rtol=1e-4)
    assert not sam_vit_t.training


@pytest.mark.parametrize("batch", [1, 3])
def test_folded_attention_paths_equal_plain_attention(batch):
    """The decoder's shortcuts for few prompt tokens compute the same attention as the
    plain projections + softmax (up to float rounding), broadcasting a batch of 1."""
    from mobilesam.modeling.transformer import Attention

    torch.manual_seed(0)
    attn = Attention(256, 8, downsample_rate=2).eval()
    for p in attn.parameters():
        torch.nn.init.normal_(p, std=0.1)
    tokens = torch.randn(batch, 7, 256)
    image = torch.randn(batch, 4096, 256)
    with torch.no_grad():
        ref = attn(tokens, image, image * 0.5)
        assert attn.few(7) and not attn.few(17)
        assert torch.allclose(attn.attend_to_image(tokens, image, image * 0.5), ref, atol=1e-4)
        k, v = attn.k_proj(tokens), attn.v_proj(tokens * 2)
        ref = attn(image, tokens, tokens * 2)
        raw = attn.attend_few_keys(image, k, v, q_projected=False)
        projected = attn.attend_few_keys(attn.q_proj(image[:1]), k, v, q_projected=True)
        assert torch.allclose(raw, ref, atol=1e-4)
        assert torch.allclose(projected, attn(image[:1].expand(batch, -1, -1), tokens, tokens * 2), atol=1e-4)
        # The residual rides in the same product (bias folded into the values): same sum.
        for residual in (image, image[:1]):
            fused = attn.attend_few_keys(image, k, v, q_projected=False, residual=residual)
            assert torch.allclose(fused, residual + ref, atol=1e-4)


def test_transformer_tokens_out_is_a_prefix_of_all_tokens():
    """The decoder asks the last attention for its 5 output tokens only: they equal the
    first 5 of the full run, and the image tokens are untouched."""
    from mobilesam.modeling.transformer import TwoWayTransformer

    torch.manual_seed(0)
    transformer = TwoWayTransformer(depth=2, embedding_dim=64, num_heads=4, mlp_dim=128).eval()
    image, pe, points = torch.randn(2, 64, 8, 8), torch.randn(1, 64, 8, 8), torch.randn(2, 7, 64)
    with torch.no_grad():
        full, keys = transformer(image, pe, points)
        some, keys5 = transformer(image, pe, points, tokens_out=5)
    assert full.shape == (2, 7, 64) and some.shape == (2, 5, 64)
    assert torch.allclose(some, full[:, :5], atol=1e-5) and torch.equal(keys, keys5)


def test_folded_attention_trains_like_plain_attention():
    """Decoder fine-tuning backpropagates through the shortcuts: same gradients."""
    from mobilesam.modeling.transformer import Attention

    torch.manual_seed(0)
    attn = Attention(256, 8, downsample_rate=2)
    tokens, image = torch.randn(2, 7, 256), torch.randn(2, 1024, 256)
    grads = []
    for shortcut in (False, True):
        attn.zero_grad()
        k, v = attn.k_proj(tokens), attn.v_proj(tokens)
        if shortcut:
            to_tokens = attn.attend_few_keys(image, k, v, q_projected=False)
            to_image = attn.attend_to_image(tokens, image, image)
        else:
            to_tokens, to_image = attn(image, tokens, tokens), attn(tokens, image, image)
        out = to_tokens.square().mean() + to_image.square().mean()
        out.backward()
        grads.append([p.grad.clone() for p in attn.parameters()])
    for a, b in zip(*grads, strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-3)
