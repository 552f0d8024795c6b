"""``create_app()``: the FastAPI application (model loaded in the lifespan, never at import)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline

from data.preprocessing import ChannelError
from inference.api.batching import BatchTimeout, Overloaded
from inference.api.deps import ClientGone
from inference.api.middleware import (
    BodySizeLimitMiddleware,
    UnhandledErrorMiddleware,
    WorkLimitMiddleware,
    install_access_log_filter,
)
from inference.api.routers import dicom, health, model, scoring, segment, sequences
from inference.api.service import ModelService, NotReady, SlicePredictor, configure_threads
from inference.api.settings import ServeSettings, get_settings
from inference.api.telemetry import MetricsMiddleware, ServiceMetrics
from inference.decode import DecodeError, UnsupportedFormat, WrongKind

log = logging.getLogger(__name__)

DESCRIPTION = """
Segments lower-grade glioma (FLAIR abnormality) in brain MRI slices with a ResNet-50-UNet.
**Research software, not for diagnostic use.**

`GET /v1/model` says what runs the network (engine, precision, CPU model and flags).
Uploads are multipart/form-data, processed in memory and never stored or logged. Formats are
sniffed from the bytes: PNG, TIFF, JPEG and NIfTI for slices; NIfTI or a zip of slices for
volumes; three NIfTI files (pre-contrast, FLAIR, post-contrast on one grid) for a case. Errors
answer `{"detail": "..."}`: 400 malformed multipart, 401 API key, 413 too large, 415 unsupported
format, 422 unusable content, 503 no model or overloaded (with `Retry-After`).
"""

ENDPOINT_FOR = {"volume": "POST /v1/segment/volume", "slice": "POST /v1/segment"}


def _problem(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _add_error_handlers(app: FastAPI, settings: ServeSettings, metrics: ServiceMetrics) -> None:
    retry = {"Retry-After": str(settings.retry_after_s)}

    @app.exception_handler(UnsupportedFormat)
    async def unsupported(_: Request, exc: UnsupportedFormat) -> JSONResponse:
        return _problem(415, str(exc))

    @app.exception_handler(WrongKind)
    async def wrong_kind(_: Request, exc: WrongKind) -> JSONResponse:
        return _problem(422, f"{exc}; send it to {ENDPOINT_FOR[exc.got]}")

    @app.exception_handler(DecodeError)
    async def undecodable(_: Request, exc: DecodeError) -> JSONResponse:
        return _problem(422, str(exc))

    @app.exception_handler(ChannelError)
    async def wrong_channels(_: Request, exc: ChannelError) -> JSONResponse:
        return _problem(422, str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _problem(422, validation_message(exc))

    @app.exception_handler(Overloaded)
    async def overloaded(_: Request, exc: Overloaded) -> JSONResponse:
        metrics.rejected.labels("overloaded").inc()
        return _problem(503, f"overloaded, retry later: {exc}", retry)

    @app.exception_handler(BatchTimeout)
    async def timed_out(_: Request, exc: BatchTimeout) -> JSONResponse:
        metrics.rejected.labels("timeout").inc()
        return _problem(503, f"timed out, retry later: {exc}", retry)

    @app.exception_handler(ClientGone)
    async def client_gone(_: Request, exc: ClientGone) -> JSONResponse:
        metrics.rejected.labels("client_gone").inc()
        return _problem(499, str(exc))

    @app.exception_handler(NotReady)
    async def not_ready(_: Request, exc: NotReady) -> JSONResponse:
        metrics.rejected.labels("not_ready").inc()
        return _problem(503, str(exc))


def validation_message(exc: RequestValidationError) -> str:
    """One sentence per invalid field (where and what was expected), never the value sent."""
    parts = []
    for error in exc.errors():
        where = " ".join(str(part) for part in error.get("loc", ()))
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts)


def create_app(
    settings: ServeSettings | None = None, *, predictor: SlicePredictor | None = None
) -> FastAPI:
    """Build the app. ``predictor`` replaces loading ``settings.checkpoint`` (tests, embedding)."""
    settings = settings or get_settings()
    metrics = ServiceMetrics()
    install_access_log_filter()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_threads(settings)
        if predictor is not None:
            service = ModelService(settings, metrics, predictor=predictor)
        else:
            service = await ModelService.start(settings, metrics)
        app.state.service = service
        try:
            yield
        finally:
            await service.stop()

    # /docs and /redoc serve Swagger UI and ReDoc from the package (/static-offline-docs), not
    # from a CDN: hospital servers often have no internet access.
    app = FastAPIOffline(
        title="lggseg: LGG tumour segmentation API",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.metrics = metrics
    app.state.settings = settings  # what deps.app_settings gives every route
    for router in (health.router, segment.router, sequences.router, scoring.router,
                   model.router, dicom.router):  # fmt: skip
        app.include_router(router)
    _add_error_handlers(app, settings, metrics)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["X-API-Key", "Content-Type"],
            expose_headers=[
                "X-Model-Version",
                "X-Tumour-Pixels",
                "X-Tumour-Voxels",
                "X-Tumour-Slices",
                "Server-Timing",
                "Retry-After",
            ],
        )
    app.add_middleware(UnhandledErrorMiddleware)  # innermost: metrics still see the 500
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_upload_bytes)
    app.add_middleware(
        WorkLimitMiddleware,
        max_requests=settings.max_concurrent_requests,
        retry_after_s=settings.retry_after_s,
        on_reject=metrics.rejected.labels("too_many_requests").inc,
    )
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # outermost: sees every answer
    return app
