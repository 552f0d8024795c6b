"""The bundled release model: present, intact, and described by its card."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from models import BUNDLED_CHECKPOINT
from models.checkpoint import INTENDED_USE, load_checkpoint


@pytest.fixture(scope="module")
def card() -> dict:
    if not BUNDLED_CHECKPOINT.is_file():
        pytest.skip(f"no bundled model at {BUNDLED_CHECKPOINT}")
    return json.loads(BUNDLED_CHECKPOINT.with_suffix(".json").read_text())


def test_bundled_model_loads_and_matches_its_card(card: dict) -> None:
    model, loaded = load_checkpoint(BUNDLED_CHECKPOINT)  # verifies the weights' SHA-256
    assert loaded == card
    assert card["model"]["backbone"] == "resnet50" and card["preprocessing"]["image_size"] == 256
    assert sum(p.numel() for p in model.parameters()) == 32_109_681
    stored = {t.dtype for t in load_file(str(BUNDLED_CHECKPOINT)).values()}
    assert stored <= {torch.float16, torch.int64}
    assert card["intended_use"] == INTENDED_USE
    assert card["config"]["optimizer"]["name"] == "znorm-adam"
    split = card["split"]
    assert not set(split["test"]) & (set(split["train"]) | set(split["val"]))
    assert 0.0 < card["metrics"]["test_mean_patient_dice"] <= 1.0
    assert {"version", "data_source", "citation", "versions", "hardware", "wall_time_s"} <= set(
        card
    )
