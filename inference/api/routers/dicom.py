"""``POST /v1/segment/dicom`` and ``POST /v1/evaluate/dicom``: one case as a DICOM study.

The study arrives as repeated multipart parts ``files``, each a DICOM file or a zip of them,
read in memory (``inference.sources.DicomUpload``; never written to disk). The pre-contrast,
FLAIR and post-contrast series are the ones named by the optional fields ``pre_series``,
``flair_series``, ``post_series`` (SeriesDescription, case-insensitive, or SeriesInstanceUID),
else the ones the SeriesDescription rule of ``data.dicom`` gives; an ambiguous or incomplete
study is a 422 listing its series. The series are read as the command line reads them
(``inference.sources.load_series``) and then go the way every volume case goes
(``inference.api.cases``).

Memory is reserved in steps, each before the bytes it bounds are held: the body (the form
reader), the zips' declared content before inflating it, then each chosen series' decoded size
(from its headers) before a pixel is decoded. Messages name parts, zip entries (by number) and
series, never file names or patient attributes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from data.dicom import ROLES, DicomError, SeriesVolume
from inference.api.cases import (
    CaseEvaluation,
    CaseResult,
    SeriesOut,
    admitted_case,
    case_response,
    case_result,
    evaluate_case,
    nifti_or_json,
    segment_case,
)
from inference.api.deps import FormParts, ReadyServiceDep, SettingsDep, require_api_key
from inference.api.multipart import Form
from inference.api.routers.segment import ERRORS
from inference.api.service import ModelService
from inference.api.settings import ServeSettings
from inference.decode import DecodeError, Volume, decode_nifti, decoded_size
from inference.dicom_seg import dicom_bytes, mask_to_dicom_seg
from inference.sequences import truth_on_grid
from inference.sources import (
    DicomUpload,
    SeriesChoice,
    choose_uploaded,
    load_series,
    upload_series,
)

T = TypeVar("T")

router = APIRouter(prefix="/v1", tags=["segmentation"], dependencies=[Depends(require_api_key)])

SERIES_FIELDS = tuple(f"{role}_series" for role in ROLES)
MAX_SERIES_NAME = 256
FIELD_TEXT = {
    "files": "a DICOM file of the study, or a zip of DICOM files; repeat the field for each "
    "(loose files and zips may be mixed; other series and non-DICOM zip entries are left aside)",
    "pre_series": "optional: the pre-contrast series' SeriesDescription or SeriesInstanceUID",
    "flair_series": "optional: the FLAIR series' SeriesDescription or SeriesInstanceUID",
    "post_series": "optional: the post-contrast series' SeriesDescription or SeriesInstanceUID",
    "truth": "the ground-truth tumour mask as a NIfTI on the FLAIR series' grid (two values)",
}
DicomForm = Annotated[Form, Depends(FormParts("files", optional=SERIES_FIELDS))]
EvaluateDicomForm = Annotated[Form, Depends(FormParts("files", "truth", optional=SERIES_FIELDS))]


def _multipart_body(truth: bool) -> dict[str, Any]:
    binary = {"type": "string", "format": "binary"}
    properties: dict[str, Any] = {
        "files": {"type": "array", "items": binary, "description": FIELD_TEXT["files"]},
        **{name: {"type": "string", "description": FIELD_TEXT[name]} for name in SERIES_FIELDS},
    }
    if truth:
        properties["truth"] = {**binary, "description": FIELD_TEXT["truth"]}
    schema = {"type": "object", "required": ["files", "truth"] if truth else ["files"],
              "properties": properties}  # fmt: skip
    return {"requestBody": {"required": True,
                            "content": {"multipart/form-data": {"schema": schema}}}}  # fmt: skip


def _choice(form: Form) -> SeriesChoice:
    """The series fields sent (empty ones count as absent); 422 for one that is no short text."""
    named: dict[str, str | None] = {}
    for role, field in zip(ROLES, SERIES_FIELDS, strict=True):
        raw = form.fields.get(field)
        try:
            text = None if raw is None else raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise HTTPException(422, f"the form field '{field}' is not UTF-8 text") from None
        if text is not None and len(text) > MAX_SERIES_NAME:
            raise HTTPException(422, f"the form field '{field}' is longer than "
                                     f"{MAX_SERIES_NAME} characters")  # fmt: skip
        named[role] = text or None
    return SeriesChoice(named["pre"], named["flair"], named["post"])


async def _off_loop(function: Callable[..., T], *args: Any) -> T:
    """Run a reading step in the thread pool; a study that cannot be used is a 422."""
    try:
        return await run_in_threadpool(function, *args)
    except DicomError as exc:
        raise DecodeError(str(exc)) from None


@dataclass
class _Study:
    volume: Volume
    series: tuple[SeriesVolume, SeriesVolume, SeriesVolume]
    truth: np.ndarray | None

    def described(self) -> list[SeriesOut]:
        return [
            SeriesOut(sequence=role, series_description=read.series.description,
                      series_number=read.series.number, series_instance_uid=read.series.uid,
                      files=len(read.series.files))  # fmt: skip
            for role, read in zip(ROLES, self.series, strict=True)
        ]


@asynccontextmanager
async def _read_study(
    service: ModelService, settings: ServeSettings, form: Form
) -> AsyncIterator[_Study]:
    """The upload's three series stacked on the FLAIR's grid (and its truth), read under the
    memory reservations described in the module docs; held until the block ends."""
    limits = settings.decode_limits()
    choice = _choice(form)
    upload = await _off_loop(DicomUpload, form.lists["files"], settings.max_form_files, limits)
    async with service.reserve(upload.inflated, "upload"):
        files = await _off_loop(upload.files)
        study = await _off_loop(upload_series, files, limits)
        chosen = await _off_loop(choose_uploaded, study, choice, limits)
        sizes = [study.sizes[series.uid] for series in chosen]
        del files, study  # the other series' bytes go; the chosen ones' stay with `chosen`
        stacked = sum(size.values for size in sizes)
        if "truth" in form.fields:
            sizes.append(await run_in_threadpool(decoded_size, form.fields["truth"], limits))
        async with admitted_case(service, settings, sizes, stacked):
            volume, read, labels = await _off_loop(load_series, chosen, limits)
            truth = None
            if "truth" in form.fields:
                truth_volume = await run_in_threadpool(decode_nifti, form.fields["truth"], limits)
                truth = truth_on_grid("'truth'", truth_volume, volume, f"the FLAIR {labels[1]}")
            yield _Study(volume, read, truth)


@router.post(
    "/segment/dicom",
    summary="Segment one case given as a DICOM study (its files, loose or zipped)",
    description=(
        "Repeated `files` parts: the study's DICOM files, or zips of them. The pre-contrast, "
        "FLAIR and post-contrast series are chosen by `pre_series`, `flair_series`, "
        "`post_series` (SeriesDescription or SeriesInstanceUID) or by their SeriesDescription "
        "(FLAIR: 'flair'; post-contrast: 'post', '+C', 'Gd', ...; pre-contrast: 'pre' or a T1 "
        "without those); an ambiguous study is a 422 listing its series. Default answer: a "
        "CaseResult (mm² per slice, slices numbered from 1, ml, voxel spacing, the series "
        "read); `format=nifti`: the mask `.nii.gz` on the FLAIR series' grid; `format=seg`: a "
        "DICOM SEG on the FLAIR's slices referencing the three series. Enhanced (multi-frame) "
        "DICOM is refused: convert it with dcm2niix and use `/v1/segment/sequences`."
    ),
    response_model=CaseResult,
    responses={200: {"content": {"application/gzip": {}, "application/dicom": {}}}, **ERRORS},
    openapi_extra=_multipart_body(truth=False),
)
async def segment_dicom(
    request: Request,
    service: ReadyServiceDep,
    settings: SettingsDep,
    form: DicomForm,
    response_format: Annotated[Literal["json", "nifti", "seg"], Query(alias="format")] = "json",
) -> Response:
    async with _read_study(service, settings, form) as study:
        prediction, blob = await segment_case(request, service, study.volume)
        version = service.require_predictor().model_version
        result = case_result(study.volume, prediction, blob, version, study.described())
        if response_format == "seg":
            pre, flair, post = study.series
            seg = await run_in_threadpool(mask_to_dicom_seg, prediction.masks, flair,
                                          [pre, post], version)  # fmt: skip
            return case_response(result, await run_in_threadpool(dicom_bytes, seg),
                                 "application/dicom", "mask_seg.dcm")  # fmt: skip
    return nifti_or_json(result, blob, response_format)


@router.post(
    "/evaluate/dicom",
    summary="Segment a DICOM study and score it against its ground truth (Dice, HD95)",
    description=(
        "As `/v1/segment/dicom`, plus the ground-truth mask in `truth`: a NIfTI on the FLAIR "
        "series' grid (as `format=nifti` answers it). Answers a CaseEvaluation: volumetric "
        "Dice, HD95 in mm (`hd95_mm`), both volumes in ml."
    ),
    response_model=CaseEvaluation,
    response_model_exclude_none=True,
    responses=ERRORS,
    openapi_extra=_multipart_body(truth=True),
)
async def evaluate_dicom(
    request: Request, service: ReadyServiceDep, settings: SettingsDep, form: EvaluateDicomForm
) -> CaseEvaluation:
    async with _read_study(service, settings, form) as study:
        if study.truth is None:  # the form reader requires it: never taken
            raise HTTPException(422, "missing form field 'truth'")
        prediction, blob = await segment_case(request, service, study.volume)
        version = service.require_predictor().model_version
        result = case_result(study.volume, prediction, blob, version, study.described())
        return await evaluate_case(result, prediction, study.truth)
