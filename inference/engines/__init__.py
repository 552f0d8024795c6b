"""Engines behind the ``Predictor``: ``torch`` (any device, the reference) and ``openvino`` (CPU).

``create_engine`` picks one. ``auto`` is the fastest installed engine for the device: torch on
CUDA; OpenVINO on CPU where it is installed (``openvino`` is a project dependency), with the
precision chosen as follows (``precision="auto"``):

- int8, when ``python -m training.quantize`` left an int8 model beside the weights whose manifest
  names these weights and records a validation Dice within its gate (0.005) of torch fp32;
- else bf16 where the CPU computes bf16 natively (AMX or AVX512-BF16), f32 otherwise.

Measured speed and accuracy per CPU: ``benchmarks/engines.py`` and ``inference/README.md``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import torch

from inference.engines.cpu import cpu_flags, cpu_model
from models.precision import cpu_supports_bf16, resolve_precision

log = logging.getLogger(__name__)

EngineName = Literal["auto", "torch", "openvino"]
EnginePrecision = Literal["auto", "bf16", "fp32", "int8"]
ENGINES: tuple[str, ...] = ("auto", "torch", "openvino")
PRECISIONS: tuple[str, ...] = ("auto", "bf16", "fp32", "int8")


class Engine(Protocol):
    """Runs the network: ``N x 3 x S x S`` float32 -> ``N x 1 x S x S`` float32 logits (CPU)."""

    name: str
    precision: str
    device: torch.device

    def forward(self, batch: torch.Tensor) -> torch.Tensor: ...

    def describe(self) -> dict[str, Any]: ...


@dataclass
class Built:
    """An engine and the notes on how it was chosen (e.g. why int8 was not used)."""

    engine: Engine
    notes: list[str] = field(default_factory=list)


def create_engine(
    model: torch.nn.Module,
    *,
    image_size: int,
    weights_path: str | Path,
    weights_sha256: str,
    device: torch.device,
    engine: str = "auto",
    precision: str = "auto",
    threads: int | None = None,
) -> Built:
    """Build the engine asked for (ValueError with what to do when it cannot run here)."""
    from inference.engines.openvino_engine import openvino_version

    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    installed = openvino_version() is not None
    if engine == "auto":
        emulated_bf16 = precision == "bf16" and not cpu_supports_bf16()
        engine = "openvino" if device.type == "cpu" and installed and not emulated_bf16 else "torch"
    if engine == "torch":
        from inference.engines.torch_engine import TorchEngine

        if precision == "int8":
            raise ValueError("int8 runs on the openvino engine only (--engine openvino)")
        return Built(TorchEngine(model, device, resolve_precision(precision, device)))
    if device.type != "cpu":
        raise ValueError(f"the openvino engine runs on the CPU, not {device}; use --engine torch")
    if not installed:
        raise ValueError("OpenVINO is not installed: pip install openvino, or --engine torch")
    return _openvino(model, image_size, weights_path, weights_sha256, precision, threads)


def _openvino(
    model: torch.nn.Module,
    image_size: int,
    weights_path: str | Path,
    weights_sha256: str,
    precision: str,
    threads: int | None,
) -> Built:
    from inference.engines import openvino_engine as ove

    notes: list[str] = []
    if precision == "bf16" and not cpu_supports_bf16():
        raise ValueError(
            "this CPU has no native bf16 (AMX or AVX512-BF16): use --precision fp32 or int8"
        )
    if precision in ("auto", "int8"):
        info, why = (
            ove.int8_manifest(weights_path, weights_sha256, image_size)
            if str(weights_path)
            else (None, "no weights file to look beside")
        )
        if info is not None and (precision == "int8" or ove.gate_passed(info)):
            xml, _ = ove.int8_paths(weights_path)
            ir = ove.shared_core().read_model(xml)
            return Built(ove.OpenVINOEngine(ir, "int8", threads=threads, source=xml.name), notes)
        if precision == "int8":
            raise ValueError(f"cannot run int8: {why}")
        notes.append(f"int8 not used: {why if info is None else 'its validation gate failed'}")
        log.info(notes[-1])
        precision = "bf16" if cpu_supports_bf16() else "fp32"
    ir = ove.cached_ir(weights_sha256, model, image_size)
    return Built(ove.OpenVINOEngine(ir, precision, threads=threads, source="converted"), notes)


def runtime_info(built: Built) -> dict[str, Any]:
    """Engine, precision, device, CPU model and flags, engine details and notes (for reports)."""
    engine = built.engine
    return {
        "engine": engine.name,
        "precision": engine.precision,
        "device": str(engine.device),
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        **engine.describe(),
        "notes": list(built.notes),
    }


__all__ = [
    "ENGINES",
    "PRECISIONS",
    "Built",
    "Engine",
    "EngineName",
    "EnginePrecision",
    "create_engine",
    "runtime_info",
]
