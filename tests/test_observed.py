"""The model as code that watches or swaps its modules sees it: hooks (FLOP counters,
feature extractors, Grad-CAM) see each module's own call with upstream's inputs and
outputs, activation modules under upstream's names are what computes the activations,
quantisation finds the linear layers and runs them, pruning finds every layer.

Before 2026-12-07 the fast paths fused activations into the layer before them and read
layers' weights instead of calling them: thop counted 30.8 GMACs for MobileSAM's encoder
(the official code: 39.3), a hook on `fc1` or on a convolution saw the output after GELU,
the activation modules were strings or absent (micro-sam's LoRA calls `mlp.act`),
Torch-Pruning did not see the convolutions; our linear layers were a subclass of
nn.Linear, which `quantize_dynamic` does not match, and torchao's int8 weights crashed
in oneDNN.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from mobilesam import SamPredictor
from mobilesam.modeling import MaskDecoder, TwoWayTransformer, fast_paths
from mobilesam.modeling.common import MLPBlock
from mobilesam.modeling.fast_paths import hooked
from mobilesam.modeling.mask_decoder import MLP
from mobilesam.modeling.tiny_vit import MBConv, Mlp, PatchEmbed, PatchMerging


def test_flop_counter_counts_the_official_models_operations(sam_vit_t):
    """ultralytics-thop (Ultralytics' `model.info()`, papers' GFLOPs columns) counts with
    hooks on each layer: the numbers are those it gives for the official MobileSAM code
    (mobilesam-mirror 1.0.0, thop 2.2.3, 2026-12-07), and nothing is left hooked."""
    import thop

    sam = sam_vit_t
    with torch.no_grad():
        macs, params = thop.profile(sam.image_encoder, inputs=(torch.randn(1, 3, 1024, 1024),), verbose=False)
        assert (int(macs), int(params)) == (39_337_862_656, 6_065_532)  # ours before: 30.82 G
        emb, pe = torch.randn(1, 256, 64, 64), sam.prompt_encoder.get_dense_pe()
        one_point = sam.prompt_encoder(
            points=(torch.tensor([[[300.0, 400.0]]]), torch.ones(1, 1)), boxes=None, masks=None
        )
        macs, params = thop.profile(sam.mask_decoder, inputs=(emb, pe, *one_point, True), verbose=False)
        assert (int(macs), int(params)) == (1_819_741_184, 4_058_340)  # ours before: 0.57 G
        points = (torch.tensor([[[300.0, 400.0], [500.0, 600.0]]]), torch.ones(1, 2))
        box, mask = torch.tensor([[10.0, 20.0, 300.0, 400.0]]), torch.randn(1, 1, 256, 256)
        macs, _ = thop.profile(sam.prompt_encoder, inputs=(points, box, mask), verbose=False)
        assert int(macs) == 18_088_960
        sparse, dense = sam.prompt_encoder(points=points, boxes=box, masks=mask)
        macs, _ = thop.profile(sam.mask_decoder, inputs=(emb, pe, sparse, dense, False), verbose=False)
        assert int(macs) == 1_836_172_288
    assert not any(hooked(m) for m in sam.modules())


def _clone(x):
    if torch.is_tensor(x):
        return x.clone()
    if isinstance(x, (tuple, list)):
        return type(x)(_clone(v) for v in x)
    return x


def _same_to_float_rounding(a, b, msg=None):
    """Equal within float32 summation order, at the tensor's own scale: the mask logits
    reach ~170, where the plain path and the fused one differ by up to 3.3e-4 (30 seeded
    inputs), over a fixed 2e-4 at a logit near 0 once in CI."""
    scale = float(a.abs().max()) if a.numel() and a.is_floating_point() else 0.0
    torch.testing.assert_close(a, b, atol=1e-5 * max(scale, 1.0), rtol=1e-4, msg=msg)


def _tensors(x):
    if torch.is_tensor(x):
        return [x]
    if isinstance(x, (tuple, list)):
        return [t for v in x for t in _tensors(v)]
    return []


def test_hooks_see_each_modules_own_call(small_sam_vit_t):
    """A hook on every module: each is called with tensors only (no fused activation
    flag) and its output is what the module computes for those inputs; every module is
    called but for the ones upstream never calls either (containers, the embeddings whose
    weights it reads, TinyViT's unused classifier head). The answers stay the same."""
    sam, size, g = small_sam_vit_t, 256, torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, size, size, generator=g) * 2 - 1
    points = (torch.tensor([[[0.3, 0.4], [0.6, 0.5]]]) * size, torch.tensor([[1, 0]]))
    box = torch.tensor([[10.0, 20.0, 0.5 * size, 0.7 * size]])
    mask = torch.randn(1, 1, size // 4, size // 4, generator=g)

    def run():
        emb = sam.image_encoder(image)
        sparse, dense = sam.prompt_encoder(points=points, boxes=box, masks=mask)
        return emb, sam.mask_decoder(emb, sam.prompt_encoder.get_dense_pe(), sparse, dense, True)

    with torch.no_grad():
        expected = run()
        calls = []
        hook = nn.modules.module.register_module_forward_hook(
            lambda m, args, kwargs, out: calls.append((m, _clone(args), _clone(kwargs), _clone(out))),
            with_kwargs=True,
        )
        try:
            watched = run()
        finally:
            hook.remove()
        for a, b in zip(_tensors(expected), _tensors(watched)):
            _same_to_float_rounding(a, b)
        names = {m: n for n, m in sam.named_modules()}
        for m, args, kwargs, out in calls:
            flags = [a for a in list(args) + list(kwargs.values()) if isinstance(a, str)]
            assert not flags, f"{names[m]} called with {flags}"
            again = m(*_clone(args), **_clone(kwargs))
            for a, b in zip(_tensors(out), _tensors(again)):
                _same_to_float_rounding(a, b, msg=lambda s, n=names[m]: f"{n}: {s}")
    uncalled = {n for m, n in names.items() if m not in {c[0] for c in calls}}
    uncalled -= {n for n, m in sam.named_modules() if isinstance(m, (nn.ModuleList, nn.Embedding))}
    assert uncalled == {"", "image_encoder.norm_head", "image_encoder.head"}
    # the decoder's transformer and last attention see every token, as upstream's
    final = [c for c in calls if names[c[0]] == "mask_decoder.transformer.final_attn_token_to_image"]
    assert [c[2]["q"].shape[1] for c in final] == [5 + 4]  # output tokens + 2 points + 2 corners


def test_hooks_on_attention_modules_see_upstreams_calls(small_truck_predictor, truck):
    """Hooks on three attention modules only: they are called (with upstream's q, k, v)
    rather than taken apart, the first block's too, whose image projections the predictor
    otherwise computes once per image (then not at all: each projection runs once, in
    the call); the masks stay the same."""
    p = small_truck_predictor
    box = [100, 200, 900, 700]
    expected = p.predict(box=box)
    blocks = p.model.mask_decoder.transformer.layers
    t2i, i2t = blocks[0].cross_attn_token_to_image, blocks[1].cross_attn_image_to_token
    final = p.model.mask_decoder.transformer.final_attn_token_to_image
    seen = []
    hooks = [
        t2i.register_forward_hook(
            lambda m, a, kw, out: seen.append(("t2i", kw["q"].shape, kw["k"].shape)), with_kwargs=True
        ),
        i2t.register_forward_hook(
            lambda m, a, kw, out: seen.append(("i2t", kw["q"].shape, kw["k"].shape)), with_kwargs=True
        ),
        t2i.k_proj.register_forward_hook(lambda m, a, out: seen.append(("k_proj", a[0].shape))),
        final.register_forward_hook(
            lambda m, a, kw, out: seen.append(("final", kw["q"].shape, kw["k"].shape)), with_kwargs=True
        ),
    ]
    try:
        p.set_image(truck)  # a new image: its projections are prepared with the hooks on
        got = p.predict(box=box)
    finally:
        for h in hooks:
            h.remove()
    tokens, image = 5 + 2, 16 * 16  # output tokens + the box's corners; the image's
    assert seen == [
        ("k_proj", (1, image, 256)),
        ("t2i", (1, tokens, 256), (1, image, 256)),
        ("i2t", (1, image, 256), (1, tokens, 256)),
        ("final", (1, tokens, 256), (1, image, 256)),
    ]
    assert (got[0] != expected[0]).mean() < 1e-4
    torch.testing.assert_close(torch.as_tensor(got[1]), torch.as_tensor(expected[1]), atol=1e-4, rtol=1e-4)


def _conv_bn(m, x):
    """Upstream's Conv2d_BN: the convolution, then the batch norm."""
    return m.bn(m.c(x))


# Each block where our kernels fuse an activation into the layer before it, built small,
# with its forward as TinyViT / segment-anything write it, and its activation modules.
BLOCKS = {
    "PatchEmbed": (
        lambda: PatchEmbed(3, 16),
        (2, 3, 16, 16),
        lambda m, x: _conv_bn(m.seq[2], m.seq[1](_conv_bn(m.seq[0], x))),
        ["seq.1"],
    ),
    "MBConv": (
        lambda: MBConv(8, 4.0),
        (2, 8, 8, 8),
        lambda m, x: m.act3(_conv_bn(m.conv3, m.act2(_conv_bn(m.conv2, m.act1(_conv_bn(m.conv1, x))))) + x),
        ["act1", "act2", "act3"],
    ),
    "PatchMerging": (
        lambda: PatchMerging(8, 8, 16, 2),
        (2, 8, 8, 8),
        lambda m, x: (
            _conv_bn(m.conv3, m.act(_conv_bn(m.conv2, m.act(_conv_bn(m.conv1, x)))))
            .flatten(2)
            .transpose(1, 2)
        ),
        ["act"],
    ),
    "Mlp": (lambda: Mlp(8, 32), (2, 5, 8), lambda m, x: m.fc2(m.act(m.fc1(m.norm(x)))), ["act"]),
    "MLPBlock": (lambda: MLPBlock(8, 32), (2, 5, 8), lambda m, x: m.lin2(m.act(m.lin1(x))), ["act"]),
}


@pytest.mark.parametrize("name", BLOCKS)
def test_activation_modules_are_what_computes_the_activations(name):
    """Upstream's activation modules, by upstream's names: GELU by default (fused into the
    layer before), and a module put in their place (SiLU, GELU's tanh approximation, a
    hooked GELU) is what runs, as in upstream's forward. micro-sam's LoRA for the ViT's
    MLP calls `mlp.act` itself."""
    build, shape, upstream_forward, act_names = BLOCKS[name]
    torch.manual_seed(0)
    block = build().eval()
    for m in block.modules():  # batch norms that do something, for the folding
        if isinstance(m, nn.BatchNorm2d):
            for t in (m.weight, m.bias, m.running_mean):
                t.data.normal_(0, 0.5)
            m.running_var.data.uniform_(0.5, 2.0)
    assert [type(block.get_submodule(n)) for n in act_names] == [nn.GELU] * len(act_names)
    x = torch.randn(shape)
    with torch.no_grad():
        plain = block(x)
        torch.testing.assert_close(plain, upstream_forward(block, x), atol=1e-5, rtol=1e-5)
        outs = {}
        for key, make in (
            ("silu", nn.SiLU),
            ("tanh", lambda: nn.GELU(approximate="tanh")),
            ("gelu", nn.GELU),
        ):
            swapped = copy.deepcopy(block)
            for n in act_names:
                parent, _, attr = n.rpartition(".")
                setattr(swapped.get_submodule(parent), attr, make())
            seen = []
            swapped.get_submodule(act_names[0]).register_forward_hook(
                lambda m, a, out, seen=seen: seen.append(out)
            )
            outs[key] = swapped(x)
            assert seen  # the hooked activation was called, not fused
            torch.testing.assert_close(outs[key], upstream_forward(swapped, x), atol=1e-5, rtol=1e-5)
        # a forward replaced on the instance (accelerate's hooks, a monkeypatch) is called too
        patched = copy.deepcopy(block)
        act = patched.get_submodule(act_names[0])
        act.forward = lambda y, act=act: nn.GELU.forward(act, y) * 2
        torch.testing.assert_close(patched(x), upstream_forward(patched, x), atol=1e-5, rtol=1e-5)
        layer = next(m for m in patched.modules() if isinstance(m, (nn.Linear, nn.Conv2d)))
        layer.forward = lambda y, layer=layer: type(layer).forward(layer, y) + 1
        torch.testing.assert_close(patched(x), upstream_forward(patched, x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(outs["gelu"], plain, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(outs["silu"], plain, atol=1e-3)


def test_decoder_activations_are_the_ones_given():
    """MaskDecoder's `activation` (the upscaling's) and TwoWayTransformer's (the MLPs'), any
    class as upstream: the fast upscaling steps aside for one it does not compute; the
    hypernetwork MLP's `sigmoid_output`, as upstream's."""
    torch.manual_seed(0)
    tokens, hyper = torch.randn(2, 4, 4, 32), torch.randn(2, 3, 4)
    with torch.no_grad():
        outs = {}
        for act in (nn.GELU, nn.SiLU):
            torch.manual_seed(1)  # the same weights
            decoder = MaskDecoder(
                transformer_dim=32, transformer=TwoWayTransformer(1, 32, 2, 64, act), activation=act
            )
            outs[act] = decoder.upscale_and_project(tokens, hyper)
            torch.testing.assert_close(
                outs[act], decoder.upscale_with_layers(tokens, hyper), atol=1e-5, rtol=1e-5
            )
            mlp, x = decoder.transformer.layers[0].mlp, torch.randn(3, 32)
            torch.testing.assert_close(mlp(x), mlp.lin2(act()(mlp.lin1(x))))
        assert not torch.allclose(outs[nn.GELU], outs[nn.SiLU], atol=1e-3)
        head, x = MLP(8, 16, 4, 3, sigmoid_output=True), torch.randn(5, 8)
        plain = MLP(8, 16, 4, 3)
        plain.load_state_dict(head.state_dict())
        torch.testing.assert_close(head(x), torch.sigmoid(plain(x)))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_quantisation_finds_and_runs_every_linear_layer(small_truck_predictor, truck):
    """PyTorch's one-line int8 for CPUs: torch.ao's `quantize_dynamic(sam, {nn.Linear})`
    swaps every linear layer (it matches the type exactly: ours were a subclass, and it
    swapped none), torchao's `quantize_` puts int8 tensors in their weights (our kernels
    read the weights: it crashed in oneDNN). The quantised layers run: the answers move,
    by quantisation noise only."""
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    p = small_truck_predictor
    box = np.array([100, 200, 900, 700])
    ref_masks, ref_scores, _ = p.predict(box=box)
    ref = p.features
    linears = sorted(n for n, m in p.model.named_modules() if isinstance(m, nn.Linear))
    assert len(linears) == 88
    swapped = torch.ao.quantization.quantize_dynamic(p.model, {nn.Linear}, dtype=torch.qint8)
    assert (
        sorted(n for n, m in swapped.named_modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear))
        == linears
    )
    weights = copy.deepcopy(p.model)
    quantize_(weights, Int8WeightOnlyConfig())
    assert {type(weights.get_submodule(n).weight).__name__ for n in linears} == {"Int8Tensor"}
    for model in (swapped, weights):
        q = SamPredictor(model)
        q.set_image(truck)
        error = float((q.features - ref).abs().max() / ref.abs().max())
        masks, scores, _ = q.predict(box=box)
        assert 1e-4 < error < 0.2, error
        assert min(_iou(a, b) for a, b in zip(masks, ref_masks)) > 0.9
        assert np.abs(scores - ref_scores).max() < 0.05


def test_structured_pruning_finds_every_layer(small_sam_vit_t):
    """Torch-Pruning (SlimSAM's pruner) finds the layers through hooks and autograd:
    MetaPruner at 25% on the encoder's convolutions and linear layers (attention, neck
    and head kept) takes a quarter of every convolution's and MLP's hidden channels, the
    widths the attention reads stay, and the pruned encoder runs on the fast paths as on
    the reference path. Until 2026-12-07 the batch norms folded in eval mode hid the
    convolutions from it: it pruned none of them, counted 2.8 GMACs for the official
    code's 29.4 after pruning, and its pruned model's embedding was 111% off the official
    pruned model's (now: the same widths, counts and embedding to 1e-6, run by hand)."""
    import torch_pruning as tp

    encoder = copy.deepcopy(small_sam_vit_t.image_encoder).eval()
    x = torch.randn(1, 3, 256, 256)

    def widths():
        return {
            n: m.out_channels if isinstance(m, nn.Conv2d) else m.out_features
            for n, m in encoder.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear)) and "attn" not in n and not n.startswith("neck")
        }

    before = widths()
    kept = [m for n, m in encoder.named_modules() if n.startswith("neck") or "attn" in n or n == "head"]
    importance = tp.importance.MagnitudeImportance(p=2)
    tp.pruner.MetaPruner(
        encoder,
        x,
        importance=importance,
        pruning_ratio=0.25,
        ignored_layers=kept,
        root_module_types=[nn.Conv2d, nn.Linear],
    ).step()
    after = widths()
    pruned = {n for n in before if after[n] != before[n]}
    assert all(after[n] == before[n] * 3 // 4 for n in pruned)
    expected = {
        n for n in before if n.endswith(("conv1.c", "conv2.c", "mlp.fc1")) or n.startswith("patch_embed")
    }
    expected.add("layers.0.blocks.0.conv3.c")  # the convolutional stage's residual stream
    expected.add("layers.0.blocks.1.conv3.c")
    assert pruned == expected
    with torch.no_grad():
        fast = encoder(x)
        with fast_paths.configured(encoder, on=False):
            torch.testing.assert_close(fast, encoder(x), atol=1e-4, rtol=1e-4)
