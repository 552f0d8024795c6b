"""``POST /v1/segment/sequences`` and ``POST /v1/evaluate/sequences``: one case as three NIfTI
files, one per sequence (multipart fields ``pre``, ``flair``, ``post``), plus the ground truth
(``truth``) for the evaluation.

The three must lie on one voxel grid (``inference.sequences``): otherwise a 422 names the fields
and what differs. The mask comes back on that grid (the FLAIR's affine and header). Units follow
``inference.decode.voxel_spacing_mm``: mm² per slice, ml per volume, HD95 in mm (``hd95_mm``)
when the headers give a usable spacing, else voxels and ``hd95_px``.
"""

from __future__ import annotations

import base64
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from inference.api.admission import request_bytes
from inference.api.deps import (
    FormFiles,
    ReadyServiceDep,
    SettingsDep,
    cancel_on_disconnect,
    multipart_body,
    require_api_key,
)
from inference.api.routers.segment import ERRORS, volume_fields
from inference.api.schemas import SliceSummaryOut
from inference.api.service import ModelService
from inference.api.settings import ServeSettings
from inference.decode import MM3_PER_ML, Volume, decode_nifti, decoded_size
from inference.metrics import dice, hd95, hd95_key
from inference.outputs import mask_to_nifti, nifti_to_gz_bytes
from inference.predictor import VolumePrediction
from inference.sequences import decode_sequences, truth_on_grid

router = APIRouter(prefix="/v1", tags=["segmentation"], dependencies=[Depends(require_api_key)])

SEQUENCE_FIELDS = ("pre", "flair", "post")
FIELD_TEXT = {
    "pre": "the pre-contrast sequence: a NIfTI volume (.nii / .nii.gz, H x W x Z), e.g. "
    "<case>_0000.nii.gz",
    "flair": "the FLAIR sequence, on the same voxel grid, e.g. <case>_0001.nii.gz",
    "post": "the post-contrast sequence, on the same voxel grid, e.g. <case>_0002.nii.gz",
    "truth": "the ground-truth tumour mask on the same grid (two values, e.g. 0/1), e.g. "
    "labelsTs/<case>.nii.gz",
}
SequencesForm = Annotated[dict[str, bytes], Depends(FormFiles(*SEQUENCE_FIELDS))]
EvaluateSequencesForm = Annotated[dict[str, bytes], Depends(FormFiles(*SEQUENCE_FIELDS, "truth"))]


class SequencesResult(BaseModel):
    """``POST /v1/segment/sequences?format=json``."""

    shape: tuple[int, int, int] = Field(description="height, width, slices (the inputs' grid)")
    tumour_voxels: int
    tumour_slices: int = Field(description="slices with at least one tumour pixel")
    voxel_spacing_mm: tuple[float, float, float] | None = Field(
        None, description="along (rows, columns, slices); absent when the headers give no "
        "usable spacing (see volume_unavailable)",
    )  # fmt: skip
    voxel_volume_mm3: float | None = None
    tumour_volume_ml: float | None = Field(None, description="absent without a spacing")
    volume_unavailable: str | None = Field(None, description="why there is no volume in ml")
    slices: list[SliceSummaryOut]
    mask_nifti_gz: str = Field(description="the mask as .nii.gz, uint8 0/1, on the inputs' grid")
    model_version: str


class SequencesEvaluation(SequencesResult):
    """``POST /v1/evaluate/sequences``: the segmentation and its agreement with the truth."""

    true_voxels: int
    true_volume_ml: float | None = None
    dice: float = Field(description="volumetric Dice; 1.0 when both masks are empty")
    hd95_mm: float | None = Field(
        None, description="95th-percentile Hausdorff distance in mm (with a spacing); absent "
        "when either mask is empty",
    )  # fmt: skip
    hd95_px: float | None = Field(
        None, description="the same in voxel steps, when the headers give no usable spacing"
    )


def _labelled(form: dict[str, bytes]) -> list[tuple[str, bytes]]:
    return [(f"'{name}'", form[name]) for name in SEQUENCE_FIELDS]


@asynccontextmanager
async def _admitted(
    service: ModelService, settings: ServeSettings, uploads: list[bytes]
) -> AsyncIterator[None]:
    """Reserve what decoding and answering will hold (``deps.admitted``'s bound for each file)
    plus the float32 stack of the three sequences."""
    limits = settings.decode_limits()
    sizes = [await run_in_threadpool(decoded_size, upload, limits) for upload in uploads]
    need = sum(request_bytes(size, settings.max_batch) for size in sizes)
    need += 4 * sum(size.values for size in sizes[:3])
    async with service.reserve(need, "volume"):
        yield


async def _segment(request: Request, service: ModelService, volume: Volume) -> VolumePrediction:
    slices = [volume.data[:, :, k] for k in range(volume.data.shape[2])]
    # a client that goes away cancels its volume (and frees the volume slot) at once
    predictions = await cancel_on_disconnect(request, service.segment_volume(slices))
    return VolumePrediction.from_slices(predictions)


def _result(
    volume: Volume, prediction: VolumePrediction, blob: bytes, version: str
) -> SequencesResult:
    return SequencesResult(
        **volume_fields(volume, prediction),
        mask_nifti_gz=base64.b64encode(blob).decode("ascii"),
        model_version=version,
    )


@router.post(
    "/segment/sequences",
    summary="Segment one case given as three sequence files (pre, FLAIR, post)",
    description=(
        "Three NIfTI files on one voxel grid, in the fields `pre`, `flair` and `post`. Default "
        "answer: the mask as `.nii.gz` on that grid (uint8 0/1, `application/gzip`) with "
        "`X-Tumour-Voxels`, `X-Tumour-Slices` and `X-Model-Version`; with `format=json`, a "
        "SequencesResult (mm² per slice, ml, slices numbered from 1)."
    ),
    response_model=SequencesResult,
    responses={200: {"content": {"application/gzip": {}}}, **ERRORS},
    openapi_extra=multipart_body(*SEQUENCE_FIELDS, descriptions=FIELD_TEXT),
)
async def segment_sequences(
    request: Request,
    service: ReadyServiceDep,
    settings: SettingsDep,
    form: SequencesForm,
    response_format: Annotated[Literal["nifti", "json"], Query(alias="format")] = "nifti",
) -> Response:
    async with _admitted(service, settings, [form[name] for name in SEQUENCE_FIELDS]):
        volume = await run_in_threadpool(decode_sequences, _labelled(form),
                                         settings.decode_limits())  # fmt: skip
        prediction = await _segment(request, service, volume)
        image = mask_to_nifti(prediction.masks, volume.affine, volume.header)
        blob = await run_in_threadpool(nifti_to_gz_bytes, image)
    version = service.require_predictor().model_version
    result = _result(volume, prediction, blob, version)
    headers = {
        "X-Model-Version": version,
        "X-Tumour-Voxels": str(result.tumour_voxels),
        "X-Tumour-Slices": str(result.tumour_slices),
    }
    if response_format == "nifti":
        headers["Content-Disposition"] = 'attachment; filename="mask.nii.gz"'
        return Response(blob, media_type="application/gzip", headers=headers)
    return Response(result.model_dump_json(exclude_none=True), media_type="application/json",
                    headers=headers)  # fmt: skip


@router.post(
    "/evaluate/sequences",
    summary="Segment a three-file case and score it against its ground truth (Dice, HD95)",
    description=(
        "As `/v1/segment/sequences`, plus the ground-truth mask in `truth` (a NIfTI on the same "
        "grid). Answers a SequencesEvaluation: volumetric Dice, HD95 in mm (`hd95_mm`) or, "
        "without a usable spacing, in voxel steps (`hd95_px`), and both volumes."
    ),
    response_model=SequencesEvaluation,
    response_model_exclude_none=True,
    responses=ERRORS,
    openapi_extra=multipart_body(*SEQUENCE_FIELDS, "truth", descriptions=FIELD_TEXT),
)
async def evaluate_sequences(
    request: Request, service: ReadyServiceDep, settings: SettingsDep, form: EvaluateSequencesForm
) -> SequencesEvaluation:
    limits = settings.decode_limits()
    uploads = [form[name] for name in (*SEQUENCE_FIELDS, "truth")]
    async with _admitted(service, settings, uploads):
        volume = await run_in_threadpool(decode_sequences, _labelled(form), limits)
        truth_volume = await run_in_threadpool(decode_nifti, form["truth"], limits)
        truth = truth_on_grid("'truth'", truth_volume, volume, "'flair'")
        prediction = await _segment(request, service, volume)
        image = mask_to_nifti(prediction.masks, volume.affine, volume.header)
        blob = await run_in_threadpool(nifti_to_gz_bytes, image)
        result = _result(volume, prediction, blob, service.require_predictor().model_version)
        spacing = result.voxel_spacing_mm
        distance = await run_in_threadpool(hd95, prediction.masks, truth, spacing)
        overlap = dice(prediction.masks, truth)
    true_voxels = int(truth.sum())
    voxel_mm3 = result.voxel_volume_mm3
    return SequencesEvaluation(
        **result.model_dump(),
        true_voxels=true_voxels,
        true_volume_ml=None if voxel_mm3 is None else true_voxels * voxel_mm3 / MM3_PER_ML,
        dice=overlap,
        **{hd95_key(spacing): None if math.isnan(distance) else distance},
    )
