"""The model behind the API: loaded once at start-up, or the reason it could not be.

``ModelService.start`` never raises for a bad checkpoint: the app starts anyway and ``/readyz``
answers 503 with the reason (missing, truncated, tampered with, wrong architecture), so a broken
deployment is visible and never serves random weights.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import torch
from starlette.concurrency import run_in_threadpool

from data.preprocessing import check_channels
from inference.api.admission import MIB, MemoryBudget
from inference.api.batching import MicroBatcher, Overloaded
from inference.api.settings import ServeSettings
from inference.api.telemetry import ServiceMetrics
from inference.predictor import Predictor, SlicePrediction, StageTimes
from models.card import ModelCard
from models.checkpoint import CheckpointError

log = logging.getLogger(__name__)

Work = Literal["slice", "volume"]
"""What a request asks of the model: one slice (micro-batched) or a volume (its own slot)."""


class SlicePredictor(Protocol):
    """What the service needs from a predictor (``inference.Predictor`` is one)."""

    card: ModelCard
    model_version: str
    threshold: float

    def predict_batch(
        self, images: Sequence[np.ndarray], timings: StageTimes | None = None
    ) -> list[SlicePrediction]: ...


@dataclass(frozen=True)
class Answer:
    """One slice's prediction, with the steps of the batch it ran in (shared by that batch)."""

    prediction: SlicePrediction
    times: StageTimes
    batch_size: int
    queued_s: float = 0.0
    """from joining the queue to the answer, less the batch's steps: waiting and hand-offs."""


class NotReady(RuntimeError):
    """No usable model: the reason is safe to show."""


class ModelService:
    """The predictor (or why there is none) and the micro-batcher in front of it."""

    def __init__(
        self,
        settings: ServeSettings,
        metrics: ServiceMetrics,
        predictor: SlicePredictor | None = None,
        error: str | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.predictor = predictor
        self.error = error if predictor is None else None
        self.batcher: MicroBatcher[np.ndarray, Answer] | None = None
        self._volumes = asyncio.Semaphore(settings.max_concurrent_volumes)
        self.memory = MemoryBudget(settings.decode_budget_mb * MIB, settings.admission_wait_s)
        if predictor is not None:
            self.batcher = MicroBatcher(
                self._predict_batch,
                max_batch=settings.max_batch,
                max_wait_s=settings.batch_wait_ms / 1000,
                queue_limit=settings.queue_limit,
                workers=settings.model_workers,
                latency_budget_s=settings.latency_budget_s,
                on_batch=metrics.batch_size.observe,
            )
            self.batcher.start()
        metrics.model_ready.set(1 if predictor is not None else 0)

    @classmethod
    async def start(cls, settings: ServeSettings, metrics: ServiceMetrics) -> ModelService:
        """Load the checkpoint named in the settings (in a thread) and warm the model up."""
        try:
            predictor = await run_in_threadpool(_load, settings)
        except CheckpointError as exc:
            log.error("model not loaded: %s", exc)  # the operator's log keeps the full path
            reason = _file_names_only(str(exc), settings.checkpoint)
            return cls(settings, metrics, error=f"model not loaded: {reason}")
        except (ValueError, RuntimeError, OSError) as exc:
            log.error("model not loaded: %s: %s", type(exc).__name__, exc)
            reason = _file_names_only(f"{type(exc).__name__}: {exc}", settings.checkpoint)
            return cls(settings, metrics, error=f"model not loaded: {reason}")
        log.info(
            "model %s ready (%s %s, %s)",
            predictor.model_version,
            predictor.engine.name,
            predictor.precision,
            predictor.device,
        )
        return cls(settings, metrics, predictor=predictor)

    async def stop(self) -> None:
        if self.batcher is not None:
            await self.batcher.stop(drain_timeout=self.settings.request_timeout_s)

    @property
    def ready(self) -> bool:
        return self.predictor is not None

    def require_predictor(self) -> SlicePredictor:
        if self.predictor is None:
            raise NotReady(self.error or "model not loaded")
        return self.predictor

    def _predict_batch(self, images: list[np.ndarray]) -> list[Answer]:
        times = StageTimes()
        predictions = self.require_predictor().predict_batch(images, timings=times)
        return [Answer(prediction, times, len(images)) for prediction in predictions]

    def _batcher(self) -> MicroBatcher[np.ndarray, Answer]:
        self.require_predictor()
        if self.batcher is None:  # pragma: no cover - set whenever a predictor is
            raise NotReady("the batcher is not running")
        return self.batcher

    @asynccontextmanager
    async def reserve(self, nbytes: int, what: str) -> AsyncIterator[None]:
        """Hold ``nbytes`` of the memory budget (Overloaded when not free in time)."""
        try:
            async with self.memory.reserve(nbytes, what):
                self.metrics.memory_reserved.set(self.memory.used)
                yield
        finally:
            self.metrics.memory_reserved.set(self.memory.used)

    def check_capacity(self, work: Work) -> None:
        """Overloaded now when ``work`` (one slice, or a volume) would be refused later anyway:
        checked before the upload is read (``deps.FormFiles``), so an overload's excess costs
        neither multipart parsing nor decoding. Only a hint: ``segment`` and
        ``segment_volume`` check again when the work is submitted."""
        batcher = self._batcher()
        if work == "volume":  # submitted with bypass_limit: only the volume slot bounds it
            reason = batcher.refusal(0, bypass_limit=True) or (
                "another volume is being segmented" if self._volumes.locked() else None
            )
        else:
            reason = batcher.refusal(1)
        if reason is not None:
            raise Overloaded(reason)

    async def segment(self, image: np.ndarray) -> Answer:
        """One slice through the shared micro-batches (Overloaded / BatchTimeout on trouble)."""
        batcher = self._batcher()
        check_channels(image)  # a 422 now, before the slice joins a batch shared with others
        self.metrics.queue_depth.set(batcher.pending)
        start = time.perf_counter()
        try:
            (answer,) = await batcher.submit([image], timeout=self.settings.request_timeout_s)
        finally:
            self.metrics.queue_depth.set(batcher.pending)
        steps = answer.times.prepare_s + answer.times.network_s + answer.times.finish_s
        waited = max(0.0, time.perf_counter() - start - steps)
        return dataclasses.replace(answer, queued_s=waited)

    async def segment_volume(self, slices: Sequence[np.ndarray]) -> list[SlicePrediction]:
        """A volume's slices, ``max_batch`` at a time, interleaved fairly with slice requests.

        Two chunks are in flight: while one runs, the next waits in the queue, so the model
        never idles between a volume's batches (the volume reaches the engine's batch
        throughput) and a slice request waits behind at most one of the volume's batches.
        At most ``max_concurrent_volumes`` volumes run at once; another one gets Overloaded.
        """
        batcher = self._batcher()
        if slices:
            check_channels(slices[0])
        if self._volumes.locked():
            raise Overloaded("another volume is being segmented")
        async with self._volumes, asyncio.timeout(self.settings.volume_timeout_s):
            out: list[SlicePrediction] = []
            step = self.settings.max_batch
            in_flight: deque[asyncio.Future[list[Answer]]] = deque()
            try:
                for start in range(0, len(slices), step):
                    chunk = list(slices[start : start + step])
                    in_flight.append(asyncio.ensure_future(batcher.submit(
                        chunk, timeout=self.settings.volume_timeout_s, bypass_limit=True
                    )))  # fmt: skip
                    if len(in_flight) == 2:
                        out += [answer.prediction for answer in await in_flight.popleft()]
                while in_flight:
                    out += [answer.prediction for answer in await in_flight.popleft()]
            finally:
                for future in in_flight:  # an error or a cancelled request: drop the rest
                    if not future.done():
                        future.cancel()
                    elif not future.cancelled():
                        future.exception()  # retrieved: no "never retrieved" warning
            return out


def _file_names_only(text: str, checkpoint: Path) -> str:
    """The reason /readyz shows (without a key): the checkpoint's folder is not disclosed."""
    for folder in {checkpoint.parent, checkpoint.resolve().parent}:
        if str(folder) not in ("", "."):
            text = text.replace(f"{folder}{os.sep}", "")
    return text


def configure_threads(settings: ServeSettings) -> int:
    """Set torch's intra-op threads for threads started from now on (the model threads); by
    default the usable cores shared out over the ``model_workers``. The OpenVINO engine is given
    the same number of threads."""
    threads = settings.torch_threads or max(1, default_torch_threads() // settings.model_workers)
    torch.set_num_threads(threads)
    log.info("torch uses %d intra-op thread(s)", threads)
    return threads


def default_torch_threads() -> int:
    """All usable cores (the CPU set this process may run on).

    The event loop, decoding and encoding take little CPU next to the network, so the model gets
    every core: on the quiet 2-core development machine two torch threads answered a single
    slice in 93 ms (p50) against 142 ms with one, and 14.6 against 8.8 slices/s at 20 requests/s
    offered, with nothing lost either way (benchmarks/api_load.py). Intra-op threads synchronise
    at every layer, so on a machine shared with other heavy work (a training run) fewer threads
    can do better: set ``LGGSEG_SERVE_TORCH_THREADS``.
    """
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _load(settings: ServeSettings) -> Predictor:
    predictor = Predictor.from_checkpoint(
        settings.checkpoint,
        settings.device,
        precision=settings.precision,
        tta=settings.tta,
        threshold=settings.threshold,
        batch_size=settings.max_batch,
        engine=settings.engine,
        threads=torch.get_num_threads(),
    )
    if settings.warmup:
        predictor.warm_up(sorted({1, settings.max_batch}))
    return predictor
