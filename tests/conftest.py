"""Shared fixtures: the parity fixture beside the checkout, synthetic checkpoints, images."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mobilesam import SamPredictor, build_sam

SHARED = Path(os.environ.get("MOBILESAM_SHARED", Path(__file__).resolve().parents[2] / "shared"))
PARITY = SHARED / "fixtures" / "parity"
IMAGES = SHARED / "images"


def _recipe():
    spec = importlib.util.spec_from_file_location("parity_recipe", PARITY / "recipe.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def synthetic_state_dict(model_type: str, seed: int = 0, img_size: int = 1024) -> dict[str, torch.Tensor]:
    """The parity fixture's deterministic weights for any model in the official layout."""
    with torch.device("meta"):
        layout = build_sam(model_type, img_size=img_size).state_dict()
    return _recipe().synthetic_state_dict(layout, seed)


@pytest.fixture(scope="session")
def layouts() -> dict:
    return json.loads((PARITY / "layouts.json").read_text())


@pytest.fixture(scope="session")
def parity_cases() -> list[dict]:
    return json.loads((PARITY / "cases.json").read_text())["cases"]


@pytest.fixture(scope="session")
def expected() -> dict[str, np.ndarray]:
    with np.load(PARITY / "expected.npz") as data:
        return dict(data)


@pytest.fixture(scope="session")
def ckpt_vit_t(tmp_path_factory) -> Path:
    """A synthetic vit_t checkpoint saved exactly as the official file is (plain state dict)."""
    path = tmp_path_factory.mktemp("ckpt") / "mobile_sam.pt"
    torch.save(synthetic_state_dict("vit_t"), path)
    return path


@pytest.fixture(scope="session")
def sam_vit_t(ckpt_vit_t):
    return build_sam("vit_t", ckpt_vit_t)


@pytest.fixture(scope="session")
def truck() -> np.ndarray:
    return np.asarray(Image.open(IMAGES / "truck.jpg").convert("RGB"))


@pytest.fixture(scope="session")
def truck_predictor(sam_vit_t, truck) -> SamPredictor:
    predictor = SamPredictor(sam_vit_t)
    predictor.set_image(truck)
    return predictor
