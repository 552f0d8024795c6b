"""ZNorm: z-score normalisation of gradients, per layer (Yun, arXiv:2408.01215).

    g_hat = (g - mean(g)) / (std(g) + eps)

The maths lives here as pure functions on lists of tensors; ``models.optimizers.transformed``
calls ``znorm_`` from a step pre-hook, between ``backward()`` and the optimizer's update.

Two implementations, tested equal:
- ``znorm_reference_``: the definition, a loop with float64 statistics. Slow, obviously right.
- ``znorm_``: the fast path. Per-tensor statistics come from two cheap reductions (chunked
  ``_foreach_norm`` for the sum of squares, ``sum`` for the mean, combined in float64); the few
  tensors where that is ill-conditioned (|mean| large against std) are redone with two passes.
  The normalisation is ``(g - mean) * scale`` per tensor (``g * scale + shift`` would cancel
  badly where |mean| >> std).

Half-precision gradients (bfloat16, float16) get their statistics in float64 and their
normalisation in float32, rounded to the gradient's dtype once. Statistics in the gradient's own
dtype would carry its rounding (2**-9 relative for bfloat16), which the cancellation in
``sumsq - n * mean**2`` multiplies by ``1 + mean**2 / var``: at |mean|/std = 10 the std came out
30% off. (float32 accumulation would still lose ~1e-5 relative there, amplified the same way;
float64 costs nothing that matters next to reading the half-precision gradient once.)

Degenerate tensors: a tensor with a single element is left alone (the sample std is undefined);
a constant tensor (std <= ``CONSTANT_RTOL`` * |mean|, or std == 0) becomes all zeros, never NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

CONSTANT_RTOL = 1e-6
"""A tensor whose std is below this fraction of its |mean| counts as constant (float32 noise)."""

ILL_CONDITIONED = 1e-3
"""Fast path: redo the statistics in two passes when var < this * mean**2 (cancellation)."""


@dataclass(frozen=True)
class ZNormOptions:
    """The choices the paper leaves open (defaults: the paper's per-layer ZNorm).

    Attributes:
        per_channel: statistics per output channel (dim 0) instead of over the whole tensor.
        include_1d: also normalise 1-D tensors (biases, norm scales); default only 2+ dims.
        unbiased: sample std (N-1) when True, population std (N) when False.
        eps: added to the std in the denominator.
    """

    per_channel: bool = False
    include_1d: bool = False
    unbiased: bool = True
    eps: float = 1e-8

    def __post_init__(self) -> None:
        if not (isinstance(self.eps, int | float) and not isinstance(self.eps, bool)
                and self.eps >= 0.0):
            raise ValueError(f"ZNorm eps must be a number >= 0, got {self.eps!r}")
        for name in ("per_channel", "include_1d", "unbiased"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"ZNorm {name} must be True or False, got {getattr(self, name)!r}")


def selected_tensors(grads: Sequence[Tensor], opts: ZNormOptions) -> list[Tensor]:
    """The tensors ZNorm touches: 2+ dims (or 1-D too), more than one element per statistic."""
    out = []
    for g in grads:
        if g.is_sparse:
            raise RuntimeError(
                "ZNorm does not support sparse gradients; use dense embeddings "
                "(sparse=False) or an optimizer without ZNorm"
            )
        if g.dim() == 0 or g.numel() <= 1 or (g.dim() == 1 and not opts.include_1d):
            continue
        if opts.per_channel and g.dim() >= 2 and g[0].numel() <= 1:
            continue
        out.append(g)
    return out


def _scale_shift(mean: Tensor, std: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """``g_hat = g * scale + shift``; constant tensors get scale = shift = 0."""
    constant = (std == 0) | (std <= CONSTANT_RTOL * mean.abs())
    scale = torch.where(constant, torch.zeros_like(std), 1.0 / (std + eps))
    return scale, -mean * scale


def _per_channel_dims(g: Tensor) -> tuple[int, ...]:
    return tuple(range(1, g.dim()))


def znorm_reference_(grads: Sequence[Tensor], options: ZNormOptions | None = None) -> None:
    """The definition of ZNorm, in place: a plain loop with float64 statistics."""
    opts = options or ZNormOptions()
    correction = 1 if opts.unbiased else 0
    for g in selected_tensors(grads, opts):
        g64 = g.double()
        if opts.per_channel and g.dim() >= 2:
            dims = _per_channel_dims(g)
            std, mean = torch.std_mean(g64, dim=dims, correction=correction, keepdim=True)
        else:
            std, mean = torch.std_mean(g64, correction=correction)
        scale, shift = _scale_shift(mean, std, opts.eps)
        g.copy_(g64 * scale + shift)


_CHUNK = 65536
"""Sums of squares are taken over chunks of this many elements, then added in float64: float32
accumulation over millions of elements alone loses about 1e-4 relative."""


def statistics_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the statistics of ``dtype`` tensors accumulate in: their own for float32 (the
    fast path) and float64, float64 for half precision (see the module docstring)."""
    return dtype if dtype in (torch.float32, torch.float64) else torch.float64


def torch_moments(tensors: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Per-tensor sum and sum of squares (float64) with stock torch reductions.

    The tensors share one dtype, accumulated in ``statistics_dtype`` of it."""
    device = tensors[0].device
    acc = statistics_dtype(tensors[0].dtype)
    chunks: list[Tensor] = []
    owners: list[int] = []
    for i, t in enumerate(tensors):
        parts = t.reshape(-1).split(_CHUNK)
        chunks.extend(parts)
        owners.extend([i] * len(parts))
    sumsq = torch.zeros(len(tensors), dtype=torch.float64, device=device).index_add_(
        0,
        torch.tensor(owners, device=device),
        torch.stack(torch._foreach_norm(chunks, 2, dtype=acc)).double().square(),
    )
    sums = torch.stack([t.sum(dtype=acc) for t in tensors]).double()
    return sums, sumsq


def mean_and_scale(
    tensors: list[Tensor], sums: Tensor, sumsq: Tensor, unbiased: bool, eps: float
) -> tuple[list[float], list[float]]:
    """Per-tensor mean and ``scale = 1 / (std + eps)`` (0 for constant tensors), from moments.

    Where one-pass moments are ill-conditioned (|mean| large against std) the statistics of that
    tensor are recomputed with two passes in float64.
    """
    n = torch.tensor([t.numel() for t in tensors], dtype=torch.float64, device=sums.device)
    mean = sums / n
    var = ((sumsq - n * mean.square()) / (n - 1 if unbiased else n)).clamp_min(0.0)
    bad = (var < ILL_CONDITIONED * mean.square()).nonzero().flatten().tolist()
    for i in bad:  # cancellation: two passes for these few tensors
        v, m = torch.var_mean(tensors[i].double(), correction=1 if unbiased else 0)
        var[i], mean[i] = v, m
    scale, _ = _scale_shift(mean, var.sqrt(), eps)
    return mean.tolist(), scale.tolist()


def znorm_(
    grads: Sequence[Tensor],
    *,
    per_channel: bool = False,
    include_1d: bool = False,
    unbiased: bool = True,
    eps: float = 1e-8,
) -> None:
    """Z-score normalise each gradient tensor in place (fast path; equals the reference)."""
    opts = ZNormOptions(per_channel, include_1d, unbiased, eps)
    selected = selected_tensors(grads, opts)
    if not selected:
        return
    if opts.per_channel:
        whole = [g for g in selected if g.dim() < 2]
        correction = 1 if unbiased else 0
        for g in selected:
            if g.dim() >= 2:
                g_acc = g.to(statistics_dtype(g.dtype))
                std, mean = torch.std_mean(
                    g_acc, dim=_per_channel_dims(g), correction=correction, keepdim=True
                )
                scale, _ = _scale_shift(mean.double(), std.double(), eps)
                _normalise_(g, mean, scale.to(g_acc.dtype), g_acc)
        selected = whole
        if not selected:
            return
    for device_tensors in _by_device_and_dtype(selected):
        means, scales = mean_and_scale(
            device_tensors, *torch_moments(device_tensors), unbiased, eps
        )
        for g, m, a in zip(device_tensors, means, scales, strict=True):
            _normalise_(g, m, a)


def _normalise_(
    g: Tensor, mean: Tensor | float, scale: Tensor | float, g_acc: Tensor | None = None
) -> None:
    """``g = (g - mean) * scale`` in place. float32 and float64 tensors are updated in place;
    half-precision ones are computed in float32 (or in ``g_acc``, a float copy of ``g`` that may
    be overwritten, if given) and rounded to ``g``'s dtype once.

    ``(g - mean) * scale``, not ``g * scale + shift``: the latter cancels badly when |mean| >> std.
    """
    if g.dtype in (torch.float32, torch.float64):
        g.sub_(mean).mul_(scale)
        return
    work = g_acc if g_acc is not None else g.float()
    g.copy_(work.sub_(mean).mul_(scale))


def _by_device_and_dtype(tensors: list[Tensor]) -> list[list[Tensor]]:
    groups: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}
    for t in tensors:
        groups.setdefault((t.device, t.dtype), []).append(t)
    return list(groups.values())
