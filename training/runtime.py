"""Where this process computes: the device, its precision and memory format (``Runtime``).

``training.distributed`` builds the ``Runtime`` of each process (joining the torchrun group when
there is one); this module only knows devices.
"""

from __future__ import annotations

import contextlib
import platform
from dataclasses import dataclass
from typing import Any

import torch

from models.precision import resolve_precision


@dataclass(frozen=True)
class Runtime:
    """The resolved device, precision and process group of this process."""

    device: torch.device
    amp_dtype: torch.dtype | None  # None = fp32
    channels_last: bool
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def precision(self) -> str:
        return "bf16" if self.amp_dtype == torch.bfloat16 else "fp32"

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """bf16 autocast on this device, or nothing for fp32."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def to_input(self, tensor: torch.Tensor) -> torch.Tensor:
        """Move a batch to the device in the memory format the model expects."""
        tensor = tensor.to(self.device, non_blocking=True)
        if self.channels_last and tensor.ndim == 4:
            tensor = tensor.contiguous(memory_format=torch.channels_last)
        return tensor


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` picks CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' was requested but no CUDA GPU is available; "
                               "choose device cpu (or auto)")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype: ``models.precision``'s rule, the one the Predictor follows too."""
    return torch.bfloat16 if resolve_precision(amp, device) == "bf16" else None


def cpu_model() -> str:
    """This machine's CPU, as /proc/cpuinfo names it (else what ``platform`` knows)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
