"""Fixtures for the inference tests; ``tiny_checkpoint`` comes from tests/conftest.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.inference.samples import make_checkpoint


@pytest.fixture(scope="session")
def spread_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Like ``tiny_checkpoint`` (tests/conftest.py) but with logits spread (x2e4), so masks
    are partly empty."""
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "spread.safetensors", logit_scale=2e4)
