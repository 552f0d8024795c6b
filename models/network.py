"""``build_model(cfg)``: the 2-D ResNet-50-UNet (MONAI FlexibleUNet), trained from scratch."""

from __future__ import annotations

from typing import Any, Literal

import torch
from monai.networks.nets import FlexibleUNet
from pydantic import BaseModel, ConfigDict, Field


class ModelConfig(BaseModel):
    """Everything needed to rebuild the network; stored in every checkpoint card."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    architecture: Literal["flexible_unet"] = "flexible_unet"
    backbone: Literal["resnet18", "resnet34", "resnet50"] = "resnet50"
    spatial_dims: Literal[2] = 2
    in_channels: int = Field(3, ge=1)
    out_channels: int = Field(1, ge=1)
    decoder_channels: tuple[int, int, int, int, int] = (256, 128, 64, 32, 16)


def build_model(cfg: ModelConfig | dict[str, Any] | None = None) -> torch.nn.Module:
    """Build the network. Output: logits of shape ``B x out_channels x H x W``.

    ``pretrained`` is always False: no weights are downloaded, ever.
    """
    if cfg is None:
        cfg = ModelConfig()
    elif isinstance(cfg, dict):
        cfg = ModelConfig.model_validate(cfg)
    return FlexibleUNet(
        in_channels=cfg.in_channels,
        out_channels=cfg.out_channels,
        backbone=cfg.backbone,
        pretrained=False,
        decoder_channels=cfg.decoder_channels,
        spatial_dims=cfg.spatial_dims,
    )
