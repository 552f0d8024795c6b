"""The one precision rule, for training, evaluation and inference alike: bf16 where the hardware
computes it natively, fp32 elsewhere."""

from __future__ import annotations

from typing import Literal

import torch

Precision = Literal["auto", "bf16", "fp32"]


def cpu_supports_bf16() -> bool:
    """True where this CPU runs bf16 convolutions natively (AMX or AVX512-BF16 via oneDNN)."""
    if not torch.backends.mkldnn.is_available():
        return False
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def resolve_precision(precision: str, device: torch.device) -> Literal["bf16", "fp32"]:
    """``auto`` -> bf16 where the hardware has it natively, else fp32; ValueError otherwise."""
    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"precision must be 'auto', 'bf16' or 'fp32', not {precision!r}")
    if precision != "auto":
        return "bf16" if precision == "bf16" else "fp32"
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_supports_bf16() else "fp32"
    return "fp32"
