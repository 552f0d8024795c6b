"""MicroBatcher on its own: ordering, admission, timeouts, failures, shutdown."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from inference.api.batching import BatchTimeout, MicroBatcher, Overloaded


class Recorder:
    """A fake model: doubles numbers, records batches, may sleep or fail."""

    def __init__(self, delay_s: float = 0.0, fail_on: int | None = None) -> None:
        self.delay_s = delay_s
        self.fail_on = fail_on
        self.batches: list[list[int]] = []
        self.threads: set[str] = set()

    def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay_s)
        if self.fail_on in items:
            raise RuntimeError("model exploded")
        return [2 * i for i in items]


def test_results_in_order_and_batched_on_one_thread() -> None:
    model = Recorder(delay_s=0.05)

    async def run() -> list[list[int]]:
        batcher = MicroBatcher(model, max_batch=4, max_wait_s=0.01, queue_limit=100)
        batcher.start()
        answers = await asyncio.gather(*(batcher.submit([i], timeout=5) for i in range(10)))
        answers.append(await batcher.submit([20, 21, 22], timeout=5))
        await batcher.stop()
        return answers

    answers = asyncio.run(run())
    assert answers[:10] == [[2 * i] for i in range(10)]
    assert answers[10] == [40, 42, 44]
    assert max(len(b) for b in model.batches) == 4
    assert sorted(i for b in model.batches for i in b) == [*range(10), 20, 21, 22]
    assert len(model.threads) == 1 and next(iter(model.threads)).startswith("lggseg-model")


def test_admission_is_bounded_and_immediate() -> None:
    model = Recorder(delay_s=0.3)

    async def run() -> tuple[list[object], bool]:
        batcher = MicroBatcher(model, max_batch=1, max_wait_s=0, queue_limit=2)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit([1], timeout=5))
        second = asyncio.ensure_future(batcher.submit([2], timeout=5))
        await asyncio.sleep(0)
        assert batcher.refusal(1) == "2 slices are already queued"  # what submit would say
        assert batcher.refusal(0) is None
        assert batcher.refusal(1, bypass_limit=True) is None  # as submit lets volumes through
        with pytest.raises(Overloaded, match="2 slices are already queued"):
            await batcher.submit([3], timeout=5)
        refused_while_busy = not first.done()  # at once, not after the running batch
        results = list(await asyncio.gather(first, second))
        assert batcher.refusal(2) is None
        results.append(await batcher.submit([4], bypass_limit=False, timeout=5))  # room again
        await batcher.stop()
        assert batcher.refusal(1) == "the service is not accepting work (starting or shutting down)"
        return results, refused_while_busy

    results, refused_while_busy = asyncio.run(run())
    assert results == [[2], [4], [8]]
    assert refused_while_busy


def test_timeout_cancels_the_waiting_item() -> None:
    model = Recorder(delay_s=0.3)

    async def run() -> int:
        batcher = MicroBatcher(model, max_batch=1, max_wait_s=0, queue_limit=10)
        batcher.start()
        busy = asyncio.ensure_future(batcher.submit([1], timeout=5))
        await asyncio.sleep(0.05)
        with pytest.raises(BatchTimeout):
            await batcher.submit([2], timeout=0.1)  # still queued behind the busy batch
        await busy
        await asyncio.sleep(0.05)
        pending = batcher.pending
        await batcher.stop()
        return pending

    assert asyncio.run(run()) == 0
    assert [2] not in model.batches  # the abandoned item never reached the model


def test_model_failure_reaches_the_callers_and_the_loop_survives() -> None:
    model = Recorder(fail_on=13)

    async def run() -> list[int]:
        batcher = MicroBatcher(model, max_batch=8, max_wait_s=0, queue_limit=10)
        batcher.start()
        with pytest.raises(RuntimeError, match="exploded"):
            await batcher.submit([13], timeout=5)
        after = await batcher.submit([5], timeout=5)
        await batcher.stop()
        return after

    assert asyncio.run(run()) == [10]


def test_stop_drains_admitted_work_and_refuses_new() -> None:
    model = Recorder(delay_s=0.2)

    async def run() -> list[int]:
        batcher = MicroBatcher(model, max_batch=1, max_wait_s=0, queue_limit=10)
        batcher.start()
        admitted = asyncio.ensure_future(batcher.submit([7], timeout=5))
        await asyncio.sleep(0.01)
        stopping = asyncio.ensure_future(batcher.stop())
        await asyncio.sleep(0.01)
        with pytest.raises(Overloaded, match="shutting down"):
            await batcher.submit([8], timeout=5)
        result = await admitted
        await stopping
        return result

    assert asyncio.run(run()) == [14]


def test_invalid_limits() -> None:
    with pytest.raises(ValueError):
        MicroBatcher(Recorder(), max_batch=0)


def test_two_workers_run_batches_side_by_side() -> None:
    model = Recorder(delay_s=0.3)

    async def run() -> list[list[int]]:
        batcher = MicroBatcher(model, max_batch=1, max_wait_s=0, queue_limit=10, workers=2)
        batcher.start()
        answers = await asyncio.gather(*(batcher.submit([i], timeout=5) for i in range(4)))
        await batcher.stop()
        return answers

    assert asyncio.run(run()) == [[0], [2], [4], [6]]
    assert len(model.threads) == 2  # two model threads took batches


def test_latency_budget_refuses_what_could_not_be_answered_in_time() -> None:
    class PerSlice(Recorder):
        def __call__(self, items: list[int]) -> list[int]:
            self.delay_s = 0.2 * len(items)  # 0.2 s per slice
            return super().__call__(items)

    model = PerSlice()

    async def run() -> tuple[list[object], float | None]:
        batcher = MicroBatcher(
            model, max_batch=8, max_wait_s=0.05, queue_limit=100, latency_budget_s=0.7
        )
        batcher.start()
        await batcher.submit([0], timeout=5)  # measures the pace: 0.2 s per slice
        estimate = batcher.expected_wait_s(1)
        answers = await asyncio.gather(
            *(batcher.submit([i], timeout=5) for i in range(1, 7)), return_exceptions=True
        )
        await batcher.stop()
        return answers, estimate

    answers, estimate = asyncio.run(run())
    assert estimate == pytest.approx(0.2, rel=0.2)
    assert answers[:3] == [[2], [4], [6]]  # 0.2, 0.4, 0.6 s of work ahead: admitted
    assert all(isinstance(a, Overloaded) for a in answers[3:])  # 0.8 s > 0.7 s budget


def test_an_idle_model_always_takes_work_so_a_slow_estimate_recovers() -> None:
    model = Recorder(delay_s=0.5)

    async def run() -> tuple[list[int], list[int], float | None]:
        batcher = MicroBatcher(model, max_batch=1, max_wait_s=0, latency_budget_s=0.1)
        batcher.start()
        await batcher.submit([1], timeout=5)  # one slow batch: 0.5 s per slice > the budget
        model.delay_s = 0.0
        first = await batcher.submit([2], timeout=5)  # idle: admitted despite the estimate
        for _ in range(20):  # fast batches bring the estimate back under the budget
            await batcher.submit([3], timeout=5)
        second = await batcher.submit([4], timeout=5)
        estimate = batcher.expected_wait_s(1)
        await batcher.stop()
        return first, second, estimate

    first, second, estimate = asyncio.run(run())
    assert first == [4] and second == [8]
    assert estimate is not None and estimate < 0.1
