"""Fixtures for the viewer tests: a tiny random checkpoint (resnet18, 64 px), a live API."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import uvicorn

from data.preprocessing import PreprocessingConfig
from inference.api.app import create_app
from inference.api.settings import ServeSettings
from models.checkpoint import INTENDED_USE, save_checkpoint
from models.network import ModelConfig, build_model

TRAINING_PATIENT = "TCGA_CS_4941_19960909"
"""The tiny model's card lists this (real) patient as a training patient."""


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
            "split": {"seed": 0, "train": [TRAINING_PATIENT], "val": [], "test": []},
            "data_source": "random weights for tests",
            "intended_use": INTENDED_USE,
        },
    )
    return path


@pytest.fixture(scope="session")
def live_api(tiny_checkpoint: Path) -> Iterator[str]:
    """The real API (``inference.api``) on a free loopback port, served by uvicorn in a thread."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    app = create_app(ServeSettings(checkpoint=tiny_checkpoint, warmup=False))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("the API did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
