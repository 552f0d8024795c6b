"""The reference engine: the torch model itself (any device), fp32 or bf16 autocast."""

from __future__ import annotations

from typing import Any

import torch

_CONVOLUTIONS = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.ConvTranspose2d)


def _cast_convolutions(model: torch.nn.Module, dtype: torch.dtype) -> None:
    """Store convolution weights in ``dtype`` once, instead of autocast casting them per call.

    Autocast runs convolutions in bf16 anyway, casting the fp32 weights on every forward
    (about a tenth of the CPU time at batch 1); pre-cast weights give bitwise the same outputs.
    """
    for module in model.modules():
        if isinstance(module, _CONVOLUTIONS):
            module.to(dtype)


class TorchEngine:
    """``forward``: ``N x 3 x S x S`` float32 -> ``N x 1 x S x S`` float32 logits (on CPU).

    Thread-safe: inference mode changes no state.
    """

    name = "torch"

    def __init__(self, model: torch.nn.Module, device: torch.device, precision: str) -> None:
        if precision not in ("bf16", "fp32"):
            raise ValueError(f"the torch engine runs fp32 or bf16, not {precision!r}")
        self.device = device
        self.precision = precision
        self.model = model.to(device).eval()
        if precision == "bf16":
            _cast_convolutions(self.model, torch.bfloat16)
        self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        x = batch.to(self.device).contiguous(memory_format=torch.channels_last)
        with (
            torch.inference_mode(),
            torch.autocast(
                self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"
            ),
        ):
            return self.model(x).float().cpu()

    def describe(self) -> dict[str, Any]:
        return {"torch": torch.__version__, "threads": torch.get_num_threads()}
