"""Response bodies of the API (and their OpenAPI examples)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from models.card import ModelCard

MODEL_VERSION_EXAMPLE = "lgg-resnet50-unet-znorm-1.0.0+3f2a9c81d0b7"


class Problem(BaseModel):
    """Every error answer: a message saying what was wrong and what to do."""

    detail: str = Field(examples=["the PNG data is truncated or corrupt"])


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ready", "not ready"]
    model_version: str | None = None
    reason: str | None = Field(None, description="why the model is not serving")

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"status": "ready", "model_version": MODEL_VERSION_EXAMPLE},
                {"status": "not ready", "reason": "model not loaded: checkpoint not found: ..."},
            ]
        }
    )


class ModelInfo(BaseModel):
    model_version: str
    precision: str | None = None
    device: str | None = None
    tta: bool | None = None
    threshold: float
    card: ModelCard = Field(description="the checkpoint's model card, as stored")
    runtime: dict[str, Any] | None = Field(
        None,
        description="what runs the network: engine (torch, openvino), precision (fp32, bf16, "
        "int8), device, CPU model and its bf16/AMX/VNNI flags, library versions, notes",
    )


class SegmentResult(BaseModel):
    """``POST /v1/segment?format=json``."""

    shape: tuple[int, int] = Field(description="height, width (the input's)")
    tumour_pixels: int
    tumour_fraction: float
    max_probability: float
    threshold: float
    mask_png: str = Field(description="the mask as a PNG (0 background, 255 tumour)")
    contours: list[list[tuple[float, float]]] = Field(
        description="tumour outlines, each a closed polygon of (x, y) = (column, row) points "
        "in pixel coordinates, lying halfway between tumour and background pixels"
    )
    contours_truncated: bool = Field(description="true when only the longest were kept")
    warnings: list[str] = Field(
        default_factory=list,
        description="what the client should know about the input, e.g. that a JPEG's lossy "
        "compression changed its pixels (also in the X-Input-Warning header)",
    )
    model_version: str

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "shape": [256, 256],
                    "tumour_pixels": 2,
                    "tumour_fraction": 3.0517578125e-05,
                    "max_probability": 0.97,
                    "threshold": 0.5,
                    "mask_png": "iVBORw0KGgo...",
                    "contours": [[[120.5, 80.0], [121.0, 79.5], [121.5, 80.0], [120.5, 80.0]]],
                    "contours_truncated": False,
                    "model_version": MODEL_VERSION_EXAMPLE,
                }
            ]
        }
    )


class SliceSummaryOut(BaseModel):
    index: int = Field(description="slice number along the volume's 3rd axis, from 0")
    slice: int | None = Field(None, description="the same slice numbered from 1, as shown to users")
    tumour_pixels: int
    tumour_fraction: float
    tumour_mm2: float | None = Field(None, description="absent when the spacing is unknown")
    max_probability: float


class VolumeResult(BaseModel):
    """``POST /v1/segment/volume?format=json``."""

    shape: tuple[int, int, int] = Field(description="height, width, slices (the input's grid)")
    source: Literal["nifti", "zip"]
    tumour_voxels: int
    tumour_slices: int = Field(description="slices with at least one tumour pixel")
    voxel_volume_mm3: float | None = Field(
        None,
        description="from the NIfTI's spacing and units; absent for a zip or an unusable "
        "spacing (see volume_unavailable)",
    )
    voxel_spacing_mm: tuple[float, float, float] | None = Field(
        None, description="along the array's axes (rows, columns, slices); absent with the volume"
    )
    tumour_volume_ml: float | None = Field(None, description="absent when voxel_volume_mm3 is")
    volume_unavailable: str | None = Field(
        None, description="why there is no volume in ml (the tumour is then in voxels only)"
    )
    slices: list[SliceSummaryOut]
    mask_nifti_gz: str = Field(description="the mask as .nii.gz, uint8 0/1")
    warnings: list[str] = Field(
        default_factory=list,
        description="what the client should know about the input, e.g. that a JPEG's lossy "
        "compression changed its pixels (also in the X-Input-Warning header)",
    )
    model_version: str


class EvaluateResult(BaseModel):
    """``POST /v1/evaluate``: agreement of the model's mask with a ground-truth mask."""

    dice: float = Field(description="1.0 when both masks are empty")
    iou: float = Field(description="1.0 when both masks are empty")
    predicted_pixels: int
    true_pixels: int
    intersection_pixels: int
    total_pixels: int
    shape: tuple[int, int]
    warnings: list[str] = Field(
        default_factory=list,
        description="what the client should know about the input, e.g. that a JPEG's lossy "
        "compression changed its pixels (also in the X-Input-Warning header)",
    )
    model_version: str

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "dice": 0.91,
                    "iou": 0.83,
                    "predicted_pixels": 1210,
                    "true_pixels": 1133,
                    "intersection_pixels": 1066,
                    "total_pixels": 65536,
                    "shape": [256, 256],
                    "model_version": MODEL_VERSION_EXAMPLE,
                }
            ]
        }
    )
