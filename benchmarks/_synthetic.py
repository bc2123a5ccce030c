"""The benchmarks' weights when no checkpoint is given: the parity fixture's recipe
(deterministic, any layout; speed does not depend on the values)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch


def synthetic_weights(model: torch.nn.Module, shared: Path) -> None:
    spec = importlib.util.spec_from_file_location(
        "recipe", Path(shared) / "fixtures" / "parity" / "recipe.py"
    )
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    model.load_state_dict(recipe.synthetic_state_dict(model.state_dict(), 0))
