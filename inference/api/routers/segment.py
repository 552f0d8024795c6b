"""``POST /v1/segment`` (one slice) and ``POST /v1/segment/volume`` (a NIfTI or zip of slices)."""

from __future__ import annotations

import base64
import time
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Depends, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from inference.api.deps import (
    INLINE_MAX_PIXELS,
    ReadyServiceDep,
    SettingsDep,
    SliceForm,
    VolumeForm,
    admitted,
    cancel_on_disconnect,
    multipart_body,
    on_loop_if,
    require_api_key,
    small_slice,
)
from inference.api.schemas import Problem, SegmentResult, SliceSummaryOut, VolumeResult
from inference.api.service import Answer
from inference.api.telemetry import server_timing
from inference.decode import (
    MM3_PER_ML,
    Volume,
    decode_slice,
    decode_volume,
    lossy_warning,
    voxel_spacing_mm,
)
from inference.outputs import mask_contours, mask_to_nifti, mask_to_png, nifti_to_gz_bytes
from inference.predictor import VolumePrediction

router = APIRouter(prefix="/v1", tags=["segmentation"], dependencies=[Depends(require_api_key)])

ERRORS: dict[int | str, dict[str, object]] = {
    400: {"model": Problem, "description": "malformed multipart body"},
    401: {"model": Problem, "description": "missing or wrong X-API-Key"},
    413: {"model": Problem, "description": "body over the upload limit"},
    415: {"model": Problem, "description": "unsupported format (sniffed from the bytes)"},
    422: {"model": Problem, "description": "missing field, corrupt data, limits, wrong kind"},
    503: {"model": Problem, "description": "no model loaded, or overloaded (see Retry-After)"},
}

SLICE_FIELD = (
    "one 2-D slice: PNG, TIFF, JPEG or a one-slice NIfTI; 256x256x3 "
    "(pre-contrast, FLAIR, post-contrast) like kaggle_3m, or any size with those 3 channels"
)
VOLUME_FIELD = "a NIfTI volume (.nii / .nii.gz, H x W x Z x 3) or a zip of a patient's slices"


def slice_summaries(
    prediction: VolumePrediction, spacing_mm: tuple[float, float, float] | None
) -> list[SliceSummaryOut]:
    """Per-slice lines of a volume answer: numbered from 0 and 1, areas in mm² when known."""
    height, width = prediction.masks.shape[:2]
    pixel_mm2 = None if spacing_mm is None else spacing_mm[0] * spacing_mm[1]
    return [
        SliceSummaryOut(
            index=s.index,
            slice=s.index + 1,
            tumour_pixels=s.tumour_pixels,
            tumour_fraction=s.tumour_pixels / (height * width),
            tumour_mm2=None if pixel_mm2 is None else s.tumour_pixels * pixel_mm2,
            max_probability=s.max_probability,
        )
        for s in prediction.slices
    ]


def volume_fields(volume: Volume, prediction: VolumePrediction) -> dict[str, Any]:
    """The fields every volume answer shares: shape, tumour voxels and slices, the voxel
    spacing and volume in mm (or why there is none), the tumour's ml and the per-slice lines."""
    spacing, no_volume = voxel_spacing_mm(volume)
    voxel_mm3 = None if spacing is None else float(np.prod(spacing))
    return {
        "shape": prediction.masks.shape,
        "tumour_voxels": prediction.tumour_voxels,
        "tumour_slices": sum(1 for s in prediction.slices if s.tumour_pixels > 0),
        "voxel_spacing_mm": spacing,
        "voxel_volume_mm3": voxel_mm3,
        "tumour_volume_ml": None if voxel_mm3 is None
        else prediction.tumour_voxels * voxel_mm3 / MM3_PER_ML,
        "volume_unavailable": no_volume,
        "slices": slice_summaries(prediction, spacing),
    }


def slice_timing(answer: Answer, decode_s: float, encode_s: float) -> str:
    """The ``Server-Timing`` header of a one-slice answer: where its time went, in order."""
    times = answer.times
    return server_timing(
        {
            "decode": decode_s,
            "queue": answer.queued_s,
            "prepare": times.prepare_s,
            "network": times.network_s,
            "finish": times.finish_s,
            "encode": encode_s,
        },
        batch_size=answer.batch_size,
    )


def input_warnings(data: bytes, headers: dict[str, str]) -> list[str]:
    """Warnings about an (already decoded) upload, also set as the X-Input-Warning header."""
    warning = lossy_warning(data)
    if warning is None:
        return []
    headers["X-Input-Warning"] = warning
    return [warning]


@router.post(
    "/segment",
    summary="Segment one slice",
    description=(
        "Returns the tumour mask as a PNG (0 background, 255 tumour) of the input's height and "
        "width; with `format=json`, a summary with the mask as base64 PNG and tumour outlines. "
        "The format is sniffed from the bytes."
    ),
    response_model=SegmentResult,
    responses={
        200: {
            "content": {"image/png": {}},
            "description": "the mask PNG (default) or, with format=json, a SegmentResult",
            "headers": {
                "X-Model-Version": {"schema": {"type": "string"}},
                "X-Tumour-Pixels": {"schema": {"type": "integer"}},
                "Server-Timing": {"schema": {"type": "string"},
                                  "description": "milliseconds spent decoding, queued, "
                                  "preparing, in the network, finishing and encoding"},
                "X-Input-Warning": {"schema": {"type": "string"},
                                    "description": "present when the input is lossy (JPEG)"},
            },
        },
        **ERRORS,
    },
    openapi_extra=multipart_body("file", descriptions={"file": SLICE_FIELD}),
)
async def segment_slice(
    service: ReadyServiceDep,
    settings: SettingsDep,
    form: SliceForm,
    response_format: Annotated[Literal["png", "json"], Query(alias="format")] = "png",
) -> Response:
    async with admitted(service, settings, form["file"]) as (size,):
        start = time.perf_counter()
        small = small_slice(form["file"], size)
        image = await on_loop_if(small, decode_slice, form["file"], settings.decode_limits())
        decode_s = time.perf_counter() - start
        answer = await service.segment(image)
        del image
    prediction = answer.prediction
    version = service.require_predictor().model_version
    start = time.perf_counter()
    png = await on_loop_if(prediction.mask.size <= INLINE_MAX_PIXELS, mask_to_png, prediction.mask)
    headers = {
        "X-Model-Version": version,
        "X-Tumour-Pixels": str(prediction.tumour_pixels),
        "Server-Timing": slice_timing(answer, decode_s, time.perf_counter() - start),
    }
    warnings = input_warnings(form["file"], headers)
    if response_format == "png":
        return Response(png, media_type="image/png", headers=headers)
    contours, truncated = await run_in_threadpool(mask_contours, prediction.mask)
    result = SegmentResult(
        shape=(prediction.mask.shape[0], prediction.mask.shape[1]),
        tumour_pixels=prediction.tumour_pixels,
        tumour_fraction=prediction.tumour_fraction,
        max_probability=prediction.max_probability,
        threshold=service.require_predictor().threshold,
        mask_png=base64.b64encode(png).decode("ascii"),
        contours=contours,
        contours_truncated=truncated,
        warnings=warnings,
        model_version=version,
    )
    return Response(result.model_dump_json(), media_type="application/json", headers=headers)


@router.post(
    "/segment/volume",
    summary="Segment a volume (NIfTI or zip of slices)",
    description=(
        "Default answer: the mask as `.nii.gz` (uint8 0/1, `application/gzip`) on the input's "
        "voxel grid and affine (identity for a zip), with totals in the headers "
        "`X-Tumour-Voxels`, `X-Tumour-Slices`, `X-Model-Version`. With `format=json`: a "
        "VolumeResult with a summary per slice and the same .nii.gz as base64. "
        "Zip entries are ordered by natural sort of their names; `*_mask.*` files are skipped."
    ),
    response_model=VolumeResult,
    responses={
        200: {
            "content": {"application/gzip": {}},
            "description": "the mask .nii.gz (default) or, with format=json, a VolumeResult",
        },
        **ERRORS,
    },
    openapi_extra=multipart_body("file", descriptions={"file": VOLUME_FIELD}),
)
async def segment_volume(
    request: Request,
    service: ReadyServiceDep,
    settings: SettingsDep,
    form: VolumeForm,
    response_format: Annotated[Literal["nifti", "json"], Query(alias="format")] = "nifti",
) -> Response:
    async with admitted(service, settings, form["file"], what="volume"):
        volume = await run_in_threadpool(decode_volume, form["file"], settings.decode_limits())
        slices = [volume.data[:, :, k] for k in range(volume.data.shape[2])]
        # a client that goes away cancels its volume (and frees the volume slot) at once
        predictions = await cancel_on_disconnect(request, service.segment_volume(slices))
        prediction = VolumePrediction.from_slices(predictions)
        del slices
        # the geometry was validated while decoding: writing it back cannot fail here
        image = mask_to_nifti(prediction.masks, volume.affine, volume.header)
        blob = await run_in_threadpool(nifti_to_gz_bytes, image)
    version = service.require_predictor().model_version
    tumour_slices = sum(1 for s in prediction.slices if s.tumour_pixels > 0)
    headers = {
        "X-Model-Version": version,
        "X-Tumour-Voxels": str(prediction.tumour_voxels),
        "X-Tumour-Slices": str(tumour_slices),
    }
    warnings = input_warnings(form["file"], headers)
    if response_format == "nifti":
        headers["Content-Disposition"] = 'attachment; filename="mask.nii.gz"'
        return Response(blob, media_type="application/gzip", headers=headers)
    result = VolumeResult(
        **volume_fields(volume, prediction),
        source=volume.source,
        mask_nifti_gz=base64.b64encode(blob).decode("ascii"),
        warnings=warnings,
        model_version=version,
    )
    return Response(
        result.model_dump_json(exclude_none=True), media_type="application/json", headers=headers
    )
