"""Gradient transforms in front of stock ``torch.optim`` optimizers, as step pre-hooks.

``with_znorm(optimizer)``, ``with_gradient_centralization(optimizer)`` and
``with_grad_clipping(optimizer)`` register a hook (``Optimizer.register_step_pre_hook``) that
transforms the gradients at the start of ``optimizer.step()``; the optimizer's own update then
runs unchanged (torch's fused and foreach kernels included). The optimizer stays what it was
(``type(opt) is torch.optim.Adam``), so ``state_dict``, schedulers and DDP work as usual.

- Options are kept in ``defaults`` and in every param group: ``state_dict()`` carries them,
  ``load_state_dict()`` restores them and ``add_param_group`` inherits them.
- ``GradScaler``: it calls ``step()`` (so the hook) only after unscaling and only when every
  gradient is finite. The transform must see unscaled gradients, so the optimizer's
  ``_step_supports_amp_scaling`` is turned off: GradScaler then unscales before ``step()``
  instead of leaving the scale to a fused kernel to remove after the transform.
- A closure passed to ``step()`` is evaluated by the hook, before the transform; the update
  gets its loss. Optimizers that evaluate the closure more than once (LBFGS) are refused.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim import LBFGS, Optimizer

from models.optimizers.znorm import ZNormOptions, znorm_

ParamsT = Iterable[Tensor] | Iterable[dict[str, Any]]
Transform = Callable[[Optimizer], None]


def _group_grads(group: dict[str, Any]) -> list[Tensor]:
    """The gradients of a param group; params without a gradient are skipped."""
    grads = [p.grad for p in group["params"] if p.grad is not None]
    if any(g.is_sparse for g in grads):
        raise RuntimeError(
            "gradient transforms do not support sparse gradients; use dense embeddings "
            "(sparse=False)"
        )
    return grads


def _step_pre_hook(transform: Transform) -> Callable[..., Any]:
    """``transform`` as a step pre-hook; ``step()``'s closure, if any, is evaluated first."""

    def hook(optimizer: Optimizer, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        # args[0] is the optimizer itself (the hook wraps the unbound step).
        closure = args[1] if len(args) > 1 else kwargs.get("closure")
        result = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

            def evaluated() -> Any:
                return loss

            if len(args) > 1:
                result = ((args[0], evaluated, *args[2:]), kwargs)
            else:
                result = (args, {**kwargs, "closure": evaluated})
        with torch.no_grad():
            transform(optimizer)
        return result

    return hook


def _install(optimizer: Optimizer, transform: Transform, options: dict[str, Any]) -> Optimizer:
    if not isinstance(optimizer, Optimizer):
        raise ValueError(f"expected a torch.optim.Optimizer instance, got {optimizer!r}")
    if isinstance(optimizer, LBFGS):
        raise ValueError("LBFGS evaluates its closure several times per step; no transform")
    if any(key in optimizer.defaults for key in options):
        raise ValueError(f"the optimizer already has options {sorted(options)}")
    optimizer.defaults.update(options)
    for group in optimizer.param_groups:
        for key, value in options.items():
            group.setdefault(key, value)
    optimizer._step_supports_amp_scaling = False  # type: ignore[attr-defined]  # see module doc
    optimizer.register_step_pre_hook(_step_pre_hook(transform))
    return optimizer


ZNORM_KEYS = ("znorm_eps", "znorm_per_channel", "znorm_include_1d", "znorm_unbiased")


def _znorm_transform(optimizer: Optimizer) -> None:
    for group in optimizer.param_groups:
        # A group loaded from a state without the options takes the defaults.
        options = {key: group.get(key, optimizer.defaults[key]) for key in ZNORM_KEYS}
        znorm_(_group_grads(group), **{k.removeprefix("znorm_"): v for k, v in options.items()})


def with_znorm(
    optimizer: Optimizer,
    *,
    znorm_eps: float = 1e-8,
    znorm_per_channel: bool = False,
    znorm_include_1d: bool = False,
    znorm_unbiased: bool = True,
) -> Optimizer:
    """ZNorm in front of ``optimizer`` (returned, with the hook registered).

    ``with_znorm(torch.optim.Adam(params, lr=1e-3))`` is ZNorm-Adam: each step equals
    ``Adam.step()`` on the gradients after ``znorm_reference_``. The options are those of
    ``ZNormOptions`` (eps, per_channel, include_1d, unbiased), prefixed ``znorm_``; each param
    group may set its own.
    """
    ZNormOptions(znorm_per_channel, znorm_include_1d, znorm_unbiased, znorm_eps)  # validates
    options = dict(zip(ZNORM_KEYS, (znorm_eps, znorm_per_channel, znorm_include_1d,
                                    znorm_unbiased), strict=True))
    return _install(optimizer, _znorm_transform, options)


def centralize_(grads: list[Tensor]) -> None:
    """Gradient centralization: subtract the per-output-channel mean of tensors with 2+ dims."""
    for g in grads:
        if g.dim() >= 2:
            g.sub_(g.mean(dim=tuple(range(1, g.dim())), keepdim=True))


def _gc_transform(optimizer: Optimizer) -> None:
    for group in optimizer.param_groups:
        centralize_(_group_grads(group))


def with_gradient_centralization(optimizer: Optimizer) -> Optimizer:
    """Gradient centralization (Yong et al. 2020) in front of ``optimizer``."""
    return _install(optimizer, _gc_transform, {"gradient_centralization": True})


def _clip_transform(optimizer: Optimizer) -> None:
    for group in optimizer.param_groups:
        _group_grads(group)  # refuses sparse gradients
    params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    torch.nn.utils.clip_grad_norm_(params, optimizer.defaults["max_grad_norm"])


def with_grad_clipping(optimizer: Optimizer, *, max_grad_norm: float = 1.0) -> Optimizer:
    """Clip the global gradient norm (over all param groups) to ``max_grad_norm`` first."""
    if not (isinstance(max_grad_norm, int | float) and max_grad_norm > 0):
        raise ValueError(f"max_grad_norm must be a number > 0, got {max_grad_norm!r}")
    return _install(optimizer, _clip_transform, {"max_grad_norm": max_grad_norm})
