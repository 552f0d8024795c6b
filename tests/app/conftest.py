"""Fixtures for the viewer tests: a tiny random checkpoint (resnet18, 64 px) in a temp folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from data.preprocessing import PreprocessingConfig
from models.checkpoint import INTENDED_USE, save_checkpoint
from models.network import ModelConfig, build_model


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random weights: predictions are meaningless, but every code path is the real one."""
    torch.manual_seed(0)
    model_cfg = ModelConfig(backbone="resnet18")
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(
        path,
        build_model(model_cfg),
        {
            "name": "tiny-test-model",
            "model": model_cfg.model_dump(mode="json"),
            "preprocessing": PreprocessingConfig(image_size=64).to_card(),
            "metrics": {"test_mean_patient_dice": 0.5},
            "data_source": "random weights for tests",
            "intended_use": INTENDED_USE,
        },
    )
    return path
