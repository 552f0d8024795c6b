"""Micro-batching: concurrent requests share forward passes, on one model thread.

Requests put their slices on an asyncio queue; a collector task takes the first waiting slice,
then whatever else arrives within ``max_wait_s`` (up to ``max_batch``), and runs the batch on a
model thread, so the event loop never blocks. ``max_wait_s=0`` (the API's default) is greedy: a
batch is whatever queued while the model was busy, and an idle model starts on a lone slice at
once instead of waiting for company that a sequential client never sends. With ``workers=1``
(the default) the model never runs twice at once; while a batch runs, new slices queue up and
form the next batch at once.
``workers=2`` runs two batches side by side (each on its own thread: pair it with one torch
thread each, so that threads never outnumber cores).

Admission is bounded: when ``queue_limit`` slices are already waiting or running, or when the
slices ahead would take longer than ``latency_budget_s`` at the measured pace (a running average
of seconds per slice, so the bound follows the hardware and whatever else shares it), ``submit``
raises :class:`Overloaded` immediately (the API answers 503 with Retry-After), never a hang.
A request that gives up (timeout, client gone) cancels its slices; the collector skips them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

from inference.api.middleware import describe_exception

log = logging.getLogger(__name__)

In = TypeVar("In")
Out = TypeVar("Out")


class Overloaded(RuntimeError):
    """The queue is full: try again later."""


class BatchTimeout(RuntimeError):
    """The request waited longer than its timeout."""


@dataclass
class _Job(Generic[In, Out]):
    item: In
    future: asyncio.Future[Out]


class MicroBatcher(Generic[In, Out]):
    """Run ``predict_batch`` on micro-batches of submitted items, one batch at a time."""

    def __init__(
        self,
        predict_batch: Callable[[list[In]], Sequence[Out]],
        *,
        max_batch: int = 8,
        max_wait_s: float = 0.0,
        queue_limit: int = 16,
        workers: int = 1,
        latency_budget_s: float | None = None,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        if max_batch < 1 or queue_limit < 1 or workers < 1:
            raise ValueError("max_batch, queue_limit and workers must be >= 1")
        self._predict_batch = predict_batch
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.queue_limit = queue_limit
        self.workers = workers
        self.latency_budget_s = latency_budget_s
        self._slice_s: float | None = None  # running average of model seconds per slice
        self._on_batch = on_batch
        self._queue: asyncio.Queue[_Job[In, Out]] = asyncio.Queue()
        self._pending = 0
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lggseg-model")
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def pending(self) -> int:
        """Slices admitted and not yet finished (queued or in the running batch)."""
        return self._pending

    def expected_wait_s(self, extra: int = 0) -> float | None:
        """Seconds until ``extra`` more slices would be answered, at the measured pace."""
        if self._slice_s is None:
            return None
        return (self._pending + extra) * self._slice_s / self.workers

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._collect())

    async def stop(self, drain_timeout: float = 30.0) -> None:
        """Refuse new work, let admitted slices finish (up to ``drain_timeout``), then stop."""
        self._closing = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + drain_timeout
        while self._pending > 0 and loop.time() < deadline:
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        while not self._queue.empty():
            job = self._queue.get_nowait()
            if not job.future.done():
                job.future.set_exception(Overloaded("the service is shutting down"))
        self._executor.shutdown(wait=True)

    def refusal(self, count: int, *, bypass_limit: bool = False) -> str | None:
        """Why ``submit(items, bypass_limit=...)`` would refuse ``count`` more slices now, or
        None: lets a request be refused before its upload is parsed and decoded, so that
        refusing an overload's excess does not eat the CPU its admitted requests need."""
        return self._closed() or (None if bypass_limit else self._over_limit(count))

    def _closed(self) -> str | None:
        if self._task is None or self._closing:
            return "the service is not accepting work (starting or shutting down)"
        return None

    def _over_limit(self, count: int) -> str | None:
        if self._pending + count > self.queue_limit:
            return f"{self._pending} slices are already queued"
        expected = self.expected_wait_s(count)
        budget = self.latency_budget_s
        # An idle model always takes work: that is also how a stale, slow estimate recovers.
        idle = self._pending == 0
        if not idle and budget is not None and expected is not None and expected > budget:
            return f"the expected wait of {expected:.1f} s exceeds {budget:g} s"
        return None

    async def submit(
        self, items: Sequence[In], *, timeout: float, bypass_limit: bool = False
    ) -> list[Out]:
        """Queue ``items`` and wait for their results (in order).

        Raises Overloaded when admitting them would exceed ``queue_limit`` (unless
        ``bypass_limit``, used by volume requests that are admitted separately), and
        BatchTimeout after ``timeout`` seconds.
        """
        reason = self.refusal(len(items), bypass_limit=bypass_limit)
        if reason is not None:
            raise Overloaded(reason)
        loop = asyncio.get_running_loop()
        jobs: list[_Job[In, Out]] = [_Job(item, loop.create_future()) for item in items]
        self._pending += len(jobs)
        for job in jobs:
            self._queue.put_nowait(job)
        try:
            async with asyncio.timeout(timeout):
                return list(await asyncio.gather(*(job.future for job in jobs)))
        except TimeoutError as exc:
            raise BatchTimeout(f"no answer from the model within {timeout:g} s") from exc
        finally:
            for job in jobs:
                if not job.future.done():
                    job.future.cancel()

    async def _next_batch(self) -> list[_Job[In, Out]]:
        loop = asyncio.get_running_loop()
        batch = [await self._queue.get()]
        deadline = loop.time() + self.max_wait_s
        while len(batch) < self.max_batch:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                async with asyncio.timeout(remaining):
                    batch.append(await self._queue.get())
            except TimeoutError:
                break
        return batch

    async def _collect(self) -> None:
        free = asyncio.Semaphore(self.workers)
        running: set[asyncio.Task[None]] = set()
        try:
            while True:
                await free.acquire()  # form the next batch only when a model thread is free
                batch = await self._next_batch()
                live = [job for job in batch if not job.future.done()]
                self._pending -= len(batch) - len(live)
                if not live:
                    free.release()
                    continue
                task = asyncio.get_running_loop().create_task(self._run(live))
                running.add(task)
                task.add_done_callback(running.discard)
                task.add_done_callback(lambda _: free.release())
        finally:
            for task in running:
                task.cancel()

    async def _run(self, live: list[_Job[In, Out]]) -> None:
        """One batch on a model thread; every job gets its result or the batch's error."""
        if self._on_batch is not None:
            self._on_batch(len(live))
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        try:
            results = await loop.run_in_executor(
                self._executor, self._predict_batch, [job.item for job in live]
            )
            per_slice = (time.perf_counter() - start) / len(live)
            old = self._slice_s
            self._slice_s = per_slice if old is None else 0.8 * old + 0.2 * per_slice
        except asyncio.CancelledError:
            for job in live:
                if not job.future.done():
                    job.future.set_exception(Overloaded("the service is shutting down"))
            raise
        except Exception as exc:  # a model failure must reach the callers, not end the loop
            log.error("batch of %d failed: %s", len(live), describe_exception(exc))
            for job in live:
                if not job.future.done():
                    job.future.set_exception(exc)
        else:
            for job, result in zip(live, results, strict=True):
                if not job.future.done():
                    job.future.set_result(result)
        finally:
            self._pending -= len(live)
