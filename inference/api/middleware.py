"""ASGI middleware: the body size limit (decided from Content-Length before reading, else by
counting as it streams), and the last-resort 500 that logs no values."""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote_plus

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)


def _too_large(limit: int) -> str:
    return f"the request body is larger than the limit of {limit} bytes"


class BodySizeLimitMiddleware:
    """Answer 413 to bodies over ``max_bytes``; memory stays bounded by the limit.

    A declared Content-Length over the limit is refused before a byte of the body is read.
    Without one (chunked upload), the body is counted as it arrives and the request fails
    with 413 as soon as the count passes the limit.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                await _send_json(send, 400, "invalid Content-Length header")
                return
            if size > self.max_bytes:
                await _send_json(send, 413, _too_large(self.max_bytes))
                return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, _too_large(self.max_bytes))
            return message

        await self.app(scope, counting_receive, send)


async def _send_json(
    send: Send, status: int, detail: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                *(extra or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


PROBES = frozenset({"/healthz", "/readyz", "/metrics"})
"""Paths that are never counted as work nor refused for load: a probe must see the truth."""


class WorkLimitMiddleware:
    """503 with Retry-After beyond ``max_requests`` requests in progress (probes exempt).

    This replaces uvicorn's ``limit_concurrency``, which counts *connections* (idle ones too)
    and refuses every path, ``/healthz`` included, once they are reached.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_requests: int,
        retry_after_s: int,
        on_reject: Callable[[], None] | None = None,
    ) -> None:
        self.app = app
        self.max_requests = max_requests
        self.retry_after_s = retry_after_s
        self.on_reject = on_reject
        self.active = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in PROBES:
            await self.app(scope, receive, send)
            return
        if self.active >= self.max_requests:
            if self.on_reject is not None:
                self.on_reject()
            detail = f"overloaded, retry later: {self.active} requests are in progress"
            retry = [(b"retry-after", str(self.retry_after_s).encode())]
            await _send_json(send, 503, detail, retry)
            return
        self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1


def describe_exception(exc: BaseException) -> str:
    """The exception's type and where it was raised (file:line in function, innermost last),
    without its message or any value: messages of third-party errors can carry header values
    or file bytes, which must never reach the log."""
    frames = traceback.extract_tb(exc.__traceback__)[-6:]
    where = " <- ".join(
        f"{Path(f.filename).name}:{f.lineno} in {f.name}" for f in reversed(frames)
    )
    return f"{type(exc).__module__}.{type(exc).__qualname__} at {where or 'unknown'}"


class UnhandledErrorMiddleware:
    """Answer 500 ``{"detail": "internal error"}`` to an unexpected exception and log only its
    type and location (:func:`describe_exception`), never its message or a full traceback."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:  # noqa: BLE001 - the last line of defence, by design
            log.error("unhandled error on %s: %s", _route(scope), describe_exception(exc))
            if not started:
                await _send_json(send, 500, "internal error; the server log has the location")


def _route(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return f"{scope.get('method', '')} {path if isinstance(path, str) else 'unmatched route'}"


KEYLIKE_PARAMS = ("key", "token", "secret", "password", "auth")


def is_keylike(name: str) -> bool:
    """A query parameter name that looks like it carries a credential."""
    return any(word in name.lower() for word in KEYLIKE_PARAMS)


class RedactQueryFilter(logging.Filter):
    """Blank the values of key-like query parameters in uvicorn's access log lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], redact_query(args[2]), *args[3:])
        return True


def redact_query(path: str) -> str:
    """``/v1/x?api_key=s&format=json`` -> ``/v1/x?api_key=REDACTED&format=json``."""
    base, sep, query = path.partition("?")
    if not sep:
        return path
    parts = []
    for pair in query.split("&"):
        name = unquote_plus(pair.partition("=")[0])
        parts.append(f"{pair.partition('=')[0]}=REDACTED" if is_keylike(name) else pair)
    return f"{base}?{'&'.join(parts)}"


def install_access_log_filter() -> None:
    """Add :class:`RedactQueryFilter` to ``uvicorn.access`` once per process."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactQueryFilter) for f in access.filters):
        access.addFilter(RedactQueryFilter())
