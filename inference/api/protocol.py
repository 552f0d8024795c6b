"""uvicorn's httptools protocol with two guards against connections that hold the server hostage.

- **Request-head deadline**: a connection must finish sending each request's line and headers
  within ``HEADER_TIMEOUT_S`` of opening (or of its previous answer); else it is closed. Idle
  connections that never send a request, and slow-drip ("slowloris") headers, are closed.
  (uvicorn's keep-alive timeout only starts after a first answer, and any byte resets it.)
- **Head size cap, answered 431**: a request line and headers over ``MAX_HEADER_BYTES`` get 431
  Request Header Fields Too Large and the connection is closed. Counted twice: the parsed line
  and headers (a head that ends within one read), and the whole reads that arrive while a head
  is unfinished (httptools buffers a header until it ends and has no cap of its own: a client
  could grow one header value for as long as it sends), so at most one read (uvloop: 256 KiB)
  is held beyond the cap.

Selected by ``python -m inference.serve`` (uvicorn's ``http`` option is this class's path).
httptools parses in C: a 256 x 256 slice's request costs 0.3 ms less than with uvicorn's h11
protocol, which parses in Python (inference/README.md, "What the API adds").
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from inference.api.settings import get_settings

log = logging.getLogger(__name__)


class _HeadTooLarge(Exception):
    """Raised from a parser callback: the parser stops, uvicorn calls ``send_400_response``."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """:class:`uvicorn.protocols.http.httptools_impl.HttpToolsProtocol` plus a head deadline
    and a head size cap (431)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = get_settings()
        self.header_timeout_s = settings.header_timeout_s
        self.max_header_bytes = settings.max_header_bytes
        self._head_deadline: asyncio.TimerHandle | None = None
        self._in_head = True  # a request head is awaited or arriving
        self._head_size = 0  # the current head's line and headers, as parsed
        self._head_reads = 0  # bytes of the reads that arrived while a head was unfinished
        self._heads_ended = 0
        self._too_large = False

    # ------------------------------------------------------------------ transport events

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()

    def data_received(self, data: bytes) -> None:
        in_head_before, heads_before = self._in_head, self._heads_ended
        super().data_received(data)
        if not in_head_before or self._heads_ended != heads_before:
            return  # a head ended in this read; one that began in it counts from the next read
        if self.transport.is_closing():
            return
        self._head_reads += len(data)
        if self._head_reads > self.max_header_bytes:
            self._send_431()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_deadline()
        super().connection_lost(exc)

    # ------------------------------------------------------------------ parser events

    def on_message_begin(self) -> None:
        self._head_size = 0
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url) + 16)  # with the method and "HTTP/1.1"
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value) + 4)  # with ": " and CRLF
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_reads = 0
        self._heads_ended += 1
        self._stop_head_deadline()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True  # the next request's head may follow at once (pipelining)
        if self.cycle is not None and self.cycle.response_complete:
            self._arm_head_deadline()  # answered before its body ended (413, 401, ...)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._in_head:
            self._arm_head_deadline()

    # ------------------------------------------------------------------ the guards

    def _arm_head_deadline(self) -> None:
        if self._head_deadline is None and not self.transport.is_closing():
            self._head_deadline = self.loop.call_later(self.header_timeout_s, self._head_late)

    def _stop_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_late(self) -> None:
        self._head_deadline = None
        if self._in_head and not self.transport.is_closing():
            self.transport.close()  # no complete request arrived: no answer is owed

    def _count_head(self, nbytes: int) -> None:
        self._head_size += nbytes
        if self._head_size > self.max_header_bytes:
            self._too_large = True
            raise _HeadTooLarge

    def send_400_response(self, msg: str) -> None:
        if self._too_large:  # the parser stopped on _HeadTooLarge
            self._send_431()
        else:
            super().send_400_response(msg)

    def _send_431(self) -> None:
        log.warning("request head over %d bytes: 431", self.max_header_bytes)
        body = (
            f"request line and headers are over the limit of {self.max_header_bytes} bytes"
        ).encode()
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: text/plain; charset=utf-8\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n"
            b"connection: close\r\n\r\n" + body
        )
        self.transport.close()
