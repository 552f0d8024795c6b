"""Fixtures for the viewer tests: a live API serving tests/conftest.py's tiny_checkpoint."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from app.servers import free_port
from inference.api.app import create_app
from inference.api.settings import ServeSettings


@pytest.fixture(scope="session")
def live_api(tiny_checkpoint: Path) -> Iterator[str]:
    """The real API (``inference.api``) on a free loopback port, served by uvicorn in a thread."""
    port = free_port()
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
