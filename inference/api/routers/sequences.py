"""``POST /v1/segment/sequences`` and ``POST /v1/evaluate/sequences``: one case as three NIfTI
files, one per sequence (multipart fields ``pre``, ``flair``, ``post``), plus the ground truth
(``truth``) for the evaluation.

The three must lie on one voxel grid (``inference.sequences``): otherwise a 422 names the fields
and what differs. The mask comes back on that grid (the FLAIR's affine and header). From the
stacked volume on, the case goes the way every volume case goes (``inference.api.cases``: the
admission, the answer in mm² / ml, the evaluation).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from inference.api.cases import (
    CaseEvaluation,
    CaseResult,
    admitted_case,
    case_result,
    evaluate_case,
    nifti_or_json,
    segment_case,
)
from inference.api.deps import (
    FormFiles,
    ReadyServiceDep,
    SettingsDep,
    multipart_body,
    require_api_key,
)
from inference.api.routers.segment import ERRORS
from inference.api.settings import ServeSettings
from inference.decode import DecodedSize, decode_nifti, decoded_size
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


def _labelled(form: dict[str, bytes]) -> list[tuple[str, bytes]]:
    return [(f"'{name}'", form[name]) for name in SEQUENCE_FIELDS]


async def _sizes(settings: ServeSettings, uploads: Sequence[bytes]) -> list[DecodedSize]:
    limits = settings.decode_limits()
    return [await run_in_threadpool(decoded_size, upload, limits) for upload in uploads]


@router.post(
    "/segment/sequences",
    summary="Segment one case given as three sequence files (pre, FLAIR, post)",
    description=(
        "Three NIfTI files on one voxel grid, in the fields `pre`, `flair` and `post`. Default "
        "answer: the mask as `.nii.gz` on that grid (uint8 0/1, `application/gzip`) with "
        "`X-Tumour-Voxels`, `X-Tumour-Slices` and `X-Model-Version`; with `format=json`, a "
        "CaseResult (mm² per slice, ml, slices numbered from 1)."
    ),
    response_model=CaseResult,
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
    sizes = await _sizes(settings, [form[name] for name in SEQUENCE_FIELDS])
    async with admitted_case(service, settings, sizes, sum(size.values for size in sizes)):
        volume = await run_in_threadpool(decode_sequences, _labelled(form),
                                         settings.decode_limits())  # fmt: skip
        prediction, blob = await segment_case(request, service, volume)
    result = case_result(volume, prediction, blob, service.require_predictor().model_version)
    return nifti_or_json(result, blob, response_format)


@router.post(
    "/evaluate/sequences",
    summary="Segment a three-file case and score it against its ground truth (Dice, HD95)",
    description=(
        "As `/v1/segment/sequences`, plus the ground-truth mask in `truth` (a NIfTI on the same "
        "grid). Answers a CaseEvaluation: volumetric Dice, HD95 in mm (`hd95_mm`) or, "
        "without a usable spacing, in voxel steps (`hd95_px`), and both volumes."
    ),
    response_model=CaseEvaluation,
    response_model_exclude_none=True,
    responses=ERRORS,
    openapi_extra=multipart_body(*SEQUENCE_FIELDS, "truth", descriptions=FIELD_TEXT),
)
async def evaluate_sequences(
    request: Request, service: ReadyServiceDep, settings: SettingsDep, form: EvaluateSequencesForm
) -> CaseEvaluation:
    limits = settings.decode_limits()
    sizes = await _sizes(settings, [form[name] for name in (*SEQUENCE_FIELDS, "truth")])
    async with admitted_case(service, settings, sizes, sum(size.values for size in sizes[:3])):
        volume = await run_in_threadpool(decode_sequences, _labelled(form), limits)
        truth_volume = await run_in_threadpool(decode_nifti, form["truth"], limits)
        truth = truth_on_grid("'truth'", truth_volume, volume, "'flair'")
        prediction, blob = await segment_case(request, service, volume)
        result = case_result(volume, prediction, blob, service.require_predictor().model_version)
        return await evaluate_case(result, prediction, truth)
