"""The LR schedule object: positioned where a resume or a warm restart needs it."""

from __future__ import annotations

import pytest
import torch

from training.schedule import CosineSchedule, warmup_cosine

STEPS_PER_EPOCH = 10


def _optimizer(lr: float) -> torch.optim.Optimizer:
    return torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))], lr=lr)


def _lrs(scheduler: torch.optim.lr_scheduler.LRScheduler, steps: int) -> list[float]:
    optimizer = scheduler.optimizer
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def test_a_schedule_positioned_at_a_step_equals_one_stepped_there() -> None:
    schedule = CosineSchedule(epochs=3, warmup_epochs=0.5, min_lr_factor=0.01, lr=1e-3)
    from_start = _lrs(schedule.scheduler(_optimizer(1e-3), STEPS_PER_EPOCH, step=0), 30)
    positioned = schedule.scheduler(_optimizer(1e-3), STEPS_PER_EPOCH, step=12)
    assert _lrs(positioned, 18) == from_start[12:]  # the same floats, not just close
    assert from_start[:5] == pytest.approx([1e-3 * (k + 1) / 5 for k in range(5)])


def test_a_warm_restart_warms_up_from_its_own_start_to_its_own_peak() -> None:
    """After 20 steps of a 2-epoch run, a restart to epoch 4 at lr 5e-4 with 0.5 epoch warm-up:
    step 20 gets 5e-4 / 5 (not the old curve's value, nor the 2-epoch curve stretched)."""
    first = CosineSchedule(epochs=2, warmup_epochs=0.5, min_lr_factor=0.01, lr=1e-3)
    optimizer = _optimizer(1e-3)
    _lrs(first.scheduler(optimizer, STEPS_PER_EPOCH, step=0), 20)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-5)  # the end of the first curve
    restart = CosineSchedule(epochs=4, warmup_epochs=0.5, min_lr_factor=0.01, lr=5e-4,
                             after_epoch=2, at_step=20)
    lrs = _lrs(restart.scheduler(optimizer, STEPS_PER_EPOCH, step=20), 21)
    expected = [5e-4 * warmup_cosine(k, warmup_steps=5, total_steps=20, final_factor=0.01)
                for k in range(21)]
    assert lrs == pytest.approx(expected, rel=1e-12)
    assert lrs[0] == pytest.approx(1e-4) and max(lrs) == pytest.approx(5e-4)
    assert lrs[-1] == pytest.approx(5e-6)  # min_lr_factor at the end of epoch 4
    assert not restart.same_curve(first)
    assert first.same_curve(CosineSchedule(2, 0.5, 0.01, 1e-3, after_epoch=1, at_step=3))
