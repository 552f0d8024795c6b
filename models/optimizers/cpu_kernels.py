"""Fused CPU kernels for ZNormAdam (numba): one read of each gradient for its statistics, then
one pass that normalises and applies the Adam update together, so the normalised gradient is
never written to memory. Compiled on first use and cached on disk (``cache=True``).

Each pass is one parallel launch over a whole parameter group: the tensors are cut into chunks
of at most ``CHUNK`` elements (a ``ChunkTable``) and the threads share out the chunks, so small
tensors cost a chunk each instead of a launch each. The tensors reach the kernels as addresses
(``Tensor.data_ptr()``), which the caller keeps alive for the call.

The arithmetic follows ``torch.optim.Adam`` (``_single_tensor_adam``) operation for operation:
    g_hat = (g - mean) * scale            [+ wd * p, or p *= 1 - lr * wd when decoupled]
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


@numba.njit(parallel=True, nogil=True, cache=True)
def _chunk_adam(
    p_addr: np.ndarray,
    g_addr: np.ndarray,
    m_addr: np.ndarray,
    v_addr: np.ndarray,
    tensor: np.ndarray,
    start: np.ndarray,
    stop: np.ndarray,
    mean: np.ndarray,
    scale: np.ndarray,
    step_size: np.ndarray,
    bias_correction2_sqrt: np.ndarray,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    lr: float,
    decoupled: bool,
) -> None:
    one_minus_beta1 = np.float32(1.0 - beta1)
    beta2_32 = np.float32(beta2)
    one_minus_beta2 = np.float32(1.0 - beta2)
    # Branch-free weight decay: L2 adds l2 * p to the gradient, decoupled multiplies p by decay.
    l2 = np.float32(0.0 if decoupled else weight_decay)
    decay = np.float32(1.0 - lr * weight_decay if decoupled else 1.0)
    eps32 = np.float32(eps)
    for c in numba.prange(tensor.size):
        t = tensor[c]
        p = _f32_pointer(p_addr[t])
        g = _f32_pointer(g_addr[t])
        m = _f32_pointer(m_addr[t])
        v = _f32_pointer(v_addr[t])
        mean32 = np.float32(mean[t])
        scale32 = np.float32(scale[t])
        step32 = np.float32(step_size[t])
        bc2 = np.float32(bias_correction2_sqrt[t])
        for i in range(start[c], stop[c]):
            pi = p[i] * decay
            gi = (g[i] - mean32) * scale32 + l2 * p[i]
            mi = m[i] + one_minus_beta1 * (gi - m[i])
            vi = beta2_32 * v[i] + one_minus_beta2 * gi * gi
            m[i] = mi
            v[i] = vi
            p[i] = pi - step32 * (mi / (np.sqrt(vi) / bc2 + eps32))


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
    *,
    mean: np.ndarray,
    scale: np.ndarray,
    step: np.ndarray,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    decoupled: bool,
) -> None:
    """One Adam update, in place, of the float32 tensors at the addresses, on ``(g - mean) *
    scale``; ``mean``, ``scale`` and ``step`` (the step count after this step) are per tensor."""
    step_size = lr / (1.0 - beta1**step)
    bias_correction2_sqrt = np.sqrt(1.0 - beta2**step)
    _chunk_adam(
        p_addr, g_addr, m_addr, v_addr, table.tensor, table.start, table.stop,
        mean, scale, step_size, bias_correction2_sqrt,
        beta1, beta2, eps, weight_decay, lr, decoupled,
    )  # fmt: skip
