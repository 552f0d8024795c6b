"""Dependency providers: settings, the model service, the API key check, in-memory forms."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any, TypeVar

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyHeader
from starlette.concurrency import run_in_threadpool

from inference.api.admission import request_bytes
from inference.api.middleware import is_keylike
from inference.api.multipart import Form, read_form, read_parts
from inference.api.service import ModelService, Work
from inference.api.settings import ServeSettings
from inference.decode import DecodedSize, decoded_size

T = TypeVar("T")


async def app_settings(request: Request) -> ServeSettings:
    """The settings the app was built with (``create_app``); async, so no pool thread.

    Read from the app rather than swapped in through ``app.dependency_overrides``: any override
    makes FastAPI re-inspect every dependency's signature on every request (about 1.5 ms).
    Tests may still override this function.
    """
    settings: ServeSettings = request.app.state.settings
    return settings


SettingsDep = Annotated[ServeSettings, Depends(app_settings)]

_api_key_header = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    description="required on /v1/* when the server sets LGGSEG_SERVE_API_KEY",
)


async def get_service(request: Request) -> ModelService:
    """The model service created in the app's lifespan (async: probes never wait for a thread
    of the pool that decoding uses)."""
    service: ModelService = request.app.state.service
    return service


ServiceDep = Annotated[ModelService, Depends(get_service)]


async def require_api_key(
    request: Request,
    settings: SettingsDep,
    api_key: Annotated[str | None, Security(_api_key_header)] = None,
) -> None:
    """401 unless the server has no key configured or the request's X-API-Key matches it.

    A key-like query parameter is refused (400) whatever it holds: URLs end up in logs,
    histories and proxies, so keys travel only in the X-API-Key header.
    """
    if any(is_keylike(name) for name in request.query_params):
        raise HTTPException(
            400, "API keys are never accepted in the URL; send the key in the X-API-Key header"
        )
    expected = settings.api_key
    if expected is None:
        return
    if api_key is None or not secrets.compare_digest(
        api_key.encode(), expected.get_secret_value().encode()
    ):
        raise HTTPException(
            401, "missing or wrong X-API-Key header", headers={"WWW-Authenticate": "APIKey"}
        )


async def ready_service(service: ServiceDep) -> ModelService:
    """The service, or 503 with the reason when no model is loaded (checked before the body)."""
    service.require_predictor()
    return service


ReadyServiceDep = Annotated[ModelService, Depends(ready_service)]


@asynccontextmanager
async def _body_reserved(
    request: Request, settings: ServeSettings, service: ModelService
) -> AsyncIterator[None]:
    """Reserve twice the body's size (the parser's buffer and the fields' bytes) until the
    request ends: its Content-Length, or the upload limit when the body is chunked."""
    declared = request.headers.get("content-length", "")
    size = int(declared) if declared.isdigit() else settings.max_upload_bytes
    async with service.reserve(2 * min(size, settings.max_upload_bytes), "upload"):
        yield


class FormFiles:
    """Read the named multipart fields into memory (see ``inference.api.multipart``), the
    body's memory reserved before a byte is read (``_body_reserved``). With ``work``, a request
    the model would refuse anyway (full queue, expected wait over the budget, volume slot
    taken) gets its 503 before a byte of the body is parsed (``ModelService.check_capacity``).
    """

    def __init__(self, *names: str, work: Work | None = None) -> None:
        self.names = names
        self.work = work

    async def __call__(
        self, request: Request, settings: SettingsDep, service: ReadyServiceDep
    ) -> AsyncIterator[dict[str, bytes]]:
        if self.work is not None:
            service.check_capacity(self.work)
        async with _body_reserved(request, settings, service):
            yield await read_form(
                request,
                self.names,
                max_parts=settings.max_form_parts,
                max_header_bytes=settings.max_part_header_bytes,
                body_timeout_s=settings.body_timeout_s,
            )


class FormParts:
    """Like FormFiles, plus a field sent as many parts (``repeated``: at most
    ``max_form_files`` of them) and ``optional`` fields."""

    def __init__(
        self, repeated: str, *required: str, optional: tuple[str, ...] = ()
    ) -> None:
        self.repeated = repeated
        self.required = required
        self.optional = optional

    async def __call__(
        self, request: Request, settings: SettingsDep, service: ReadyServiceDep
    ) -> AsyncIterator[Form]:
        singles = len(self.required) + len(self.optional)
        async with _body_reserved(request, settings, service):
            yield await read_parts(
                request,
                self.required,
                repeated=(self.repeated,),
                optional=self.optional,
                max_repeated=settings.max_form_files,
                max_parts=settings.max_form_files + singles,
                max_header_bytes=settings.max_part_header_bytes,
                body_timeout_s=settings.body_timeout_s,
            )


SliceForm = Annotated[dict[str, bytes], Depends(FormFiles("file", work="slice"))]
VolumeForm = Annotated[dict[str, bytes], Depends(FormFiles("file", work="volume"))]
EvaluateForm = Annotated[dict[str, bytes], Depends(FormFiles("file", "mask", work="slice"))]


def multipart_body(*fields: str, descriptions: dict[str, str] | None = None) -> dict[str, Any]:
    """OpenAPI ``requestBody`` for a multipart form of binary file fields (parsed by hand)."""
    descriptions = descriptions or {}
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": list(fields),
                        "properties": {
                            name: {
                                "type": "string",
                                "format": "binary",
                                "description": descriptions.get(name, ""),
                            }
                            for name in fields
                        },
                    }
                }
            },
        }
    }


INLINE_MAX_BYTES = 512 * 1024
INLINE_MAX_PIXELS = 512 * 512
"""An upload of at most this many bytes is sniffed on the event loop, and a slice of at most this
many pixels is decoded and its mask encoded there: for a 256 x 256 slice each takes well under a
millisecond, less than the hand-off to a pool thread and back (about 0.5 ms each on the 2-core
EPYC, three per slice request). Anything larger goes to a thread, so the loop never stalls."""


async def on_loop_if(small: bool, function: Callable[..., T], *args: Any) -> T:
    """``function(*args)`` here when ``small``, else in a pool thread."""
    if small:
        return function(*args)
    return await run_in_threadpool(function, *args)


@asynccontextmanager
async def admitted(
    service: ModelService, settings: ServeSettings, *uploads: bytes, what: str = "image"
) -> AsyncIterator[list[DecodedSize]]:
    """Reserve the memory that decoding ``uploads`` and answering will hold, bounded from the
    files' headers before a pixel is decoded (422 over the limits, 503 when not free in time).
    Gives each upload's :class:`DecodedSize`."""
    limits = settings.decode_limits()
    need = 0
    sizes = []
    for upload in uploads:
        size = await on_loop_if(len(upload) <= INLINE_MAX_BYTES, decoded_size, upload, limits)
        sizes.append(size)
        need += request_bytes(size, settings.max_batch)
    async with service.reserve(need, what):
        yield sizes


def small_slice(upload: bytes, size: DecodedSize) -> bool:
    """Whether decoding this upload is cheap enough for the event loop (see INLINE_MAX_BYTES)."""
    return len(upload) <= INLINE_MAX_BYTES and size.pixels * size.slices <= INLINE_MAX_PIXELS


class ClientGone(Exception):
    """The client closed the connection; its work was cancelled."""


async def cancel_on_disconnect(request: Request, work: Awaitable[T], poll_s: float = 0.25) -> T:
    """Await ``work``, cancelling it as soon as the client disconnects (raises ClientGone)."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=poll_s)
            if done:
                return task.result()
            if await request.is_disconnected():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                raise ClientGone("the client disconnected; its work was cancelled")
    finally:
        if not task.done():
            task.cancel()
