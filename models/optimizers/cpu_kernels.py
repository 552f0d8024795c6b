"""Fused CPU kernels for ZNormAdam (numba): one read of each gradient for its statistics, then
one pass that normalises and applies the Adam update together, so the normalised gradient is
never written to memory. Compiled on first use and cached on disk (``cache=True``).

The arithmetic follows ``torch.optim.Adam`` (``_single_tensor_adam``) operation for operation:
    g_hat = (g - mean) * scale            [+ wd * p, or p *= 1 - lr * wd when decoupled]
    m = m + (1 - beta1) * (g_hat - m)     (lerp)
    v = beta2 * v + (1 - beta2) * g_hat * g_hat
    p = p - step_size * m / (sqrt(v) / bias_correction2_sqrt + eps)
"""

from __future__ import annotations

import numba
import numpy as np

PARALLEL_MIN = 1 << 16
"""Tensors smaller than this run the serial kernels: a parallel launch costs more than it saves."""


def _sums(x: np.ndarray) -> tuple[float, float]:
    s = 0.0
    q = 0.0
    for i in numba.prange(x.size):
        xi = np.float64(x[i])
        s += xi
        q += xi * xi
    return s, q


def _adam(
    p: np.ndarray,
    g: np.ndarray,
    m: np.ndarray,
    v: np.ndarray,
    mean: float,
    scale: float,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    decoupled: bool,
    step_size: float,
    bias_correction2_sqrt: float,
) -> None:
    mean32 = np.float32(mean)
    scale32 = np.float32(scale)
    one_minus_beta1 = np.float32(1.0 - beta1)
    beta2_32 = np.float32(beta2)
    one_minus_beta2 = np.float32(1.0 - beta2)
    wd32 = np.float32(weight_decay)
    decay32 = np.float32(1.0 - lr * weight_decay)
    step32 = np.float32(step_size)
    bc2 = np.float32(bias_correction2_sqrt)
    eps32 = np.float32(eps)
    for i in numba.prange(p.size):
        gi = (g[i] - mean32) * scale32
        pi = p[i]
        if weight_decay != 0.0:
            if decoupled:
                pi = pi * decay32
            else:
                gi = gi + wd32 * pi
        mi = m[i] + one_minus_beta1 * (gi - m[i])
        vi = beta2_32 * v[i] + one_minus_beta2 * gi * gi
        m[i] = mi
        v[i] = vi
        p[i] = pi - step32 * (mi / (np.sqrt(vi) / bc2 + eps32))


sums_parallel = numba.njit(_sums, parallel=True, fastmath=True, nogil=True, cache=True)
sums_serial = numba.njit(_sums, fastmath=True, nogil=True, cache=True)
adam_parallel = numba.njit(_adam, parallel=True, nogil=True, cache=True)
adam_serial = numba.njit(_adam, nogil=True, cache=True)


def sums(x: np.ndarray) -> tuple[float, float]:
    """(sum, sum of squares) of a 1-D float32 array, accumulated in float64."""
    return (sums_parallel if x.size >= PARALLEL_MIN else sums_serial)(x)


def adam_update(
    p: np.ndarray,
    g: np.ndarray,
    m: np.ndarray,
    v: np.ndarray,
    *,
    mean: float,
    scale: float,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    decoupled: bool,
    step: float,
) -> None:
    """One Adam update of 1-D float32 arrays in place, on ``(g - mean) * scale``."""
    kernel = adam_parallel if p.size >= PARALLEL_MIN else adam_serial
    kernel(
        p, g, m, v, mean, scale, lr, beta1, beta2, eps, weight_decay, decoupled,
        lr / (1.0 - beta1**step), (1.0 - beta2**step) ** 0.5,
    )  # fmt: skip
