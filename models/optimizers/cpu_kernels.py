"""Fused CPU kernels for ZNormAdam (numba): one read of each gradient for its statistics, then
one pass that normalises and applies the Adam update together, so the normalised gradient is
never written to memory. Compiled on first use and cached on disk (``cache=True``).

Two layouts, each a fixed number of parallel launches per parameter group, whatever the number
of tensors:
- ``znorm_adam_update`` (one launch): threads take whole tensors (``tensor_bins``, balanced
  longest-first) and update each right after its statistics pass, while its gradient is still
  in cache. Used where whole tensors balance over the threads (a ResNet's do).
- ``sums`` then ``adam_update`` (two launches): the tensors are cut into chunks of at most
  ``CHUNK`` elements (a ``ChunkTable``) and the threads share out the chunks. Used where one
  tensor is too large a share of the work.
The tensors reach the kernels as addresses (``Tensor.data_ptr()``), which the caller keeps
alive for the call.

The arithmetic follows ``torch.optim.Adam`` (``_single_tensor_adam``) operation for operation:
    g_hat = (g - mean) * scale            [+ wd * p, or p *= 1 - lr * wd when decoupled]
                                          (mean as two float32 parts, so |mean| >> std costs
                                           no precision beyond one rounding)
    m = m + (1 - beta1) * (g_hat - m)     (lerp)
    v = beta2 * v + (1 - beta2) * g_hat * g_hat
    p = p - step_size * m / (sqrt(v) / bias_correction2_sqrt + eps)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic

CHUNK = 1 << 15
"""Elements per chunk: 128 KiB of float32, enough work to hide the per-chunk cost, small enough
that two threads stay balanced over a ResNet's few very large tensors."""


def _f32_pointer_intrinsic(typingctx: Any, address: Any) -> Any:
    """Reinterpret an integer address as a ``float32*`` (indexable in nopython code)."""
    pointer = types.CPointer(types.float32)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.inttoptr(args[0], context.get_value_type(pointer))

    return pointer(types.intp), codegen


_f32_pointer: Any = intrinsic(_f32_pointer_intrinsic)


class ChunkTable(NamedTuple):
    """Chunk ``c`` covers elements ``start[c]:stop[c]`` of tensor ``tensor[c]``; the chunks of
    tensor ``t`` begin at ``first[t]`` (in tensor order, for ``np.add.reduceat``)."""

    tensor: np.ndarray
    start: np.ndarray
    stop: np.ndarray
    first: np.ndarray


def chunk_table(sizes: Sequence[int], chunk: int = CHUNK) -> ChunkTable:
    """The chunks of tensors with ``sizes`` elements (every size >= 1)."""
    if any(n < 1 for n in sizes):
        raise ValueError("chunk_table needs tensors with at least one element")
    counts = np.array([-(-n // chunk) for n in sizes], dtype=np.int64)
    tensor = np.repeat(np.arange(len(sizes), dtype=np.int64), counts)
    first = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
    start = (np.arange(tensor.size, dtype=np.int64) - first[tensor]) * chunk
    stop = np.minimum(start + chunk, np.asarray(sizes, dtype=np.int64)[tensor])
    return ChunkTable(tensor, start, stop, first)


@numba.njit(parallel=True, fastmath=True, nogil=True, cache=True)
def _chunk_sums(
    g_addr: np.ndarray, tensor: np.ndarray, start: np.ndarray, stop: np.ndarray, out: np.ndarray
) -> None:
    for c in numba.prange(tensor.size):
        g = _f32_pointer(g_addr[tensor[c]])
        s = 0.0
        q = 0.0
        for i in range(start[c], stop[c]):
            x = np.float64(g[i])
            s += x
            q += x * x
        out[c, 0] = s
        out[c, 1] = q


@numba.njit(nogil=True, inline="always")
def _adam_range(
    p: Any, g: Any, m: Any, v: Any, start: int, stop: int, mean: float, scale: float,
    step_size: float, bias_correction2_sqrt: float, beta1: float, beta2: float, eps: float,
    weight_decay: float, lr: float, decoupled: bool,
) -> None:  # fmt: skip
    """The Adam update of elements ``start:stop`` on ``(g - mean) * scale``, in float32."""
    # mean as float32 hi + lo: g - hi is exact near the mean (Sterbenz), so |mean| >> std costs
    # no precision beyond one rounding.
    mean_hi = np.float32(mean)
    mean_lo = np.float32(mean - np.float64(mean_hi))
    scale32 = np.float32(scale)
    one_minus_beta1 = np.float32(1.0 - beta1)
    beta2_32 = np.float32(beta2)
    one_minus_beta2 = np.float32(1.0 - beta2)
    # Branch-free weight decay: L2 adds l2 * p to the gradient, decoupled multiplies p by decay.
    l2 = np.float32(0.0 if decoupled else weight_decay)
    decay = np.float32(1.0 - lr * weight_decay if decoupled else 1.0)
    step32 = np.float32(step_size)
    bc2 = np.float32(bias_correction2_sqrt)
    eps32 = np.float32(eps)
    for i in range(start, stop):
        pi = p[i] * decay
        gi = ((g[i] - mean_hi) - mean_lo) * scale32 + l2 * p[i]
        mi = m[i] + one_minus_beta1 * (gi - m[i])
        vi = beta2_32 * v[i] + one_minus_beta2 * gi * gi
        m[i] = mi
        v[i] = vi
        p[i] = pi - step32 * (mi / (np.sqrt(vi) / bc2 + eps32))


@numba.njit(parallel=True, nogil=True, cache=True)
def _chunk_adam(
    p_addr: np.ndarray, g_addr: np.ndarray, m_addr: np.ndarray, v_addr: np.ndarray,
    tensor: np.ndarray, start: np.ndarray, stop: np.ndarray, mean: np.ndarray, scale: np.ndarray,
    step_size: np.ndarray, bias_correction2_sqrt: np.ndarray, beta1: float, beta2: float,
    eps: float, weight_decay: float, lr: float, decoupled: bool,
) -> None:  # fmt: skip
    for c in numba.prange(tensor.size):
        t = tensor[c]
        _adam_range(
            _f32_pointer(p_addr[t]), _f32_pointer(g_addr[t]), _f32_pointer(m_addr[t]),
            _f32_pointer(v_addr[t]), start[c], stop[c], mean[t], scale[t], step_size[t],
            bias_correction2_sqrt[t], beta1, beta2, eps, weight_decay, lr, decoupled,
        )  # fmt: skip


@numba.njit(fastmath=True, nogil=True, cache=True)
def _moments(g: Any, n: int) -> tuple[float, float]:
    s = 0.0
    q = 0.0
    for i in range(n):
        x = np.float64(g[i])
        s += x
        q += x * x
    return s, q


@numba.njit(nogil=True, cache=True)
def _two_pass(g: Any, n: int, correction: int) -> tuple[float, float]:
    mean = 0.0
    for i in range(n):
        mean += np.float64(g[i])
    mean /= n
    q = 0.0
    for i in range(n):
        d = np.float64(g[i]) - mean
        q += d * d
    return mean, q / (n - correction)


@numba.njit(nogil=True, cache=True)
def _mean_and_scale(
    g: Any, n: int, correction: int, eps: float, ill_conditioned: float, constant_rtol: float
) -> tuple[float, float]:
    """``models.optimizers.znorm.mean_and_scale`` for one tensor."""
    s, q = _moments(g, n)
    mean = s / n
    var = max((q - n * mean * mean) / (n - correction), 0.0)
    if var < ill_conditioned * mean * mean:
        mean, var = _two_pass(g, n, correction)
    std = np.sqrt(var)
    if std == 0.0 or std <= constant_rtol * abs(mean):
        return mean, 0.0
    return mean, 1.0 / (std + eps)


@numba.njit(parallel=True, nogil=True, cache=True)
def _tensorwise_znorm_adam(
    bin_start: np.ndarray,
    order: np.ndarray,
    sizes: np.ndarray,
    normalise: np.ndarray,
    p_addr: np.ndarray,
    g_addr: np.ndarray,
    m_addr: np.ndarray,
    v_addr: np.ndarray,
    step_size: np.ndarray,
    bias_correction2_sqrt: np.ndarray,
    correction: int,
    znorm_eps: float,
    ill_conditioned: float,
    constant_rtol: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    lr: float,
    decoupled: bool,
) -> None:
    for b in numba.prange(bin_start.size - 1):
        for k in range(bin_start[b], bin_start[b + 1]):
            t = order[k]
            n = sizes[t]
            g = _f32_pointer(g_addr[t])
            mean, scale = 0.0, 1.0
            if normalise[t]:
                mean, scale = _mean_and_scale(
                    g, n, correction, znorm_eps, ill_conditioned, constant_rtol
                )
            # Right after the statistics pass, so g is read again from cache, not memory.
            _adam_range(
                _f32_pointer(p_addr[t]), g, _f32_pointer(m_addr[t]), _f32_pointer(v_addr[t]),
                0, n, mean, scale, step_size[t], bias_correction2_sqrt[t], beta1, beta2, eps,
                weight_decay, lr, decoupled,
            )  # fmt: skip


class AdamSettings(NamedTuple):
    """One param group's Adam hyper-parameters; ``step`` is each tensor's step count after
    this step."""

    step: np.ndarray
    lr: float
    beta1: float
    beta2: float
    eps: float
    weight_decay: float
    decoupled: bool

    def step_factors(self) -> tuple[np.ndarray, np.ndarray]:
        """Per tensor ``step_size = lr / (1 - beta1**step)`` and ``sqrt(1 - beta2**step)``."""
        return self.lr / (1.0 - self.beta1**self.step), np.sqrt(1.0 - self.beta2**self.step)


def sums(g_addr: np.ndarray, table: ChunkTable) -> np.ndarray:
    """Per tensor (sum, sum of squares) of the float32 tensors at ``g_addr``, in float64:
    an array of shape (number of tensors, 2)."""
    out = np.empty((table.tensor.size, 2), dtype=np.float64)
    _chunk_sums(g_addr, table.tensor, table.start, table.stop, out)
    return np.add.reduceat(out, table.first, axis=0)


def adam_update(
    p_addr: np.ndarray,
    g_addr: np.ndarray,
    m_addr: np.ndarray,
    v_addr: np.ndarray,
    table: ChunkTable,
    adam: AdamSettings,
    *,
    mean: np.ndarray,
    scale: np.ndarray,
) -> None:
    """One Adam update, in place, of the float32 tensors at the addresses, on ``(g - mean) *
    scale``; ``mean`` and ``scale`` are per tensor."""
    _chunk_adam(
        p_addr, g_addr, m_addr, v_addr, table.tensor, table.start, table.stop, mean, scale,
        *adam.step_factors(), adam.beta1, adam.beta2, adam.eps, adam.weight_decay, adam.lr,
        adam.decoupled,
    )  # fmt: skip


class TensorBins(NamedTuple):
    """Whole tensors shared out over the threads: thread ``b`` takes tensors
    ``order[bin_start[b]:bin_start[b + 1]]``."""

    bin_start: np.ndarray
    order: np.ndarray
    sizes: np.ndarray


def tensor_bins(sizes: Sequence[int], threads: int) -> TensorBins | None:
    """Longest-first greedy bins of near-equal work, one per thread, or None when one tensor is
    too large a share of the work (over ``1 / (2 * threads)``) for whole tensors to balance."""
    threads = max(threads, 1)
    if not sizes or (threads > 1 and max(sizes) * 2 * threads > sum(sizes)):
        return None
    loads = [0] * threads
    members: list[list[int]] = [[] for _ in range(threads)]
    for t in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
        b = loads.index(min(loads))
        members[b].append(t)
        loads[b] += sizes[t]
    bin_start = np.cumsum([0] + [len(m) for m in members]).astype(np.int64)
    order = np.array([t for m in members for t in m], dtype=np.int64)
    return TensorBins(bin_start, order, np.asarray(sizes, dtype=np.int64))


def znorm_adam_update(
    p_addr: np.ndarray,
    g_addr: np.ndarray,
    m_addr: np.ndarray,
    v_addr: np.ndarray,
    bins: TensorBins,
    adam: AdamSettings,
    *,
    normalise: np.ndarray,
    unbiased: bool,
    znorm_eps: float,
    ill_conditioned: float,
    constant_rtol: float,
) -> None:
    """Statistics and Adam update in one launch: each thread takes whole tensors and updates
    each right after its statistics pass, while its gradient is still in cache. Tensors with
    ``normalise[t]`` False are updated on their raw gradient."""
    _tensorwise_znorm_adam(
        bins.bin_start, bins.order, bins.sizes, normalise, p_addr, g_addr, m_addr, v_addr,
        *adam.step_factors(), 1 if unbiased else 0, znorm_eps, ill_conditioned, constant_rtol,
        adam.beta1, adam.beta2, adam.eps, adam.weight_decay, adam.lr, adam.decoupled,
    )  # fmt: skip
