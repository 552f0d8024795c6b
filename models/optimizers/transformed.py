"""Optimizers that transform the gradients, then run a stock ``torch.optim`` update.

Each class here is a real ``torch.optim.Optimizer`` (a subclass of the stock one), so
``state_dict``, learning-rate schedulers, ``GradScaler`` and DDP work unchanged. The transform
runs inside ``step()``, after GradScaler has unscaled the gradients (these classes never take the
scaled-gradient fast path of ``fused=True``: normalising scaled gradients and unscaling later would
be wrong), so an inf/NaN gradient still makes GradScaler skip the step.

- ``ZNormAdam``, ``ZNormAdamW``, ``ZNormSGD``; ``with_znorm(cls)`` for any other optimizer.
- ``GCAdam``: gradient centralization (Yong et al. 2020) in front of Adam.
- ``ClipAdam``: global-norm gradient clipping in front of Adam.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.optim import SGD, Adam, AdamW, Optimizer

from models.optimizers.znorm import ZNormOptions, znorm_

ParamsT = Iterable[Tensor] | Iterable[dict[str, Any]]


def _group_grads(group: dict[str, Any]) -> list[Tensor]:
    """The gradients of a param group; params without a gradient are skipped."""
    grads = [p.grad for p in group["params"] if p.grad is not None]
    for g in grads:
        if g.is_sparse:
            raise RuntimeError(
                "this optimizer does not support sparse gradients; use dense embeddings "
                "(sparse=False)"
            )
    return grads


class GradientTransformMixin:
    """Runs ``_transform_gradients()`` in ``step()`` before the parent optimizer's update.

    Subclasses declare their extra options in ``transform_defaults``; they are validated, kept in
    every param group (so ``state_dict`` round-trips them) and in ``defaults``.
    """

    transform_defaults: ClassVar[dict[str, Any]] = {}
    param_groups: list[dict[str, Any]]
    defaults: dict[str, Any]

    def __init__(self, params: ParamsT, **kwargs: Any) -> None:
        options = {k: kwargs.pop(k, v) for k, v in self.transform_defaults.items()}
        self._validate_transform(options)
        super().__init__(params, **kwargs)  # type: ignore[call-arg]
        self.defaults.update(options)
        for group in self.param_groups:
            for key, value in options.items():
                group.setdefault(key, value)
        # GradScaler must unscale before the transform (see module docstring).
        self._step_supports_amp_scaling = False

    def _validate_transform(self, options: dict[str, Any]) -> None:
        """Raise ValueError for bad option values."""

    def _transform_gradients(self) -> None:
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._transform_gradients()
        super().step()  # type: ignore[misc]
        return loss


def _znorm_options(group: dict[str, Any]) -> ZNormOptions:
    return ZNormOptions(
        per_channel=group["znorm_per_channel"],
        include_1d=group["znorm_include_1d"],
        unbiased=group["znorm_unbiased"],
        eps=group["znorm_eps"],
    )


class ZNormMixin(GradientTransformMixin):
    """Z-score normalises every selected gradient tensor (see ``models.optimizers.znorm``)."""

    transform_defaults: ClassVar[dict[str, Any]] = {
        "znorm_eps": 1e-8,
        "znorm_per_channel": False,
        "znorm_include_1d": False,
        "znorm_unbiased": True,
    }

    def _validate_transform(self, options: dict[str, Any]) -> None:
        eps = options["znorm_eps"]
        if not (isinstance(eps, int | float) and not isinstance(eps, bool) and eps >= 0):
            raise ValueError(f"znorm_eps must be a number >= 0, got {eps!r}")
        for key in ("znorm_per_channel", "znorm_include_1d", "znorm_unbiased"):
            if not isinstance(options[key], bool):
                raise ValueError(f"{key} must be True or False, got {options[key]!r}")

    def _transform_gradients(self) -> None:
        for group in self.param_groups:
            opts = _znorm_options(group)
            znorm_(
                _group_grads(group),
                per_channel=opts.per_channel,
                include_1d=opts.include_1d,
                unbiased=opts.unbiased,
                eps=opts.eps,
            )


def centralize_(grads: list[Tensor]) -> None:
    """Gradient centralization: subtract the per-output-channel mean of tensors with 2+ dims."""
    for g in grads:
        if g.dim() >= 2:
            g.sub_(g.mean(dim=tuple(range(1, g.dim())), keepdim=True))


class GCMixin(GradientTransformMixin):
    def _transform_gradients(self) -> None:
        for group in self.param_groups:
            centralize_(_group_grads(group))


class ClipMixin(GradientTransformMixin):
    """Clips the global gradient norm (over all param groups) to ``max_grad_norm``."""

    transform_defaults: ClassVar[dict[str, Any]] = {"max_grad_norm": 1.0}

    def _validate_transform(self, options: dict[str, Any]) -> None:
        value = options["max_grad_norm"]
        if not (isinstance(value, int | float) and value > 0):
            raise ValueError(f"max_grad_norm must be a number > 0, got {value!r}")

    def _transform_gradients(self) -> None:
        params = [p for group in self.param_groups for p in group["params"] if p.grad is not None]
        for group in self.param_groups:
            _group_grads(group)  # refuses sparse gradients with a clear message
        if params:
            torch.nn.utils.clip_grad_norm_(params, self.defaults["max_grad_norm"])


class ZNormAdam(ZNormMixin, Adam):
    """Adam run on z-score normalised gradients (ZNorm-Adam).

    Same arguments as ``torch.optim.Adam`` plus ``znorm_eps``, ``znorm_per_channel``,
    ``znorm_include_1d`` and ``znorm_unbiased`` (see ``ZNormOptions``). One step equals
    ``torch.optim.Adam.step()`` on the gradients after ``znorm_reference_``.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        decoupled_weight_decay: bool = False,
        znorm_eps: float = 1e-8,
        znorm_per_channel: bool = False,
        znorm_include_1d: bool = False,
        znorm_unbiased: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            params,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            decoupled_weight_decay=decoupled_weight_decay,
            znorm_eps=znorm_eps,
            znorm_per_channel=znorm_per_channel,
            znorm_include_1d=znorm_include_1d,
            znorm_unbiased=znorm_unbiased,
            **kwargs,
        )


class ZNormAdamW(ZNormMixin, AdamW):
    """AdamW (decoupled weight decay) run on z-score normalised gradients."""


class ZNormSGD(ZNormMixin, SGD):
    """SGD (with momentum if asked) run on z-score normalised gradients."""


class GCAdam(GCMixin, Adam):
    """Adam with gradient centralization."""


class ClipAdam(ClipMixin, Adam):
    """Adam after clipping the global gradient norm to ``max_grad_norm`` (default 1.0)."""


def with_znorm(optimizer_cls: type[Optimizer]) -> type[Optimizer]:
    """ZNorm in front of any ``torch.optim.Optimizer`` class: ``with_znorm(torch.optim.RAdam)``."""
    if not (isinstance(optimizer_cls, type) and issubclass(optimizer_cls, Optimizer)):
        raise ValueError(f"with_znorm needs a torch.optim.Optimizer class, got {optimizer_cls!r}")
    return type(f"ZNorm{optimizer_cls.__name__}", (ZNormMixin, optimizer_cls), {})
