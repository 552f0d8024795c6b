"""Learning-rate schedule: linear warm-up, then cosine decay; stepped once per optimizer step."""

from __future__ import annotations

import math
from functools import partial

import torch
from torch.optim.lr_scheduler import LambdaLR


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


def build_scheduler(
    optimizer: torch.optim.Optimizer, *, warmup_steps: int, total_steps: int, final_factor: float
) -> LambdaLR:
    """A LambdaLR whose state (step count, base LRs) goes into resume.pt."""
    factor = partial(
        warmup_cosine,
        warmup_steps=warmup_steps,
        total_steps=total_steps,
        final_factor=final_factor,
    )
    return LambdaLR(optimizer, lr_lambda=factor)
