"""What the model card records about how a checkpoint was made: library versions, hardware."""

from __future__ import annotations

import platform
import sys
from typing import Any

import numpy as np
import torch

from training.runtime import Runtime, cpu_model


def library_versions() -> dict[str, str]:
    import monai

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "numpy": np.__version__,
    }


def hardware(runtime: Runtime) -> dict[str, Any]:
    info: dict[str, Any] = {
        "device": str(runtime.device),
        "precision": runtime.precision,
        "channels_last": runtime.channels_last,
        "world_size": runtime.world_size,
        "cpu": cpu_model(),
        "cpu_threads": torch.get_num_threads(),
        "platform": sys.platform,
    }
    if runtime.device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(runtime.device)
    return info
