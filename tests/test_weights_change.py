"""Weights changed under a live predictor are the weights it uses.

segment-anything computes everything from the weights at each call, so code written for
it changes them freely between calls: an optimizer step between validation passes of a
decoder fine-tune, `load_state_dict` of another checkpoint, a layer replaced by an
adapter. Our predictor keeps the decoder's per-image context and the grid's positional
encoding, and the CUDA-graph engine keeps graphs of the weights' memory: each must be
computed again once the weights change (`mobilesam.weights_state`).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import SMALL, synthetic_state_dict
from torch import nn

from mobilesam import SamPredictor, build_sam
from mobilesam.engine import Engine
from mobilesam.weights_state import WeightsState

BOX = np.array([300, 250, 1300, 900])
POINTS = np.array([[700, 500], [1000, 450]]), np.array([1, 0])


@pytest.fixture
def sam(ckpt_vit_t):
    """A model of its own: the tests change its weights."""
    return build_sam("vit_t", ckpt_vit_t, img_size=SMALL)


def _answers(predictor: SamPredictor) -> list[np.ndarray]:
    masks, scores, logits = predictor.predict(box=BOX)
    _, point_scores, point_logits = predictor.predict(*POINTS)
    return [masks, scores, logits, point_scores, point_logits]


def _fresh_answers(model, live: SamPredictor) -> list[np.ndarray]:
    """A new predictor's answers on `model`, for the embedding `live` holds."""
    predictor = SamPredictor(model)
    predictor.features, predictor.original_size, predictor.input_size = (
        live.features,
        live.original_size,
        live.input_size,
    )
    predictor.is_image_set = True
    return _answers(predictor)


def _assert_same(a: list[np.ndarray], b: list[np.ndarray]) -> None:
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=0, atol=1e-4)


def _assert_differ(a: list[np.ndarray], b: list[np.ndarray]) -> None:
    assert not np.allclose(a[2], b[2], rtol=0, atol=1e-2)  # the change moved the logits


def test_validation_between_decoder_training_steps(sam, truck):
    """A decoder fine-tune's validation: the embedding computed once and assigned back to
    `predictor.features` (the encoder is frozen), AdamW steps on the decoder in between."""
    predictor = SamPredictor(sam)
    predictor.set_image(truck)
    cached = predictor.features
    before = _answers(predictor)
    optimizer = torch.optim.AdamW(sam.mask_decoder.parameters(), lr=1e-2)
    for _ in range(2):
        sparse, dense = sam.prompt_encoder(None, torch.tensor([[10.0, 10.0, 200.0, 150.0]]), None)
        logits, iou = sam.mask_decoder(cached, sam.prompt_encoder.get_dense_pe(), sparse, dense, False)
        (logits.mean() + iou.mean()).backward()
        optimizer.step()
        optimizer.zero_grad()
    sam.eval()
    predictor.features = cached
    after = _answers(predictor)
    _assert_differ(after, before)
    _assert_same(after, _fresh_answers(sam, predictor))


def _load_other_weights(sam, predictor):
    sam.load_state_dict(synthetic_state_dict("vit_t", seed=1, img_size=SMALL))


def _replace_a_parameter(sam, predictor):
    head = sam.mask_decoder.iou_prediction_head.layers[0]
    head.weight = nn.Parameter(head.weight.detach() * 1.5)
    token = sam.mask_decoder.transformer.layers[0].cross_attn_token_to_image.k_proj
    token.weight = nn.Parameter(token.weight.detach() * 1.5)


def _replace_a_layer(sam, predictor):
    attention = sam.mask_decoder.transformer.layers[0].cross_attn_token_to_image
    new = nn.Linear(attention.v_proj.in_features, attention.v_proj.out_features)
    new.load_state_dict({"weight": attention.v_proj.weight * -1.0, "bias": attention.v_proj.bias})
    attention.v_proj = new  # a projection of the image tokens: part of the cached context


def _swap_storage(sam, predictor):
    with torch.no_grad():
        for p in sam.mask_decoder.transformer.parameters():
            p.data = p.data * 1.05  # as Module.to() does: the same Parameter, other memory


def _replace_the_decoder(sam, predictor):
    decoder = build_sam("vit_t", img_size=SMALL).mask_decoder
    weights = synthetic_state_dict("vit_t", seed=1, img_size=SMALL)
    decoder.load_state_dict(
        {k[len("mask_decoder.") :]: v for k, v in weights.items() if k.startswith("mask_decoder.")}
    )
    sam.mask_decoder = decoder.eval()


def _another_model(sam, predictor):
    predictor.model = build_sam("vit_t", img_size=SMALL).eval()
    predictor.model.load_state_dict(synthetic_state_dict("vit_t", seed=1, img_size=SMALL))
    sam.load_state_dict(predictor.model.state_dict())  # the reference below builds on `sam`


@pytest.mark.parametrize(
    "change",
    [
        _load_other_weights,
        _replace_a_parameter,
        _replace_a_layer,
        _swap_storage,
        _replace_the_decoder,
        _another_model,
    ],
)
def test_predictor_uses_the_weights_of_the_call(sam, truck, change):
    predictor = SamPredictor(sam)
    predictor.set_image(truck)
    before = _answers(predictor)
    change(sam, predictor)
    after = _answers(predictor)  # the same embedding: only the prompt side changed
    _assert_differ(after, before)
    _assert_same(after, _fresh_answers(sam, predictor))


def test_bf16_decoder_copy_follows_the_weights(sam, truck):
    """decode_points(precision="bf16") keeps a bfloat16 copy of the decoder."""
    predictor = SamPredictor(sam)
    predictor.set_image(truck)
    coords = torch.tensor([[60.0, 60.0], [120.0, 100.0], [200.0, 120.0]])

    def decoded(p):
        logits, iou, _ = p.decode_points(coords, -1e9, precision="bf16")
        return logits.numpy(), iou.numpy()

    before = decoded(predictor)
    _replace_a_parameter(sam, predictor)
    after = decoded(predictor)
    fresh = SamPredictor(sam)
    fresh.set_image(truck)
    expected = decoded(fresh)
    assert not np.allclose(after[0], before[0], atol=1e-2)
    np.testing.assert_array_equal(after[0], expected[0])
    np.testing.assert_array_equal(after[1], expected[1])


def test_weights_state_notices_each_kind_of_change():
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)).eval()
    state = WeightsState(model)
    model(torch.randn(3, 4))  # an eval-mode call changes nothing
    assert not state.changed()
    with torch.no_grad():
        model[0].weight.add_(0)  # in place, even by zero: its version counter moves
    assert state.changed()
    state = WeightsState(model)
    model.train()(torch.randn(3, 4))  # training-mode batch norm updates its running stats
    assert state.changed()
    state = WeightsState(model)
    model.to(torch.float64)
    assert state.changed()
    state = WeightsState(model)
    model[1].running_mean = torch.zeros(4, dtype=torch.float64)  # a replaced buffer
    assert state.changed()
    state = WeightsState(model)
    nn.Linear(2, 2)  # a module built elsewhere changes nothing here
    assert not state.changed()
    model[0].bias = nn.Parameter(torch.zeros(4, dtype=torch.float64))  # a replaced parameter
    assert state.changed()
    state = WeightsState(model)
    model.append(nn.Identity())  # a module registered on one of the snapshot's
    assert state.changed()
    assert state.of(model) and not state.of(model[0]) and not state.of(model, model)
    memory_only = WeightsState(model, versions=False)  # what CUDA graphs care about
    with torch.no_grad():
        model[0].weight.mul_(2)
    assert not memory_only.changed()
    model.to(torch.float32)
    assert memory_only.changed()
    sparse = torch.sparse_coo_tensor(torch.tensor([[0], [1]]), torch.tensor([1.0]), (4, 4))
    model.register_buffer("sparse", sparse)  # no storage, so no pointer: its version counts
    state = WeightsState(model)
    assert not state.changed()
    model.sparse.mul_(2)
    assert state.changed()


def test_weights_state_of_a_model_built_in_inference_mode(sam, truck):
    """Parameters made under torch.inference_mode keep no version counter: still usable,
    and a replaced one is still noticed."""
    with torch.inference_mode():
        model = build_sam("vit_t", img_size=SMALL)
        model.load_state_dict(sam.state_dict())
    assert next(model.mask_decoder.parameters()).is_inference()
    predictor = SamPredictor(model)
    predictor.set_image(truck)
    before = _answers(predictor)
    state = WeightsState(model)
    assert not state.changed()
    _replace_a_parameter(model, predictor)
    assert state.changed()
    after = _answers(predictor)
    _assert_differ(after, before)
    _assert_same(after, _fresh_answers(model, predictor))


def test_engine_drops_its_graphs_when_the_weights_change(sam, truck):
    """On CUDA the graphs read the weights' memory as captured; the CPU run checks the
    bookkeeping: graphs kept across calls, dropped once a stage's weights change."""
    engine = Engine(sam)
    predictor = SamPredictor(sam, engine=engine)
    predictor.set_image(truck)
    before = _answers(predictor)
    graphs = engine.graphs
    predictor.set_image(truck)
    _answers(predictor)
    assert engine.graphs is graphs
    with torch.no_grad():
        sam.mask_decoder.iou_prediction_head.layers[0].weight.mul_(1.01)
    _answers(predictor)
    assert engine.graphs is graphs  # in place: a graph reads the weights as they are
    _replace_a_parameter(sam, predictor)
    after = _answers(predictor)
    assert engine.graphs is not graphs
    graphs = engine.graphs
    sam.image_encoder.neck[0].weight = nn.Parameter(sam.image_encoder.neck[0].weight.detach() * 2)
    predictor.set_image(truck)
    assert engine.graphs is not graphs
    _answers(predictor)
    graphs = engine.graphs
    _replace_the_decoder(sam, predictor)
    _answers(predictor)
    assert engine.graphs is not graphs
    _assert_differ(after, before)


def test_registration_hooks_leave_other_modules_alone():
    """The global registration hooks run for every module anyone builds: one that cannot
    be hashed (a dataclass module) still builds, and snapshots' bookkeeping dies with
    their modules."""
    import dataclasses
    import gc

    from mobilesam import weights_state

    model = nn.Sequential(nn.Linear(2, 2))
    state = WeightsState(model)

    @dataclasses.dataclass
    class Head(nn.Module):  # eq=True: unhashable
        width: int = 3

        def __post_init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(self.width, self.width)

    assert Head().proj.out_features == 3
    assert not state.changed()
    gc.collect()  # other tests' dead modules leave first
    tracked = len(weights_state._tracked)
    del model, state
    gc.collect()
    assert len(weights_state._tracked) == tracked - 2


def test_generator_uses_the_weights_of_the_call(sam, truck):
    """The generator keeps one predictor: a checkpoint loaded between two `generate` calls
    gives that checkpoint's masks."""
    from mobilesam import SamAutomaticMaskGenerator

    options = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
    generator = SamAutomaticMaskGenerator(sam, **options)
    before = generator.generate(truck)
    sam.load_state_dict(synthetic_state_dict("vit_t", seed=1, img_size=SMALL))
    after = generator.generate(truck)
    expected = SamAutomaticMaskGenerator(sam, **options).generate(truck)
    assert [m["predicted_iou"] for m in after] != [m["predicted_iou"] for m in before]
    assert [m["predicted_iou"] for m in after] == pytest.approx(
        [m["predicted_iou"] for m in expected], abs=1e-6
    )
    assert all(np.array_equal(a["segmentation"], b["segmentation"]) for a, b in zip(after, expected))
