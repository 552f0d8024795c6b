"""``build_model(cfg)``: the 2-D ResNet-50-UNet (MONAI FlexibleUNet), trained from scratch."""

from __future__ import annotations

from typing import Any, Literal

import torch
from monai.networks.nets import FlexibleUNet
from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer


class ModelConfig(BaseModel):
    """Everything needed to rebuild the network; stored in every checkpoint card."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    architecture: Literal["flexible_unet"] = "flexible_unet"
    backbone: Literal["resnet18", "resnet34", "resnet50"] = "resnet50"
    spatial_dims: Literal[2] = 2
    in_channels: int = Field(3, ge=1)
    out_channels: int = Field(1, ge=1)
    decoder_channels: tuple[int, int, int, int, int] = (256, 128, 64, 32, 16)
    # Activation-scale options (issue 13's ablation; the releases use the defaults):
    # "group" puts GroupNorm (8 groups, no running statistics) in the decoder instead of
    # BatchNorm; zero_init_residual starts every bottleneck as the identity (Goyal et al. 2017).
    decoder_norm: Literal["batch", "group"] = "batch"
    zero_init_residual: bool = False

    @model_serializer(mode="wrap")
    def _omit_default_options(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Leave the activation-scale options out of a card while they are the defaults: the
        released cards stay byte for byte what they were, and readable by earlier versions."""
        data: dict[str, Any] = handler(self)
        for name in ("decoder_norm", "zero_init_residual"):
            if data.get(name) == type(self).model_fields[name].default:
                data.pop(name)
        return data


DECODER_NORMS: dict[str, tuple[str, dict[str, Any]]] = {
    "batch": ("batch", {"eps": 1e-3, "momentum": 0.1}),  # MONAI's default
    "group": ("group", {"num_groups": 8}),
}


class InputDtype(torch.nn.Module):
    """Run a parameter-free module with autocast off, so it keeps its input's dtype.

    Autocast on CPU runs nearest-neighbour upsampling in float32; in the decoder that turns every
    bf16 feature map into a float32 copy, makes the skip concatenation float32, and the next
    convolution casts it back. Nearest-neighbour upsampling copies values, so running it in bf16
    changes no number and saves those copies (forward and backward).
    """

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return self.module(x)  # type: ignore[no-any-return]


def zero_init_residual(model: torch.nn.Module) -> torch.nn.Module:
    """Zero the last BatchNorm scale of every bottleneck, so each residual block starts as the
    identity and the residual stream does not grow with depth."""
    for module in model.modules():
        last = getattr(module, "bn3", None)
        if isinstance(last, torch.nn.BatchNorm2d):
            torch.nn.init.zeros_(last.weight)
    return model


def build_model(cfg: ModelConfig | dict[str, Any] | None = None) -> torch.nn.Module:
    """Build the network. Input: ``B x in_channels x H x W`` with H and W multiples of 32 (the
    preprocessing guarantees it). Output: logits of shape ``B x out_channels x H x W``.

    ``pretrained`` is always False: no weights are downloaded, ever. The decoder does not pad
    (``is_pad=False``: with multiples of 32 there is nothing to pad, and the pad would be an
    autocast float32 copy) and upsamples in its input's dtype (``InputDtype``); neither has
    parameters, so checkpoints are unaffected.
    """
    if cfg is None:
        cfg = ModelConfig()
    elif isinstance(cfg, dict):
        cfg = ModelConfig.model_validate(cfg)
    net = FlexibleUNet(
        in_channels=cfg.in_channels,
        out_channels=cfg.out_channels,
        backbone=cfg.backbone,
        pretrained=False,
        decoder_channels=cfg.decoder_channels,
        spatial_dims=cfg.spatial_dims,
        is_pad=False,
        norm=DECODER_NORMS[cfg.decoder_norm],
    )
    if cfg.zero_init_residual:
        zero_init_residual(net)
    for block in net.decoder.blocks:
        upsample = block.upsample
        inner = getattr(upsample, "upsample_non_trainable", None)
        if isinstance(upsample, torch.nn.Module) and isinstance(inner, torch.nn.Module):
            upsample.upsample_non_trainable = InputDtype(inner)
    return net
