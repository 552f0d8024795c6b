"""One volume case through the API, whatever it arrived as (three NIfTI sequence files, or a
DICOM study): its memory admission, its segmentation, its answer and its evaluation.

The routes of ``routers/sequences.py`` and ``routers/dicom.py`` differ only in how the case is
read; from the stacked ``H x W x Z x 3`` volume on the FLAIR's grid on, they share this module.
Units follow ``inference.decode.voxel_spacing_mm``: mm² per slice, ml per volume, HD95 in mm
(``hd95_mm``) when the grid has a usable spacing, else voxels and ``hd95_px``.
"""

from __future__ import annotations

import base64
import math
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import numpy as np
from fastapi import Request, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from inference.api.admission import request_bytes
from inference.api.deps import cancel_on_disconnect
from inference.api.routers.segment import volume_fields
from inference.api.schemas import SliceSummaryOut
from inference.api.service import ModelService
from inference.api.settings import ServeSettings
from inference.decode import MM3_PER_ML, DecodedSize, Volume
from inference.metrics import dice, hd95, hd95_key
from inference.outputs import mask_to_nifti, nifti_to_gz_bytes
from inference.predictor import VolumePrediction


class SeriesOut(BaseModel):
    """A DICOM series a case was read from."""

    sequence: str = Field(description="pre, flair or post")
    series_description: str
    series_number: int | None = None
    series_instance_uid: str
    files: int = Field(description="its files (slices) in the upload")


class CaseResult(BaseModel):
    """``format=json`` of ``POST /v1/segment/sequences`` and ``POST /v1/segment/dicom``."""

    shape: tuple[int, int, int] = Field(description="height, width, slices (the FLAIR's grid)")
    tumour_voxels: int
    tumour_slices: int = Field(description="slices with at least one tumour pixel")
    voxel_spacing_mm: tuple[float, float, float] | None = Field(
        None, description="along (rows, columns, slices); absent when the inputs give no "
        "usable spacing (see volume_unavailable)",
    )  # fmt: skip
    voxel_volume_mm3: float | None = None
    tumour_volume_ml: float | None = Field(None, description="absent without a spacing")
    volume_unavailable: str | None = Field(None, description="why there is no volume in ml")
    slices: list[SliceSummaryOut]
    series: list[SeriesOut] | None = Field(
        None, description="DICOM only: the series read as pre-contrast, FLAIR, post-contrast"
    )
    mask_nifti_gz: str = Field(description="the mask as .nii.gz, uint8 0/1, on the FLAIR's grid")
    model_version: str


class CaseEvaluation(CaseResult):
    """``POST /v1/evaluate/sequences`` and ``/v1/evaluate/dicom``: the segmentation and its
    agreement with the truth."""

    true_voxels: int
    true_volume_ml: float | None = None
    dice: float = Field(description="volumetric Dice; 1.0 when both masks are empty")
    hd95_mm: float | None = Field(
        None, description="95th-percentile Hausdorff distance in mm (with a spacing); absent "
        "when either mask is empty",
    )  # fmt: skip
    hd95_px: float | None = Field(
        None, description="the same in voxel steps, when the inputs give no usable spacing"
    )


@asynccontextmanager
async def admitted_case(
    service: ModelService, settings: ServeSettings, sizes: Sequence[DecodedSize], stacked: int
) -> AsyncIterator[None]:
    """Reserve what reading and answering will hold: ``deps.admitted``'s bound for each input
    (``sizes``, from headers) plus the float32 stack of the three sequences (``stacked``
    values)."""
    need = sum(request_bytes(size, settings.max_batch) for size in sizes) + 4 * stacked
    async with service.reserve(need, "volume"):
        yield


async def segment_case(
    request: Request, service: ModelService, volume: Volume
) -> tuple[VolumePrediction, bytes]:
    """The case's prediction and its mask as ``.nii.gz`` on the volume's grid."""
    slices = [volume.data[:, :, k] for k in range(volume.data.shape[2])]
    # a client that goes away cancels its volume (and frees the volume slot) at once
    predictions = await cancel_on_disconnect(request, service.segment_volume(slices))
    prediction = VolumePrediction.from_slices(predictions)
    image = mask_to_nifti(prediction.masks, volume.affine, volume.header)
    return prediction, await run_in_threadpool(nifti_to_gz_bytes, image)


def case_result(
    volume: Volume,
    prediction: VolumePrediction,
    blob: bytes,
    version: str,
    series: list[SeriesOut] | None = None,
) -> CaseResult:
    return CaseResult(
        **volume_fields(volume, prediction),
        series=series,
        mask_nifti_gz=base64.b64encode(blob).decode("ascii"),
        model_version=version,
    )


def case_response(
    result: CaseResult, file: bytes | None = None, media_type: str = "", name: str = ""
) -> Response:
    """The JSON answer, or ``file`` (the mask .nii.gz, a SEG) as an attachment ``name``; with
    the totals in ``X-Tumour-Voxels``, ``X-Tumour-Slices`` and ``X-Model-Version``."""
    headers = {
        "X-Model-Version": result.model_version,
        "X-Tumour-Voxels": str(result.tumour_voxels),
        "X-Tumour-Slices": str(result.tumour_slices),
    }
    if file is not None:
        headers["Content-Disposition"] = f'attachment; filename="{name}"'
        return Response(file, media_type=media_type, headers=headers)
    return Response(result.model_dump_json(exclude_none=True), media_type="application/json",
                    headers=headers)  # fmt: skip


def nifti_or_json(result: CaseResult, blob: bytes, response_format: str) -> Response:
    """``format=nifti``: the mask ``.nii.gz`` (``blob``) as an attachment; else the JSON."""
    if response_format == "nifti":
        return case_response(result, blob, "application/gzip", "mask.nii.gz")
    return case_response(result)


async def evaluate_case(
    result: CaseResult, prediction: VolumePrediction, truth: np.ndarray
) -> CaseEvaluation:
    """``result`` plus Dice, HD95 (mm with a spacing, else voxel steps) and the true volume."""
    spacing = result.voxel_spacing_mm
    distance = await run_in_threadpool(hd95, prediction.masks, truth, spacing)
    true_voxels = int(truth.sum())
    voxel_mm3 = result.voxel_volume_mm3
    return CaseEvaluation(
        **result.model_dump(),
        true_voxels=true_voxels,
        true_volume_ml=None if voxel_mm3 is None else true_voxels * voxel_mm3 / MM3_PER_ML,
        dice=dice(prediction.masks, truth),
        **{hd95_key(spacing): None if math.isnan(distance) else distance},
    )
