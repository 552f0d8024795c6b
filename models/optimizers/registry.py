"""``build_optimizer(name, params, **options)``: every optimizer of the comparison, by name.

Each is a stock ``torch.optim`` optimizer, with a gradient transform in front where the name
says so. The Adam family uses torch's fused kernel unless ``fused``, ``foreach`` or
``differentiable`` is given or a parameter is not a floating-point CPU/CUDA tensor.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import Tensor
from torch.optim import SGD, Adam, AdamW, Optimizer

from models.optimizers.transformed import (
    ParamsT,
    with_grad_clipping,
    with_gradient_centralization,
    with_znorm,
)

# name -> (stock optimizer, transform or None, default options unless the caller sets them)
_REGISTRY: dict[str, tuple[type[Optimizer], Callable[..., Optimizer] | None, dict[str, Any]]] = {
    "adam": (Adam, None, {}),
    "adamw": (AdamW, None, {"weight_decay": 1e-2}),
    "gc-adam": (Adam, with_gradient_centralization, {}),
    "clip-adam": (Adam, with_grad_clipping, {"max_grad_norm": 1.0}),
    "znorm-adam": (Adam, with_znorm, {}),
    "znorm-adamw": (AdamW, with_znorm, {"weight_decay": 1e-2}),
    "znorm-sgd": (SGD, with_znorm, {"momentum": 0.9}),
}

OPTIMIZER_NAMES: tuple[str, ...] = tuple(_REGISTRY)


def build_optimizer(name: str, params: ParamsT, **options: Any) -> Optimizer:
    """Build the optimizer called ``name`` (see ``OPTIMIZER_NAMES``) over ``params``.

    ``options`` go to the stock optimizer, except the transform's own (``znorm_*``,
    ``max_grad_norm``). Raises ValueError for an unknown name, an option the optimizer does not
    take, or a bad value.
    """
    key = name.strip().lower()
    if key not in _REGISTRY:
        raise ValueError(f"unknown optimizer {name!r}; choose one of: {', '.join(OPTIMIZER_NAMES)}")
    cls, transform, defaults = _REGISTRY[key]
    options = {**defaults, **options}
    own = inspect.signature(transform).parameters if transform else {}
    transform_options = {
        k: options.pop(k) for k in list(options) if k in own and own[k].kind is own[k].KEYWORD_ONLY
    }
    param_list = _listed(params)
    if (issubclass(cls, Adam) and not options.keys() & {"fused", "foreach", "differentiable"}
            and _fused_kernel_applies(param_list)):
        options["fused"] = True
    try:
        optimizer = cls(param_list, **options)
    except TypeError as exc:
        raise ValueError(f"bad option for optimizer {key!r}: {exc}") from exc
    return transform(optimizer, **transform_options) if transform else optimizer


def _listed(params: ParamsT) -> list[Any]:
    """``params`` as a list, each param group's own ``params`` as a list too (read twice)."""
    out: list[Any] = []
    for p in params:
        if isinstance(p, dict):
            group = p["params"]
            p = {**p, "params": [group] if isinstance(group, Tensor) else list(group)}
        out.append(p)
    return out


def _fused_kernel_applies(params: list[Any]) -> bool:
    """Every parameter a floating-point tensor on CPU or CUDA (torch's fused Adam's devices)."""
    tensors = [t for p in params for t in (p["params"] if isinstance(p, dict) else [p])]
    return all(
        isinstance(t, Tensor) and t.is_floating_point() and t.device.type in ("cpu", "cuda")
        for t in tensors
    )
