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

import numba
import numpy as np
import torch
from torch import Tensor
from torch.optim import SGD, Adam, AdamW, Optimizer

from models.optimizers import cpu_kernels
from models.optimizers.znorm import (
    CONSTANT_RTOL,
    ILL_CONDITIONED,
    ZNormOptions,
    mean_and_scale,
    selected_tensors,
    znorm_,
)

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


class ZNormAdam(ZNormMixin, Adam):  # type: ignore[misc]
    """Adam run on z-score normalised gradients (ZNorm-Adam).

    Same arguments as ``torch.optim.Adam`` plus ``znorm_eps``, ``znorm_per_channel``,
    ``znorm_include_1d`` and ``znorm_unbiased`` (see ``ZNormOptions``). One step equals
    ``torch.optim.Adam.step()`` on the gradients after ``znorm_reference_``.

    Implementation: unless ``fused=False`` or ``foreach`` is given, dense float32 CPU parameters
    (contiguous or channels-last, gradients and moments laid out alike) take the fused CPU
    kernels of ``cpu_kernels`` (``p.grad`` is left as it was; per-tensor statistics only): where
    whole tensors balance over the threads, one launch in which each thread takes the statistics
    of a tensor and updates it at once (its gradient still in cache); otherwise a statistics
    launch and an update launch over chunks of all tensors.
    Everything else runs ZNorm on ``p.grad`` in place, then stock Adam (torch's fused Adam where
    the device has one, unless ``fused=False`` or ``foreach`` says otherwise).
    """

    tensorwise_kernel: bool = True
    """False: always the chunked two-launch kernels (tests compare the two)."""

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
        *,
        fused: bool | None = None,
        foreach: bool | None = None,
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
            fused=fused,
            foreach=foreach,
            **kwargs,
        )
        self._use_cpu_kernel = fused is not False and foreach is None
        self._plans: dict[int, tuple[tuple[Any, ...], Any]] = {}
        if fused is None and not foreach:
            for group in self.param_groups:  # torch's fused Adam where it exists
                if all(
                    p.is_floating_point() and p.device.type in ("cpu", "cuda")
                    for p in group["params"]
                ):
                    group["fused"] = True

    def _cpu_kernel_applies(self) -> bool:
        if not self._use_cpu_kernel:
            return False
        for group in self.param_groups:
            if (
                group["amsgrad"]
                or group["maximize"]
                or group["differentiable"]
                or group["capturable"]
                or group["znorm_per_channel"]
                or any(isinstance(group[k], Tensor) for k in ("lr", "weight_decay"))
                or any(isinstance(b, Tensor) for b in group["betas"])
            ):
                return False
            for p in group["params"]:
                if p.grad is None:
                    continue
                if not (
                    p.device.type == "cpu"
                    and p.dtype == torch.float32
                    and p.grad.dtype == torch.float32
                    and not p.grad.is_sparse
                    and _dense(p)
                    and p.grad.stride() == p.stride()
                    and all(
                        t.dtype == torch.float32 and t.shape == p.shape and t.stride() == p.stride()
                        for k, t in self.state.get(p, {}).items()
                        if k in ("exp_avg", "exp_avg_sq")
                    )
                ):
                    return False
        return True

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        if not self._cpu_kernel_applies():
            return super().step(closure)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for index, group in enumerate(self.param_groups):
            self._kernel_step(index, group)
        return loss

    def _kernel_step(self, index: int, group: dict[str, Any]) -> None:
        params = [p for p in group["params"] if p.grad is not None and p.numel() > 0]
        if not params:
            return
        grads = [p.grad for p in params]
        for p in params:
            state = self.state[p]
            if len(state) == 0:
                state["step"] = torch.tensor(0.0, dtype=torch.float32)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        states = [self.state[p] for p in params]
        opts = _znorm_options(group)
        chosen = {id(g) for g in selected_tensors(grads, opts)}
        normalise = np.array([id(g) in chosen for g in grads])
        steps = [s["step"] for s in states]
        torch._foreach_add_(steps, 1.0)
        # Addresses of tensors that stay referenced (params, grads, states) until the kernels end.
        addresses = (
            _addresses(params),
            _addresses(grads),
            _addresses([s["exp_avg"] for s in states]),
            _addresses([s["exp_avg_sq"] for s in states]),
        )
        adam = cpu_kernels.AdamSettings(
            step=torch.stack(steps).double().numpy(),
            lr=group["lr"],
            beta1=group["betas"][0],
            beta2=group["betas"][1],
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            decoupled=group["decoupled_weight_decay"],
        )
        plan = self._plan(index, params)
        if isinstance(plan, cpu_kernels.TensorBins):
            cpu_kernels.znorm_adam_update(
                *addresses,
                plan,
                adam,
                normalise=normalise,
                unbiased=opts.unbiased,
                znorm_eps=opts.eps,
                ill_conditioned=ILL_CONDITIONED,
                constant_rtol=CONSTANT_RTOL,
            )
            return
        mean = np.zeros(len(params))
        scale = np.ones(len(params))
        picked = np.flatnonzero(normalise)
        if picked.size:
            moments = torch.from_numpy(cpu_kernels.sums(addresses[1], plan)[picked])
            mean[picked], scale[picked] = mean_and_scale(
                [grads[i] for i in picked], moments[:, 0], moments[:, 1], opts.unbiased, opts.eps
            )
        cpu_kernels.adam_update(*addresses, plan, adam, mean=mean, scale=scale)

    def _plan(
        self, index: int, params: list[Tensor]
    ) -> cpu_kernels.TensorBins | cpu_kernels.ChunkTable:
        """How the kernels share out param group ``index``'s parameters: whole tensors per thread
        where they balance, else chunks (cached per group while its tensors are the same)."""
        threads = numba.get_num_threads()
        key = (threads, *((id(p), p.numel()) for p in params))
        cached = self._plans.get(index)
        if cached is not None and cached[0] == key:
            return cached[1]
        sizes = [p.numel() for p in params]
        bins = cpu_kernels.tensor_bins(sizes, threads) if self.tensorwise_kernel else None
        plan = bins if bins is not None else cpu_kernels.chunk_table(sizes)
        self._plans[index] = (key, plan)
        return plan


def _dense(t: Tensor) -> bool:
    """Elements fill ``numel`` consecutive slots from ``data_ptr()`` (contiguous or channels-last),
    so an elementwise kernel may walk them flat, given the same strides for every operand."""
    if t.is_contiguous():
        return True
    return t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last)


def _addresses(tensors: list[Tensor]) -> np.ndarray:
    return np.fromiter((t.data_ptr() for t in tensors), dtype=np.intp, count=len(tensors))


class ZNormAdamW(ZNormMixin, AdamW):  # type: ignore[misc]
    """AdamW (decoupled weight decay) run on z-score normalised gradients."""


class ZNormSGD(ZNormMixin, SGD):  # type: ignore[misc]
    """SGD (with momentum if asked) run on z-score normalised gradients."""


class GCAdam(GCMixin, Adam):  # type: ignore[misc]
    """Adam with gradient centralization."""


class ClipAdam(ClipMixin, Adam):  # type: ignore[misc]
    """Adam after clipping the global gradient norm to ``max_grad_norm`` (default 1.0)."""


def with_znorm(optimizer_cls: type[Optimizer]) -> type[Optimizer]:
    """ZNorm in front of any ``torch.optim.Optimizer`` class: ``with_znorm(torch.optim.RAdam)``."""
    if not (isinstance(optimizer_cls, type) and issubclass(optimizer_cls, Optimizer)):
        raise ValueError(f"with_znorm needs a torch.optim.Optimizer class, got {optimizer_cls!r}")
    return type(f"ZNorm{optimizer_cls.__name__}", (ZNormMixin, optimizer_cls), {})
