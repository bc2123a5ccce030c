"""Hugging Face transformers SAM weights load as the official layout and answer as
transformers' own SamModel does."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from mobilesam import build_sam
from mobilesam.checkpoint import source_sha256
from mobilesam.errors import CheckpointError

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def hf_model():
    """transformers' SamModel at vit_b's widths and 256 px, with O(1) random weights (so a
    wrong rename shows). Its decoder's LayerNorm eps set to the official 1e-5: transformers
    defaults to 1e-6 there, which alone moves logits by about 1e-4 of their range."""
    cfg = transformers.SamConfig(
        vision_config=transformers.SamVisionConfig(image_size=256),
        prompt_encoder_config=transformers.SamPromptEncoderConfig(image_size=256, image_embedding_size=16),
        mask_decoder_config=transformers.SamMaskDecoderConfig(layer_norm_eps=1e-5),
    )
    model = transformers.SamModel(cfg).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) * p[0].numel() ** -0.5)
            else:  # biases around 0, norm scales around 1
                scale = "norm" in name and name.endswith("weight")
                p.copy_(torch.randn(p.shape, generator=g) * 0.1 + (1.0 if scale else 0.0))
        model.shared_image_embedding.positional_embedding.copy_(
            torch.randn(model.shared_image_embedding.positional_embedding.shape, generator=g)
        )
    return model


@pytest.fixture(scope="module")
def saved(hf_model, tmp_path_factory):
    """save_pretrained folders: one safetensors file (the tied positional encoding stored
    once), and 100 MB shards with their index; plus a torch.save of the state dict."""
    root = tmp_path_factory.mktemp("hf")
    hf_model.save_pretrained(root / "folder")
    hf_model.save_pretrained(root / "sharded", max_shard_size="100MB")
    torch.save(hf_model.state_dict(), root / "state.bin")
    return root


def _answers(embedding, decode):
    """Low-res logits and IoU scores for a point pair, a box, and points with a mask prompt."""
    points = torch.tensor([[[[60.0, 80.0], [120.0, 30.0]]]]), torch.tensor([[[1, 0]]])
    box = torch.tensor([[[20.0, 30.0, 200.0, 180.0]]])
    mask = torch.linspace(-3, 3, 64 * 64).reshape(1, 1, 64, 64)
    return [
        decode(embedding, points, None, None),
        decode(embedding, None, box, None),
        decode(embedding, points, None, mask),
    ]


def test_transformers_weights_answer_as_transformers(hf_model, saved):
    x = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(1))

    def hf_decode(emb, points, box, mask):
        kwargs = {"input_points": points[0], "input_labels": points[1]} if points else {}
        out = hf_model(
            image_embeddings=emb, input_boxes=box, input_masks=mask, multimask_output=True, **kwargs
        )
        return out.pred_masks[0], out.iou_scores[0]

    with torch.no_grad():
        ref_emb = hf_model.get_image_embeddings(x)
        ref = _answers(ref_emb, hf_decode)
        for source in ("folder", "folder/model.safetensors", "sharded", "state.bin"):
            sam = build_sam("vit_b", saved / source, img_size=256)

            def ours(emb, points, box, mask, sam=sam):
                sparse, dense = sam.prompt_encoder(
                    points=(points[0][0], points[1][0]) if points else None,
                    boxes=None if box is None else box[0],
                    masks=mask,
                )
                return sam.mask_decoder(emb, sam.prompt_encoder.get_dense_pe(), sparse, dense, True)

            emb = sam.image_encoder(x)
            assert (emb - ref_emb).abs().max() <= 1e-5 * ref_emb.abs().max(), source
            for (logits, iou), (ref_logits, ref_iou) in zip(_answers(ref_emb, ours), ref):
                assert (logits - ref_logits).abs().max() <= 1e-5 * ref_logits.abs().max(), source
                assert (iou - ref_iou).abs().max() <= 1e-5, source


def test_source_digest_of_a_folder(saved):
    """Exports record their source's SHA-256: of a folder, its weight files' bytes in order."""
    shards = sorted((saved / "sharded").glob("model-*.safetensors"))
    assert len(shards) > 1
    whole = hashlib.sha256(b"".join(p.read_bytes() for p in shards)).hexdigest()
    assert source_sha256(saved / "sharded") == whole
    assert source_sha256(saved / "folder") == source_sha256(saved / "folder" / "model.safetensors")


def test_transformers_weights_for_another_model_or_incomplete(saved, tmp_path):
    with pytest.raises(CheckpointError, match=r"looks like SAM ViT \(vit_b\)"):
        build_sam("vit_t", saved / "folder")
    from mobilesam.build import model_type_of

    # Converted (the .bin mapped, not read) to a 256-px ViT-B, which no 1024-px model fits
    assert model_type_of(saved / "state.bin") is None
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"without model\.safetensors"):
        build_sam("vit_b", tmp_path / "empty", img_size=256)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}}))
    with pytest.raises(CheckpointError, match="not a valid shard index"):
        build_sam("vit_b", tmp_path / "bad", img_size=256)
    state = torch.load(saved / "state.bin", weights_only=True)
    state["shared_image_embedding.positional_embedding"] = (
        state["shared_image_embedding.positional_embedding"] + 1
    )
    torch.save(state, tmp_path / "untied.bin")
    with pytest.raises(CheckpointError, match="differ; transformers ties them"):
        build_sam("vit_b", tmp_path / "untied.bin", img_size=256)
