"""``POST /v1/evaluate``: segment a slice and score it against its ground-truth mask."""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter, Depends, Response
from starlette.concurrency import run_in_threadpool

from data.masks import MaskError, binary_mask
from inference.api.deps import (
    EvaluateForm,
    ReadyServiceDep,
    SettingsDep,
    admitted,
    multipart_body,
    require_api_key,
)
from inference.api.routers.segment import ERRORS, SLICE_FIELD, input_warnings
from inference.api.schemas import EvaluateResult
from inference.decode import DecodeError, decode_slice
from inference.metrics import slice_scores

router = APIRouter(prefix="/v1", tags=["evaluation"], dependencies=[Depends(require_api_key)])


def _truth(mask: np.ndarray) -> np.ndarray:
    """The ground truth by the one mask rule (``data.masks``); a 422 when it breaks it."""
    try:
        return binary_mask(mask)
    except MaskError as exc:
        raise DecodeError(f"the mask: {exc}") from exc


@router.post(
    "/evaluate",
    summary="Dice, IoU and areas of the model's mask against a ground-truth mask",
    response_model=EvaluateResult,
    responses=ERRORS,
    openapi_extra=multipart_body(
        "file",
        "mask",
        descriptions={
            "file": SLICE_FIELD,
            "mask": "the ground-truth mask of the same size (non-zero = tumour), e.g. a "
            "kaggle_3m *_mask.tif",
        },
    ),
)
async def evaluate(
    service: ReadyServiceDep, settings: SettingsDep, form: EvaluateForm, response: Response
) -> EvaluateResult:
    limits = settings.decode_limits()
    async with admitted(service, settings, form["file"], form["mask"]):
        image = await run_in_threadpool(decode_slice, form["file"], limits)
        truth = _truth(await run_in_threadpool(decode_slice, form["mask"], limits))
        if truth.shape != image.shape[:2]:
            raise DecodeError(
                f"the mask is {truth.shape[0]} x {truth.shape[1]} but the image is "
                f"{image.shape[0]} x {image.shape[1]}; they must match"
            )
        prediction = (await service.segment(image)).prediction
        del image
    scores = slice_scores(prediction.mask, truth)
    headers: dict[str, str] = {}
    warnings = input_warnings(form["file"], headers)
    response.headers.update(headers)
    return EvaluateResult(
        dice=scores.dice,
        iou=scores.iou,
        predicted_pixels=scores.predicted_pixels,
        true_pixels=scores.true_pixels,
        intersection_pixels=scores.intersection_pixels,
        total_pixels=scores.total_pixels,
        shape=(truth.shape[0], truth.shape[1]),
        warnings=warnings,
        model_version=service.require_predictor().model_version,
    )
