"""Fixtures for the inference tests: small random-weights checkpoints (fixed seed) and images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from data.preprocessing import PreprocessingConfig
from models.checkpoint import save_checkpoint
from models.network import ModelConfig, build_model


def make_checkpoint(
    path: Path,
    backbone: str = "resnet18",
    image_size: int = 64,
    seed: int = 0,
    logit_scale: float | None = None,
) -> Path:
    """Write a random-weights checkpoint (weights + card) and return the weights path.

    ``logit_scale`` multiplies the last layer so logits spread like a trained model's
    (random weights alone give logits near 0, i.e. every probability near 0.5).
    """
    torch.manual_seed(seed)
    model_cfg = ModelConfig(backbone=backbone)  # type: ignore[arg-type]
    model = build_model(model_cfg)
    if logit_scale is not None:
        head = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1]
        with torch.no_grad():
            head.weight.mul_(logit_scale)
    card = {
        "name": f"test-{backbone}",
        "version": "0.0.1",
        "model": model_cfg.model_dump(mode="json"),
        "preprocessing": PreprocessingConfig(image_size=image_size).to_card(),
    }
    save_checkpoint(path, model, card)
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """resnet18, 64 x 64 input, seed 0."""
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def brain_like(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A synthetic uint8 H x W x 3 slice: a bright ellipse (brain) on a zero background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    inside = ((yy - height / 2) / (height / 2.5)) ** 2 + ((xx - width / 2) / (width / 2.5)) ** 2
    image = rng.integers(30, 220, size=(height, width, 3), dtype=np.uint8)
    image[inside > 1] = 0
    return image
