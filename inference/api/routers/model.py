"""``GET /v1/model``: the loaded model's card, serving options and runtime (engine, precision,
CPU model and flags)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from inference.api.deps import ReadyServiceDep, require_api_key
from inference.api.schemas import ModelInfo, Problem

router = APIRouter(prefix="/v1", tags=["model"], dependencies=[Depends(require_api_key)])


@router.get(
    "/model",
    response_model=ModelInfo,
    summary="The model card of the loaded checkpoint",
    responses={401: {"model": Problem}, 503: {"model": Problem}},
)
async def model_card(service: ReadyServiceDep) -> ModelInfo:
    predictor = service.require_predictor()
    return ModelInfo(
        model_version=predictor.model_version,
        precision=getattr(predictor, "precision", None),
        device=str(getattr(predictor, "device", "")) or None,
        tta=getattr(predictor, "tta", None),
        threshold=predictor.threshold,
        card=predictor.card,
        runtime=predictor.runtime() if hasattr(predictor, "runtime") else None,
    )
