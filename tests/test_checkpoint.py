"""Official layouts key for key, strict and safe loading, clear errors for wrong files."""

from __future__ import annotations

import pickle

import pytest
import torch
from conftest import synthetic_state_dict

from mobilesam import CheckpointError, MobileSAM, build_sam, sam_model_registry
from mobilesam.build import model_type_of
from mobilesam.checkpoint import read_state_dict
from mobilesam.weights import get_weights


@pytest.mark.parametrize("model_type,n_tensors", [("vit_t", 439), ("vit_b", 314)])
def test_layout_equals_official(layouts, model_type, n_tensors):
    with torch.device("meta"):
        state = build_sam(model_type).state_dict()
    official = layouts[model_type]
    assert len(state) == len(official) == n_tensors
    assert list(state) == list(official)  # same keys, same order
    assert {k: list(v.shape) for k, v in state.items()} == official


@pytest.mark.parametrize(
    "model_type,blocks,dim,params", [("vit_l", 24, 1024, None), ("vit_h", 32, 1280, 641_090_864)]
)
def test_large_teachers_shapes(model_type, blocks, dim, params):
    with torch.device("meta"):
        state = build_sam(model_type).state_dict()
    assert f"image_encoder.blocks.{blocks - 1}.attn.qkv.weight" in state
    assert f"image_encoder.blocks.{blocks}.norm1.weight" not in state
    assert state["image_encoder.pos_embed"].shape == (1, 64, 64, dim)
    if params:  # SAM's published 641,090,608 parameters + the 256-value PE buffer
        assert sum(t.numel() for t in state.values()) == params


def test_registry_names():
    students = {"tiny_vit_3m", "tiny_vit_11m", "tiny_vit_21m"}
    assert set(sam_model_registry) == {"default", "vit_t", "vit_b", "vit_l", "vit_h"} | students
    assert sam_model_registry["default"] is sam_model_registry["vit_h"]  # as segment-anything


@pytest.mark.parametrize(
    "model_type, millions",
    [("tiny_vit_3m", 2.7), ("vit_t", 5.7), ("tiny_vit_11m", 11.3), ("tiny_vit_21m", 21.4)],
)
def test_tinyvit_student_sizes(model_type, millions):
    """Distillation students: encoder parameters without TinyViT's unused classifier head,
    and the same 256 x S/16 x S/16 embedding for SAM's decoder."""
    sam = sam_model_registry[model_type](img_size=128)
    params = sum(p.numel() for n, p in sam.image_encoder.named_parameters() if "head" not in n)
    assert round(params / 1e6, 1) == millions
    with torch.no_grad():
        assert sam.image_encoder(torch.zeros(1, 3, 128, 128)).shape == (1, 256, 8, 8)
    with pytest.raises(ValueError, match=r"no published weights.*pass a checkpoint"):
        get_weights(model_type if model_type != "vit_t" else "tiny_vit_3m")


def test_strict_load_of_plain_state_dict(ckpt_vit_t):
    sam = sam_model_registry["vit_t"](checkpoint=ckpt_vit_t)
    ref = torch.load(ckpt_vit_t, weights_only=True)
    got = sam.state_dict()
    assert all(torch.equal(got[k], ref[k]) for k in ref)


@pytest.mark.parametrize("wrap", ["model", "state_dict", "module.", "model.", "sam.", "lightning"])
def test_wrappers_are_unwrapped(tmp_path, wrap):
    """Containers and key prefixes of training code: DDP's `module.`, a fine-tuning
    module's attribute (`model.`, `sam.`), a Lightning checkpoint (`state_dict` of
    `model.module.` keys beside optimizer states)."""
    state = synthetic_state_dict("vit_t", seed=1)
    if wrap.endswith("."):
        obj = {wrap + k: v for k, v in state.items()}
    elif wrap == "lightning":
        obj = {"state_dict": {"model.module." + k: v for k, v in state.items()}, "optimizer_states": []}
    else:
        obj = {wrap: state, "epoch": 3}
    path = tmp_path / "wrapped.pth"
    torch.save(obj, path)
    assert set(read_state_dict(path)) == set(state)
    build_sam("vit_t", path)


def test_a_prefix_not_on_every_key_is_kept_and_named(tmp_path):
    """SAM beside another module's weights (a teacher, a loss): nothing is stripped
    (loading stays strict), and the error names the prefix SAM sits under."""
    state = synthetic_state_dict("vit_t", seed=1)
    path = tmp_path / "mixed.pth"
    torch.save({**{"sam." + k: v for k, v in state.items()}, "teacher.proj.weight": torch.zeros(2)}, path)
    assert "teacher.proj.weight" in read_state_dict(path)
    with pytest.raises(CheckpointError, match=r"SAM under 'sam\.' beside other weights"):
        build_sam("vit_t", path)


def test_safetensors(tmp_path):
    safetensors = pytest.importorskip("safetensors.torch")
    state = synthetic_state_dict("vit_t", seed=2)
    state = {k: v.contiguous() for k, v in state.items()}
    path = tmp_path / "m.safetensors"
    safetensors.save_file(state, str(path))
    sam = build_sam("vit_t", path)
    assert torch.equal(
        sam.state_dict()["mask_decoder.iou_token.weight"], state["mask_decoder.iou_token.weight"]
    )


def test_wrong_model_names_the_model_and_keys(tmp_path):
    path = tmp_path / "vit_b.pth"
    with torch.device("meta"):
        layout = build_sam("vit_b").state_dict()
    torch.save({k: torch.zeros(v.shape, dtype=v.dtype) for k, v in layout.items()}, path)
    with pytest.raises(CheckpointError) as err:
        build_sam("vit_t", path)
    msg = str(err.value)
    assert model_type_of(path) == "vit_b"  # what MobileSAM(path) without model_type builds
    assert "looks like SAM ViT (vit_b)" in msg
    assert "missing keys (" in msg and "image_encoder.layers.0" in msg
    assert "unexpected keys (" in msg and "image_encoder.blocks.0" in msg


def test_a_vit_made_for_another_input_size_says_which(tmp_path):
    """A SAM ViT's position embedding fixes its input size: loaded at another, the error
    names the size to pass; at that size it loads (a TinyViT's layout has no size)."""
    path = tmp_path / "vit_b_128.pth"
    with torch.device("meta"):
        layout = build_sam("vit_b", img_size=128).state_dict()
    torch.save({k: torch.zeros(v.shape, dtype=v.dtype) for k, v in layout.items()}, path)
    with pytest.raises(CheckpointError, match=r"made for 128-px input: pass img_size=128 \(--img-size 128\)"):
        build_sam("vit_b", path)
    with pytest.raises(
        CheckpointError, match=r"'vit_t'; it looks like SAM ViT \(vit_b\)\.\nIt was made for 128-px"
    ):
        MobileSAM(path, device="cpu")  # no model type: none fits at 1024, so vit_t was tried
    assert model_type_of(path, img_size=128) == "vit_b"
    with pytest.raises(CheckpointError) as err:  # the size fits, the model does not: no size hint
        build_sam("vit_l", path, img_size=128)
    assert "looks like SAM ViT (vit_b)" in str(err.value) and "made for" not in str(err.value)
    sam = MobileSAM(path, device="cpu", img_size=128)  # the model type read from the file
    assert (sam.model_type, sam.model.img_size) == ("vit_b", 128)
    with torch.device("meta"):
        small, usual = (build_sam("vit_t", img_size=size).state_dict() for size in (256, 1024))
        assert {k: v.shape for k, v in small.items()} == {k: v.shape for k, v in usual.items()}


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        # HQ-SAM's light model keeps MobileSAM's TinyViT and adds decoder parts
        (
            {"mask_decoder.hf_token.weight": (1, 256), "mask_decoder.hf_mlp.layers.0.weight": (256, 256)},
            "HQ-SAM",
        ),
        (
            {
                "vision_encoder.patch_embed.projection.weight": (768, 3, 16, 16),
                "shared_image_embedding.positional_embedding": (2, 128),
            },
            "a Hugging Face transformers",
        ),
    ],
)
def test_other_sam_families_are_named(tmp_path, extra, named):
    """Files users mistake for MobileSAM's: the error says what they are."""
    state = synthetic_state_dict("vit_t") if named == "HQ-SAM" else {}  # the rest renamed
    state.update({k: torch.zeros(shape) for k, shape in extra.items()})
    torch.save(state, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match=f"looks like {named}"):
        build_sam("vit_t", tmp_path / "other.pth")


def test_wrong_shape_reported(tmp_path):
    state = synthetic_state_dict("vit_t")
    state["mask_decoder.iou_token.weight"] = torch.zeros(1, 128)
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"wrong shapes \(1\): mask_decoder.iou_token.weight"):
        build_sam("vit_t", path)


def test_non_checkpoint_file(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("this is not a checkpoint")
    with pytest.raises(CheckpointError, match="not a"):
        build_sam("vit_t", path)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        build_sam("vit_t", tmp_path / "nope.pt")


class Evil:
    def __reduce__(self):
        return (print, ("side effect",))


def test_arbitrary_pickle_refused(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"model": Evil()}, f)
    with pytest.raises(CheckpointError, match="weights_only"):
        build_sam("vit_t", path)


def test_non_tensor_dict_refused(tmp_path):
    path = tmp_path / "config.pt"
    torch.save({"lr": 0.1, "epochs": 3}, path)
    with pytest.raises(CheckpointError, match="does not hold a state dict"):
        build_sam("vit_t", path)


def test_unknown_model_type():
    with pytest.raises(ValueError, match="unknown model_type 'vit_x'"):
        build_sam("vit_x")


def test_model_type_read_from_the_checkpoint(tmp_path, ckpt_vit_t):
    """No model_type: the registry model whose layout the checkpoint has exactly (the file
    mapped, not read; a legacy-format file read whole); none fits: vit_t, whose strict
    load then says what does not fit, as before."""
    assert model_type_of(ckpt_vit_t) == "vit_t"
    state = synthetic_state_dict("tiny_vit_3m", seed=3)
    student, legacy = tmp_path / "student.pt", tmp_path / "legacy.pt"
    torch.save(state, student)
    torch.save(state, legacy, _use_new_zipfile_serialization=False)
    assert model_type_of(student) == model_type_of(legacy) == "tiny_vit_3m"
    sam = MobileSAM(student, device="cpu")
    assert sam.model_type == "tiny_vit_3m" and len(sam.model.image_encoder.layers[1].blocks) == 2
    assert torch.equal(
        sam.model.state_dict()["mask_decoder.iou_token.weight"], state["mask_decoder.iou_token.weight"]
    )
    torch.save({k: v for k, v in state.items() if not k.startswith("mask_decoder.")}, student)
    assert model_type_of(student) is None
    with pytest.raises(CheckpointError, match="does not fit model 'vit_t'"):
        MobileSAM(student, device="cpu")
