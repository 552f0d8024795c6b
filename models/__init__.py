"""The ResNet-50-UNet, checkpoint I/O and the ZNorm optimizer family."""

from models.network import ModelConfig, build_model

__all__ = ["ModelConfig", "build_model"]

from pathlib import Path  # noqa: E402

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
BUNDLED_CHECKPOINT = WEIGHTS_DIR / "lgg-resnet50-unet-znorm.safetensors"
"""The release model shipped with the repository (with its card beside it, same stem .json)."""
