"""Hugging Face transformers' SAM files (`SamModel.save_pretrained`: facebook/sam-vit-*,
and SAMs fine-tuned with transformers) renamed to the official segment-anything layout.

transformers renames every layer and splits the 3-layer MLP heads into proj_in /
layers.k / proj_out; the tensors themselves are the official ones, unchanged.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from .errors import CheckpointError

# (transformers name, official name) patterns, tried in order; the first that matches renames.
_RENAMES = [
    (r"vision_encoder\.patch_embed\.projection\.", "image_encoder.patch_embed.proj."),
    (r"vision_encoder\.pos_embed$", "image_encoder.pos_embed"),
    (r"vision_encoder\.layers\.(\d+)\.layer_norm([12])\.", r"image_encoder.blocks.\1.norm\2."),
    (r"vision_encoder\.layers\.", "image_encoder.blocks."),
    (r"vision_encoder\.neck\.conv1\.", "image_encoder.neck.0."),
    (r"vision_encoder\.neck\.layer_norm1\.", "image_encoder.neck.1."),
    (r"vision_encoder\.neck\.conv2\.", "image_encoder.neck.2."),
    (r"vision_encoder\.neck\.layer_norm2\.", "image_encoder.neck.3."),
    (r"prompt_encoder\.point_embed\.", "prompt_encoder.point_embeddings."),
    (r"prompt_encoder\.mask_embed\.conv1\.", "prompt_encoder.mask_downscaling.0."),
    (r"prompt_encoder\.mask_embed\.layer_norm1\.", "prompt_encoder.mask_downscaling.1."),
    (r"prompt_encoder\.mask_embed\.conv2\.", "prompt_encoder.mask_downscaling.3."),
    (r"prompt_encoder\.mask_embed\.layer_norm2\.", "prompt_encoder.mask_downscaling.4."),
    (r"prompt_encoder\.mask_embed\.conv3\.", "prompt_encoder.mask_downscaling.6."),
    (r"(mask_decoder\.transformer\.layers\.\d+)\.layer_norm(\d)\.", r"\1.norm\2."),
    (r"mask_decoder\.transformer\.layer_norm_final_attn\.", "mask_decoder.transformer.norm_final_attn."),
    (r"mask_decoder\.upscale_conv1\.", "mask_decoder.output_upscaling.0."),
    (r"mask_decoder\.upscale_layer_norm\.", "mask_decoder.output_upscaling.1."),
    (r"mask_decoder\.upscale_conv2\.", "mask_decoder.output_upscaling.3."),
]
# One tensor under two names in transformers (the image and the prompt positional encodings
# share it); a safetensors file keeps only one of them.
_PE_NAMES = (
    "shared_image_embedding.positional_embedding",
    "prompt_encoder.shared_embedding.positional_embedding",
)
_MLP = re.compile(
    r"(mask_decoder\.(?:iou_prediction_head|output_hypernetworks_mlps\.\d+))\.(proj_in|layers\.\d+|proj_out)\."
)


def is_transformers_sam(keys) -> bool:
    """Whether state-dict keys are transformers' SAM names (vision_encoder.*, ...)."""
    return any(k.startswith("vision_encoder.") for k in keys) and any(
        k.startswith("mask_decoder.") for k in keys
    )


def to_official(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same tensors under segment-anything's names. Keys no rule knows (another model's
    parts) are kept as they are, so strict loading reports them."""
    out: dict[str, torch.Tensor] = {}
    pe = [state[name] for name in _PE_NAMES if name in state]
    if len(pe) == 2 and not torch.equal(*pe):
        raise CheckpointError(f"{_PE_NAMES[0]} and {_PE_NAMES[1]} differ; transformers ties them")
    if pe:
        out["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"] = pe[0]
    depth: dict[str, int] = {}
    for key in state:
        if m := _MLP.match(key):
            depth[m.group(1)] = depth.get(m.group(1), 0) + key.endswith(".weight")
    for key, tensor in state.items():
        if key in _PE_NAMES:
            continue
        if m := _MLP.match(key):
            part = m.group(2)
            index = (
                0 if part == "proj_in" else depth[m.group(1)] - 1 if part == "proj_out" else int(part[7:]) + 1
            )
            key = f"{m.group(1)}.layers.{index}.{key[m.end() :]}"
        else:
            for pattern, repl in _RENAMES:
                new, n = re.subn("^" + pattern, repl, key)
                if n:
                    key = new
                    break
        out[key] = tensor
    return out


def weights_files(folder: Path) -> list[Path]:
    """The weight file(s) of a `save_pretrained` folder: model.safetensors, its shards
    (model.safetensors.index.json), or pytorch_model.bin."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{index} is not a valid shard index ({exc})") from exc
        return [folder / name for name in shards]
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return [folder / name]
    raise CheckpointError(
        f"{folder} is a folder without model.safetensors, its shard index or pytorch_model.bin"
    )
