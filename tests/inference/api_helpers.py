"""Helpers for the API tests: settings, a slow predictor, an in-process async client."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch
from fastapi import FastAPI

from inference.api.settings import ServeSettings
from inference.predictor import Predictor, SlicePrediction, StageTimes


def settings(checkpoint: Path, **overrides: Any) -> ServeSettings:
    """Test settings: no warm-up (fast start) and the test session's torch thread count (the
    service sets it process-wide); everything else as in production unless given."""
    overrides.setdefault("torch_threads", torch.get_num_threads())
    return ServeSettings(checkpoint=checkpoint, warmup=False, **overrides)


class SlowPredictor:
    """A real predictor whose batches take at least ``delay_s``; records the batch sizes."""

    def __init__(self, inner: Predictor, delay_s: float) -> None:
        self.inner = inner
        self.delay_s = delay_s
        self.card = inner.card
        self.model_version = inner.model_version
        self.threshold = inner.threshold
        self.batches: list[int] = []

    def predict_batch(
        self, images: Sequence[np.ndarray], timings: StageTimes | None = None
    ) -> list[SlicePrediction]:
        self.batches.append(len(images))
        start = time.perf_counter()
        out = self.inner.predict_batch(images, timings)
        time.sleep(max(0.0, self.delay_s - (time.perf_counter() - start)))
        return out


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Run ``app``'s lifespan and give an httpx client that calls it in this event loop."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


def metric_value(text: str, name: str, **labels: str) -> float:
    """Read one sample from Prometheus text output (0.0 when absent)."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, label_text = head.partition("{")
        if metric != name:
            continue
        found = dict(
            part.split("=", 1) for part in label_text.rstrip("}").split(",") if "=" in part
        )
        if all(found.get(k) == f'"{v}"' for k, v in labels.items()):
            return float(value)
    return 0.0
