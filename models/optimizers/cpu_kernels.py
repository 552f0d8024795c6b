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
    # Branch-free weight decay: L2 adds l2 * p to the gradient, decoupled multiplies p by decay.
    l2 = np.float32(0.0 if decoupled else weight_decay)
    decay = np.float32(1.0 - lr * weight_decay if decoupled else 1.0)
    step32 = np.float32(step_size)
    bc2 = np.float32(bias_correction2_sqrt)
    eps32 = np.float32(eps)
    for i in numba.prange(p.size):
        pi = p[i] * decay
        gi = (g[i] - mean32) * scale32 + l2 * p[i]
        mi = m[i] + one_minus_beta1 * (gi - m[i])
        vi = beta2_32 * v[i] + one_minus_beta2 * gi * gi
        m[i] = mi
        v[i] = vi
        p[i] = pi - step32 * (mi / (np.sqrt(vi) / bc2 + eps32))


PARALLEL_MIN = 1 << 16
"""Arrays smaller than this take the serial kernels: a parallel launch costs ~20 us, more than
the work. (The BatchNorm and bias tensors of the ResNet-50-UNet are all far below it.)"""

# numba's on-disk cache keys on the Python function, so only one variant of each function may be
# cached: the parallel one (slow to compile). The serial variants compile in about a second.
_sums_parallel = numba.njit(_sums, parallel=True, fastmath=True, nogil=True, cache=True)
_adam_parallel = numba.njit(_adam, parallel=True, nogil=True, cache=True)
_sums_serial = numba.njit(_sums, fastmath=True, nogil=True)
_adam_serial = numba.njit(_adam, nogil=True)


def sums(x: np.ndarray) -> tuple[float, float]:
    """(sum, sum of squares) of a 1-D float32 array, accumulated in float64."""
    return (_sums_parallel if x.size >= PARALLEL_MIN else _sums_serial)(x)


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
    kernel = _adam_parallel if p.size >= PARALLEL_MIN else _adam_serial
    kernel(
        p, g, m, v, mean, scale, lr, beta1, beta2, eps, weight_decay, decoupled,
        lr / (1.0 - beta1**step), (1.0 - beta2**step) ** 0.5,
    )  # fmt: skip
