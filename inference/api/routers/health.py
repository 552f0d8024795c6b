"""Liveness, readiness and Prometheus metrics (no API key: probes and scrapers use these)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from inference.api.deps import ServiceDep
from inference.api.schemas import Health, Readiness

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health, summary="Liveness: the process answers")
async def healthz() -> Health:
    return Health()


@router.get(
    "/readyz",
    response_model=Readiness,
    summary="Readiness: a model is loaded and serving",
    responses={503: {"model": Readiness, "description": "no usable model; see reason"}},
)
async def readyz(service: ServiceDep) -> Response:
    if service.predictor is None:
        body = Readiness(status="not ready", reason=service.error or "model not loaded")
        return JSONResponse(body.model_dump(exclude_none=True), status_code=503)
    ready = Readiness(status="ready", model_version=service.predictor.model_version)
    return JSONResponse(ready.model_dump(exclude_none=True))


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
)
async def metrics(request: Request) -> Response:
    registry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
