"""Fixtures for the inference tests: small random-weights checkpoints (fixed seed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.inference.samples import make_checkpoint


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """resnet18, 64 x 64 input, seed 0, random weights (probabilities all near 0.5)."""
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


@pytest.fixture(scope="session")
def spread_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Like ``tiny_checkpoint`` but with logits spread (x2e4), so masks are partly empty."""
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "spread.safetensors", logit_scale=2e4)
