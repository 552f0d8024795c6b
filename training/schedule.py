"""Learning-rate schedule: linear warm-up, then cosine decay; stepped once per optimizer step.

A run has one schedule, fixed when it starts: ``--resume`` continues it exactly (a resumed run
equals an uninterrupted one) and refuses values that would change it. ``--warm-restart`` is the
explicit way to train on with another one: a new warm-up + cosine from the resumed weights and
optimizer state over the remaining epochs, recorded in ``resume.pt`` and the model card. Those
rules live with the configuration (``training.config.resolve_config`` and ``resumed_schedule``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
from torch.optim.lr_scheduler import LambdaLR

if TYPE_CHECKING:
    from training.config import TrainConfig

SCHEDULE_KEYS = ("training.epochs", "training.warmup_epochs", "training.min_lr_factor",
                 "optimizer.lr")
"""The configuration values that define the schedule."""


def warmup_cosine(step: int, *, warmup_steps: int, total_steps: int, final_factor: float) -> float:
    """Factor on the base LR at optimizer step ``step`` (0-based).

    Rises linearly from ``1 / warmup_steps`` to 1 over ``warmup_steps`` steps, then follows a
    half cosine from 1 down to ``final_factor`` at ``total_steps`` (and stays there after).
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return final_factor + (1.0 - final_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _from_start(step: int, *, start_step: int, **curve: Any) -> float:
    return warmup_cosine(max(0, step - start_step), **curve)


@dataclass(frozen=True)
class CosineSchedule:
    """Warm-up then cosine decay to ``lr * min_lr_factor`` at the end of epoch ``epochs``,
    starting after epoch ``after_epoch`` (optimizer step ``at_step``): 0 for a run's own
    schedule, later for a warm restart."""

    epochs: int
    warmup_epochs: float
    min_lr_factor: float
    lr: float
    after_epoch: int = 0
    at_step: int = 0

    @classmethod
    def from_config(
        cls, cfg: TrainConfig | dict[str, Any], *, after_epoch: int = 0, at_step: int = 0
    ) -> CosineSchedule:
        """The schedule a configuration asks for (a TrainConfig or its ``to_dict()``)."""
        values = cfg if isinstance(cfg, dict) else cfg.to_dict()
        t = values["training"]
        return cls(t["epochs"], t["warmup_epochs"], t["min_lr_factor"],
                   values["optimizer"]["lr"], after_epoch, at_step)

    def same_curve(self, other: CosineSchedule) -> bool:
        """Same epochs, warm-up, final factor and peak LR (wherever each starts)."""
        fields = ("epochs", "warmup_epochs", "min_lr_factor", "lr")
        return all(getattr(self, f) == getattr(other, f) for f in fields)

    def describe(self) -> str:
        return (f"{self.epochs} epochs, warm-up {self.warmup_epochs:g} epoch(s), "
                f"lr {self.lr:g}, min_lr_factor {self.min_lr_factor:g}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def scheduler(
        self, optimizer: torch.optim.Optimizer, steps_per_epoch: int, *, step: int
    ) -> LambdaLR:
        """This schedule as a LambdaLR (its state goes into resume.pt) positioned at optimizer
        step ``step`` (0 for a new run, the run's step for a resume or a warm restart): every
        param group gets that step's LR, from the peak LR ``lr``. The warm-up begins at step
        ``at_step``."""
        for group in optimizer.param_groups:
            group["initial_lr"] = self.lr
        factor = partial(
            _from_start,
            start_step=self.at_step,
            warmup_steps=round(self.warmup_epochs * steps_per_epoch),
            total_steps=(self.epochs - self.after_epoch) * steps_per_epoch,
            final_factor=self.min_lr_factor,
        )
        return LambdaLR(optimizer, lr_lambda=factor, last_epoch=step - 1)
