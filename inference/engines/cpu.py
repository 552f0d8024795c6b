"""The CPU model and the flags that decide engine speed, for reports (/v1/model, evaluate); whether
bf16 is native is `models.precision.cpu_supports_bf16`, the one precision rule."""

from __future__ import annotations

import platform
from functools import lru_cache
from pathlib import Path

REPORTED_FLAGS = (
    "avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_bf16",
    "amx_int8",
)  # fmt: skip
"""The flags that decide the engines' speed: fp32 (AVX2/AVX-512 FMA), int8 (VNNI, AMX-INT8),
bf16 (AVX512-BF16, AMX-BF16)."""


@lru_cache
def _cpuinfo() -> tuple[str, frozenset[str]]:
    model, flags = platform.processor() or platform.machine(), frozenset[str]()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: the model name only
        return model, flags
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            model = value.strip()
        elif key.strip() == "flags":
            flags = frozenset(value.split())
        if flags and model:
            break
    return model, flags


def cpu_model() -> str:
    return _cpuinfo()[0]


def cpu_flags() -> list[str]:
    """Those of :data:`REPORTED_FLAGS` this CPU has (empty where /proc/cpuinfo is absent)."""
    flags = _cpuinfo()[1]
    return [flag for flag in REPORTED_FLAGS if flag in flags]

