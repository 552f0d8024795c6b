"""``build_optimizer(name, params, **options)``: every optimizer of the comparison, by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch.optim import Adam, AdamW, Optimizer

from models.optimizers.transformed import (
    ClipAdam,
    GCAdam,
    ParamsT,
    ZNormAdam,
    ZNormAdamW,
    ZNormSGD,
)

# name -> (class, default options the registry adds unless the caller sets them)
_REGISTRY: dict[str, tuple[Callable[..., Optimizer], dict[str, Any]]] = {
    "adam": (Adam, {}),
    "adamw": (AdamW, {"weight_decay": 1e-2}),
    "gc-adam": (GCAdam, {}),
    "clip-adam": (ClipAdam, {"max_grad_norm": 1.0}),
    "znorm-adam": (ZNormAdam, {}),
    "znorm-adamw": (ZNormAdamW, {"weight_decay": 1e-2}),
    "znorm-sgd": (ZNormSGD, {"momentum": 0.9}),
}

OPTIMIZER_NAMES: tuple[str, ...] = tuple(_REGISTRY)


def build_optimizer(name: str, params: ParamsT, **options: Any) -> Optimizer:
    """Build the optimizer called ``name`` (see ``OPTIMIZER_NAMES``) over ``params``.

    Raises ValueError for an unknown name, an option the optimizer does not take, or a bad value.
    """
    key = name.strip().lower()
    if key not in _REGISTRY:
        raise ValueError(f"unknown optimizer {name!r}; choose one of: {', '.join(OPTIMIZER_NAMES)}")
    cls, defaults = _REGISTRY[key]
    merged = {**defaults, **options}
    try:
        return cls(params, **merged)
    except TypeError as exc:
        raise ValueError(f"bad option for optimizer {key!r}: {exc}") from exc
