"""Fast paths are explicit flags with a tested reference path; empty is a normal size.

The parity tests (test_parity.py, test_amg.py) run the fixture with every fast path on
and with all off. Here: the flags themselves, each precondition that must send a call
to the reference path (autocast, mixed dtypes, autograd), zero rows through the
decoder, and the automatic generator where filters leave nothing.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from conftest import IMAGES, PARITY, SMALL
from PIL import Image

from mobilesam import MobileSAMError, SamPredictor, build_sam
from mobilesam.automatic_mask_generator import SamAutomaticMaskGenerator
from mobilesam.highlevel import Segmenter
from mobilesam.modeling import fast_paths, image_encoder
from mobilesam.modeling.common import Conv2dBN, MLPBlock, layer_act
from mobilesam.modeling.image_encoder import ImageEncoderViT, _flex_rel_pos_attention, _rel_pos_terms
from mobilesam.modeling.mask_decoder import MaskDecoder, _pixel_shuffle
from mobilesam.modeling.transformer import Attention


def _image(name: str, size: tuple[int, int] | None = None) -> np.ndarray:
    img = Image.open(IMAGES / name).convert("RGB")
    return np.asarray(img.resize(size) if size else img)


def _mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else np.logical_and(a, b).sum() / union


# ---- the flags -------------------------------------------------------------------------


def test_flags_default_env_override_and_configure(monkeypatch, sam_vit_t):
    assert fast_paths.default("onednn") and fast_paths.default("few_token")
    monkeypatch.setenv("MOBILESAM_ONEDNN", "0")
    assert not fast_paths.default("onednn") and not MLPBlock(4, 8).onednn
    assert Attention(16, 2).few_token and not Attention(16, 2).onednn
    monkeypatch.setenv("MOBILESAM_FEW_TOKEN", "maybe")
    with pytest.raises(MobileSAMError, match="MOBILESAM_FEW_TOKEN='maybe'"):
        Attention(16, 2)
    monkeypatch.delenv("MOBILESAM_FEW_TOKEN")
    try:  # the Python override wins over the environment
        fast_paths.set_defaults(onednn=True, few_token=False)
        assert MLPBlock(4, 8).onednn and not Attention(16, 2).few_token
    finally:
        fast_paths.set_defaults(onednn=None, few_token=None)
    assert not fast_paths.default("onednn")  # back to the environment
    with pytest.raises(MobileSAMError, match="unknown fast path"):
        fast_paths.set_defaults(cuda_graphs=True)

    # vit_t has no SAM ViT attention: flex_attention is off for want of a module that has it
    assert fast_paths.state(sam_vit_t) == {"onednn": True, "few_token": True, "flex_attention": False}
    with fast_paths.configured(sam_vit_t, on=False, few_token=True):
        assert fast_paths.state(sam_vit_t) == {"onednn": False, "few_token": True, "flex_attention": False}
        assert not sam_vit_t.mask_decoder.onednn
    assert fast_paths.state(sam_vit_t) == {"onednn": True, "few_token": True, "flex_attention": False}


def test_flex_attention_is_off_unless_asked(monkeypatch):
    """Unmeasured on a GPU and slower on CPUs: off by default, on by the environment,
    the Python override or `configure`."""
    monkeypatch.delenv("MOBILESAM_FLEX_ATTENTION", raising=False)
    assert not fast_paths.default("flex_attention") and not _vit(depth=1).blocks[0].attn.flex_attention
    monkeypatch.setenv("MOBILESAM_FLEX_ATTENTION", "1")
    assert _vit(depth=1).blocks[0].attn.flex_attention
    monkeypatch.setenv("MOBILESAM_FLEX_ATTENTION", "0")
    encoder = _vit(depth=1)
    assert fast_paths.state(encoder)["flex_attention"] is False
    assert fast_paths.configure(encoder, flex_attention=True).blocks[0].attn.flex_attention


@pytest.mark.parametrize("act", ["none", "relu", "gelu"])
def test_onednn_linear_and_conv_fall_back_where_the_kernel_does_not_apply(act):
    """Autocast and autograd take the plain path, which gives what PyTorch's own layers give."""
    torch.manual_seed(0)
    lin, conv = torch.nn.Linear(32, 48).eval(), Conv2dBN(8, 16, 3, 1, 1).eval()
    torch.nn.init.normal_(conv.bn.running_mean)
    x, img = torch.randn(5, 32), torch.randn(2, 8, 12, 12)
    ref_lin = {"none": lambda y: y, "relu": torch.relu, "gelu": torch.nn.functional.gelu}[act]
    with torch.no_grad():
        plain = ref_lin(torch.nn.functional.linear(x, lin.weight, lin.bias))
        assert torch.allclose(layer_act(lin, x, act, onednn=True), plain, atol=1e-5)
        plain_conv = ref_lin(conv.bn(conv.c(img)))
        assert torch.allclose(conv(img, act), plain_conv, atol=1e-4)
        # Under autocast the activations become bf16 while the weights stay float32: oneDNN
        # would refuse the pair; the plain path lets autocast cast both.
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = layer_act(lin, x, act, onednn=True)
            yc = conv(img, act)
        assert y.dtype == torch.bfloat16 and torch.allclose(y.float(), plain, atol=0.1, rtol=0.05)
        assert torch.allclose(yc.float(), plain_conv, atol=0.15, rtol=0.05)
    out = layer_act(lin, x.requires_grad_(), act, onednn=True)  # autograd: the plain path, gradients flow
    out.sum().backward()
    assert lin.weight.grad is not None and x.grad is not None


@pytest.mark.parametrize("onednn", [True, False])
def test_per_prompt_products_broadcast_a_batch_of_one_on_either_side(onednn):
    """`attend_to_image` with keys of a batch of 1 and queries of a batch of 3: the same on
    the per-prompt oneDNN path and on the batched matmul path (it raised on the first)."""
    torch.manual_seed(0)
    attn = Attention(256, 8, downsample_rate=2).eval()
    for p in attn.parameters():
        torch.nn.init.normal_(p, std=0.1)
    fast_paths.configure(attn, onednn=onednn)
    tokens, image = torch.randn(3, 7, 256), torch.randn(1, 4096, 256)
    with torch.no_grad():
        ref = attn(tokens, image.expand(3, -1, -1), image.expand(3, -1, -1) * 0.5)
        assert torch.allclose(attn.attend_to_image(tokens, image, image * 0.5), ref, atol=1e-4)
        assert attn._per_prompt(torch.randn(0, 5, 4), torch.randn(0, 4, 6), None).shape == (0, 5, 6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_mask_pixel_shuffle_moves_pairs_with_the_same_bits_as_the_plain_permute(dtype):
    """`_pixel_shuffle` moves dx2 pairs as one integer (float32 and 16-bit types); autograd
    and float64 take the 8-D permute. Every path puts logit (h, w, dy1, dx1, dy2, dx2) at
    row 4h + 2dy1 + dy2, column 4w + 2dx1 + dx2, bit for bit (NaN payloads included)."""
    b, k, h, w = 2, 3, 5, 7
    masks = torch.randn(b, k, h * w * 16).to(dtype)
    masks.view(-1)[5] = float("nan")
    expected = torch.empty(b, k, 4 * h, 4 * w, dtype=dtype)
    src = masks.view(b, k, h, w, 2, 2, 2, 2)
    for dy1, dx1, dy2, dx2 in np.ndindex(2, 2, 2, 2):
        expected[:, :, 2 * dy1 + dy2 :: 4, 2 * dx1 + dx2 :: 4] = src[:, :, :, :, dy1, dx1, dy2, dx2]
    with torch.no_grad():
        fast = _pixel_shuffle(masks, b, k, h, w)
    plain = _pixel_shuffle(masks.clone().requires_grad_(dtype.is_floating_point), b, k, h, w)
    bits = {torch.float64: torch.int64, torch.float32: torch.int32}.get(dtype, torch.int16)
    assert torch.equal(fast.view(bits), expected.view(bits))
    assert torch.equal(plain.detach().view(bits), expected.view(bits))
    assert _pixel_shuffle(masks[:0], 0, k, h, w).shape == (0, k, 4 * h, 4 * w)


@pytest.mark.parametrize("onednn", [True, False])
def test_upscaler_matches_the_reference_modules(onednn):
    """`upscale_and_project` (channels-last matmuls, mask-major product, pair shuffle)
    against SAM's own steps: output_upscaling on NCHW, then hyper_in @ upscaled."""
    torch.manual_seed(0)
    decoder = MaskDecoder().eval()
    for p in decoder.parameters():
        torch.nn.init.normal_(p, std=0.2)
    fast_paths.configure(decoder, onednn=onednn)
    tokens, hyper_in = torch.randn(3, 6, 5, 256), torch.randn(3, 2, 32)
    with torch.no_grad():
        up = decoder.output_upscaling(tokens.permute(0, 3, 1, 2))
        ref = (hyper_in @ up.flatten(2)).view(3, 2, 24, 20)
        out = decoder.upscale_and_project(tokens, hyper_in)
    assert torch.allclose(out, ref, atol=1e-4, rtol=1e-5)
    grad_out = decoder.upscale_and_project(tokens, hyper_in.requires_grad_())
    assert torch.allclose(grad_out.detach(), out, atol=1e-6)


def test_image_to_token_attention_overwrites_only_an_owned_residual():
    """`attend_few_keys(..., overwrite=True)` writes the sum into the residual it is handed
    (the same values as without), never into a broadcast one, nor under autograd."""
    torch.manual_seed(0)
    attn = Attention(256, 8, downsample_rate=2).eval()
    x, k, v = torch.randn(2, 64, 256), torch.randn(2, 7, 128), torch.randn(2, 7, 128)
    with torch.no_grad():
        residual = torch.randn(2, 64, 256)
        expected = attn.attend_few_keys(x, k, v, False, residual=residual)
        kept = residual.clone()
        out = attn.attend_few_keys(x, k, v, False, residual=residual, overwrite=True)
        assert torch.equal(out, expected) and out.data_ptr() == residual.data_ptr()
        shared = torch.randn(1, 64, 256)
        before = shared.clone()
        attn.attend_few_keys(x, k, v, False, residual=shared, overwrite=True)
        assert torch.equal(shared, before) and not torch.equal(residual, kept)
    grad_residual = kept.clone().requires_grad_()
    out = attn.attend_few_keys(x, k, v, False, residual=grad_residual, overwrite=True)
    out.sum().backward()
    assert torch.equal(grad_residual.detach(), kept) and grad_residual.grad is not None


@pytest.mark.parametrize("multimask", [False, True])
def test_training_the_decoder_gives_every_parameter_its_gradient(multimask):
    """Fine-tuning the decoder (masks and IoU in the loss): every parameter gets a gradient,
    as with upstream's decoder, which DistributedDataParallel needs (it raised "parameters
    that were not used in producing loss" on the second step): zero for the mask tokens not
    asked for and, but for rounding, for the key biases (softmax ignores them). The fast
    paths' gradients are the reference path's."""
    torch.manual_seed(0)
    decoder = MaskDecoder().train()
    image, pe, dense = torch.randn(1, 256, 16, 16), torch.randn(1, 256, 16, 16), torch.randn(3, 256, 16, 16)
    sparse = torch.randn(3, 2, 256)
    grads = {}
    for fast in (True, False):
        with fast_paths.configured(decoder, on=fast):
            decoder.zero_grad(set_to_none=True)
            masks, iou = decoder(image, pe, sparse, dense, multimask_output=multimask)
            (masks.square().mean() + iou.square().mean()).backward()
        grads[fast] = {name: p.grad for name, p in decoder.named_parameters()}
        assert not [name for name, g in grads[fast].items() if g is None]
    unused = [1, 2, 3] if not multimask else [0]
    for name, g in grads[True].items():
        torch.testing.assert_close(g, grads[False][name], atol=1e-6, rtol=1e-4)
        if name.startswith("output_hypernetworks_mlps.") and int(name.split(".")[1]) in unused:
            assert not g.any(), name
        if name.endswith("k_proj.bias"):
            assert g.abs().max() < 1e-6, name


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "reference"])
def test_decoder_takes_zero_rows(truck_predictor, fast):
    """Every prompt of a chunk filtered out: the decoder's upscaler gets a batch of 0."""
    decoder = truck_predictor.model.mask_decoder
    with fast_paths.configured(truck_predictor.model, on=fast), torch.inference_mode():
        coords = torch.tensor([[[500.0, 300.0]]])
        sparse, dense = truck_predictor.model.prompt_encoder(
            (coords, torch.ones(1, 1, dtype=torch.int)), None, None
        )
        hs, src, size = decoder.run_transformer(
            truck_predictor.features, truck_predictor.image_pe, sparse, dense, truck_predictor.context
        )
        empty = torch.zeros(0, dtype=torch.long)
        masks = decoder.masks_from_tokens(hs[empty], src[empty], size, slice(1, None))
        assert masks.shape == (0, 3, 256, 256)
        low_res, iou, idx = truck_predictor.decode_points(torch.tensor([[500.0, 300.0]]), float("inf"))
        assert low_res.shape == (0, 256, 256) and iou.shape == (0,) and idx.shape == (0,)


# ---- FlexAttention in SAM's ViT (the teachers) ----------------------------------------


def _vit(depth: int = 2, img_size: int = 96) -> ImageEncoderViT:
    """A small SAM ViT (6x6 tokens, 4x4 windows: padded) with random, non-zero tables."""
    torch.manual_seed(0)
    encoder = ImageEncoderViT(
        img_size,
        embed_dim=32,
        depth=depth,
        num_heads=2,
        out_chans=16,
        window_size=4,
        global_attn_indexes=(1,),
    ).eval()
    with torch.no_grad():
        for p in encoder.parameters():
            p.normal_(0, 0.2)
    return encoder


@pytest.mark.parametrize("q_size", [(4, 6), (6, 6)])
def test_flex_rel_pos_attention_equals_sdpa_with_the_bias(q_size):
    """The score_mod looks up the same two terms the mask holds, on a grid that is not
    square (a row is ki // kw, a column ki % kw)."""
    torch.manual_seed(0)
    h, w = q_size
    q, k, v = (torch.randn(2, 3, h * w, 8) for _ in range(3))
    tables = torch.randn(2 * max(h, w) - 1, 8), torch.randn(2 * max(h, w) - 1, 8)
    rel_h, rel_w = _rel_pos_terms(q, *tables, (h, w), (h, w))
    bias = (rel_h[..., :, None] + rel_w[..., None, :]).reshape(2, 3, h * w, h * w)
    reference = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    with warnings.catch_warnings():  # eager FlexAttention warns that it is unfused
        warnings.simplefilter("ignore")
        got = _flex_rel_pos_attention(q, k, v, rel_h, rel_w)
    torch.testing.assert_close(got, reference, rtol=1e-5, atol=1e-5)


def _compiled_graphs(encoder, x) -> tuple[torch.Tensor, list[str]]:
    """The encoder through torch.compile (no code generation): its output and the
    targets of every node of the graphs dynamo made."""
    graphs = []

    def backend(gm, inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    out = torch.compile(encoder, backend=backend, dynamic=False)(x)
    return out, [str(node.target) for gm in graphs for node in gm.graph.nodes]


def test_vit_attention_takes_flex_only_when_compiled_on_cuda_without_gradients(monkeypatch):
    """Flag on: eager runs the reference path bit for bit; compiled, a CPU tensor keeps the
    reference path (the device precondition); with the device precondition lifted, the
    graphs hold FlexAttention in the global and the windowed blocks and the output is the
    reference's; with autograd recording, the reference path again."""
    encoder, x = _vit(), torch.randn(1, 3, 96, 96)
    with torch.inference_mode():
        reference = encoder(x)
        fast_paths.configure(encoder, flex_attention=True)
        assert torch.equal(encoder(x), reference)
        out, nodes = _compiled_graphs(encoder, x)
        assert not any("flex" in n.lower() for n in nodes)
        torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5)

        def on_any_device(*tensors):
            return torch.compiler.is_compiling() and not fast_paths.needs_grad(*tensors)

        monkeypatch.setattr(image_encoder, "flex_attention_applies", on_any_device)
        out, nodes = _compiled_graphs(encoder, x)
    assert sum("flex" in n.lower() for n in nodes) == 2  # one per block
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5)
    with torch.enable_grad():
        encoder.requires_grad_(True)
        out, nodes = _compiled_graphs(encoder, x)
    assert not any("flex" in n.lower() for n in nodes)
    torch.testing.assert_close(out.detach(), reference, rtol=1e-5, atol=1e-5)


def test_flex_attention_preconditions_on_this_cpu():
    """Eager, or on CPU tensors: never."""
    x = torch.randn(2, 2)
    assert not fast_paths.flex_attention_applies(x)
    assert not torch.compile(fast_paths.flex_attention_applies, backend="eager", fullgraph=True)(x)
    torch._dynamo.reset()


# ---- the automatic generator where filters leave nothing -----------------------------


@pytest.fixture(scope="module")
def untrained():
    """A default-initialised vit_t, as in the bug report: predicted IoUs 0.01-0.2 (the
    fixture's weights put every chunk's best far above any threshold in [0, 1]); at 256 px."""
    torch.manual_seed(0)
    return build_sam("vit_t", img_size=SMALL).eval()


def _chunk_maxima(predictor: SamPredictor, image: np.ndarray, side: int, chunk: int) -> list[float]:
    """Each decode chunk's best predicted IoU on an n x n grid (what the IoU filter sees)."""
    gen = SamAutomaticMaskGenerator(predictor.model, points_per_side=side)
    predictor.set_image(image)
    points = gen.point_grids[0] * np.array(image.shape[:2])[None, ::-1]
    coords = torch.as_tensor(predictor.transform.apply_coords(points, image.shape[:2]), dtype=torch.float)
    _, iou, idx = predictor.decode_points(coords, 0.0)
    return [iou[(idx >= s) & (idx < s + chunk)].max().item() for s in range(0, len(points), chunk)]


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "reference"])
def test_generator_with_chunks_that_have_no_survivor(untrained, fast):
    """A threshold between the chunks' best IoUs: some decode chunks lose every prompt,
    others keep some. Results do not depend on how prompts are batched (8, 5 or 3 per
    batch: not dividing the 36 prompts), and every mask passes the threshold."""
    image = _image("picture1.jpg", (320, 240))
    with fast_paths.configured(untrained, on=fast):
        maxima = _chunk_maxima(SamPredictor(untrained), image, 6, 8)
        thresh = float(np.median(maxima))
        assert min(maxima) < thresh < max(maxima), maxima  # both kinds of chunk occur
        kwargs = {"points_per_side": 6, "pred_iou_thresh": thresh, "stability_score_thresh": 0.0}
        runs = [
            SamAutomaticMaskGenerator(untrained, points_per_batch=b, **kwargs).generate(image)
            for b in (64, 5, 3)
        ]
    assert runs[0], "some chunks keep masks"
    for anns in runs[1:]:
        assert len(anns) == len(runs[0])
        for a, b in zip(anns, runs[0]):
            assert a["point_coords"] == b["point_coords"] and a["bbox"] == b["bbox"]
            assert abs(a["predicted_iou"] - b["predicted_iou"]) <= 1e-5
            assert _mask_iou(a["segmentation"], b["segmentation"]) >= 0.999
    assert all(a["predicted_iou"] > thresh for a in runs[0])


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "reference"])
@pytest.mark.parametrize("crop_n_layers", [0, pytest.param(1, marks=pytest.mark.slow)])
def test_generator_and_api_on_an_image_with_no_mask(untrained, crop_n_layers, fast, tmp_path):
    """Nothing passes (every chunk of every crop is empty): an empty list, and an empty
    result that still exports and draws. This crashed on the first empty chunk."""
    image = _image("picture2.jpg", (200, 150))
    with fast_paths.configured(untrained, on=fast):
        # as reported; with crops (5x the cost) the API call below runs the same generator
        # (generate_records) at the default 0.88, so generate() is not run a second time
        for thresh in (0.5, 0.88, 1.0) if crop_n_layers == 0 else ():
            gen = SamAutomaticMaskGenerator(
                untrained, points_per_side=4, pred_iou_thresh=thresh, crop_n_layers=crop_n_layers
            )
            assert gen.generate(image) == []
        result = Segmenter(SamPredictor(untrained)).segment_everything(
            image, points_per_side=4, crop_n_layers=crop_n_layers
        )
    assert len(result) == 0 and result.masks.shape == (0, 150, 200) and result.boxes.shape == (0, 4)
    assert result.to_coco()["annotations"] == [] and not result.label_map().any()
    assert result.save_overlay(tmp_path / "o.png").is_file()


def test_generator_keeps_no_state_between_calls(small_sam_vit_t):
    """Two images interleaved: each call's records read their own masks."""
    gen = SamAutomaticMaskGenerator(
        small_sam_vit_t, points_per_side=4, pred_iou_thresh=0.5, stability_score_thresh=0.5
    )
    a, b = _image("picture1.jpg", (160, 120)), _image("picture3.jpg", (160, 120))
    rec_a = gen.generate_records(a)
    rec_b = gen.generate_records(b)
    assert len(rec_a) and len(rec_b)
    assert not hasattr(gen, "_store")
    again = gen.generate(a)
    assert [ann["area"] for ann in again] == rec_a.areas.tolist()
    assert int(np.unpackbits(rec_a.read(0)).sum()) == int(rec_a.areas[0])


# ---- bf16 autocast around everything ---------------------------------------------------

# Measured on the fixture's vit_t predict cases (2026-11-27, this CPU): embedding max
# error 0.040 of its largest value, mask IoU >= 0.968, scores within 0.0072 of float32.
# The bounds below leave about 2x room.
BF16_EMBEDDING_REL, BF16_MASK_IOU, BF16_SCORE = 0.08, 0.95, 0.02


def test_bf16_autocast_encoder_and_predictor_agree_with_float32(sam_vit_t):
    predictor = SamPredictor(sam_vit_t)
    cases = json.loads((PARITY / "cases.json").read_text())["cases"]
    cases = [
        c
        for c in cases
        if c["kind"] == "predict"
        and "model" not in c
        and set(c["args"]) <= {"point_coords", "point_labels", "box", "multimask_output"}
    ]
    assert len(cases) >= 3
    for case in cases:
        image = _image(case["image"])
        predictor.set_image(image)
        emb32, (m32, s32, _) = predictor.features, predictor.predict(**case["args"])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            predictor.set_image(image)
            emb16, (m16, s16, low16) = predictor.features, predictor.predict(**case["args"])
        assert low16.dtype == s16.dtype == np.float32  # numpy has no bfloat16
        assert (emb16 - emb32).abs().max() <= BF16_EMBEDDING_REL * emb32.abs().max(), case["name"]
        assert np.abs(s16 - s32).max() <= BF16_SCORE, case["name"]
        assert min(_mask_iou(a, b) for a, b in zip(m16, m32)) >= BF16_MASK_IOU, case["name"]
        # The decoder context follows autocast: float32 again once it is off.
        assert np.abs(predictor.predict(**case["args"])[1] - s16).max() <= BF16_SCORE


def test_bf16_autocast_generator_runs(small_sam_vit_t):
    image = _image("picture1.jpg", (320, 240))
    gen = SamAutomaticMaskGenerator(
        small_sam_vit_t, points_per_side=4, pred_iou_thresh=0.5, stability_score_thresh=0.5
    )
    ref = gen.generate(image)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        anns = gen.generate(image)
    assert ref and anns
    assert abs(len(anns) - len(ref)) <= max(1, len(ref) // 5)
