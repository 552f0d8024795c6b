"""uvicorn's h11 protocol with two guards against connections that hold the server hostage.

- **Request-head deadline**: a connection must finish sending each request's line and headers
  within ``HEADER_TIMEOUT_S`` of opening (or of its previous answer); else it is closed. Idle
  connections that never send a request, and slow-drip ("slowloris") headers, are closed.
  (uvicorn's keep-alive timeout only starts after a first answer, and any byte resets it.)
- **Head size cap, answered 431**: h11 refuses a request head over ``MAX_HEADER_BYTES``
  (``h11_max_incomplete_event_size``, buffered at most one read beyond it); uvicorn would
  answer that 400, this answers 431 Request Header Fields Too Large.

Selected by ``python -m inference.serve`` (``http="inference.api.protocol:GuardedH11Protocol"``).
h11 parses in Python; next to the network's ~100 ms a slice its cost does not show.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from inference.api.settings import get_settings

log = logging.getLogger(__name__)


class GuardedH11Protocol(H11Protocol):
    """:class:`uvicorn.protocols.http.h11_impl.H11Protocol` plus a head deadline and 431."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = get_settings()
        self.header_timeout_s = settings.header_timeout_s
        self.max_header_bytes = settings.max_header_bytes
        self._head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._watch_head()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch_head()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_deadline()
        super().connection_lost(exc)

    def _watch_head(self) -> None:
        """Arm the deadline while a request head is awaited; disarm once it has arrived."""
        awaiting_head = self.conn.their_state is h11.IDLE and not self.transport.is_closing()
        if awaiting_head and self._head_deadline is None:
            self._head_deadline = self.loop.call_later(self.header_timeout_s, self._head_late)
        elif not awaiting_head:
            self._stop_head_deadline()

    def _stop_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_late(self) -> None:
        self._head_deadline = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()  # nothing useful was sent: no answer is owed

    def send_400_response(self, msg: str) -> None:
        buffered, _ = self.conn.trailing_data
        if len(buffered) <= self.max_header_bytes:
            super().send_400_response(msg)
            return
        log.warning("request head over %d bytes: 431", self.max_header_bytes)
        body = (
            f"request line and headers are over the limit of {self.max_header_bytes} bytes"
        ).encode()
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        response = h11.Response(
            status_code=431, headers=headers, reason=b"Request Header Fields Too Large"
        )
        for event in (response, h11.Data(data=body), h11.EndOfMessage()):
            self.transport.write(self.conn.send(event))  # type: ignore[arg-type]
        self.transport.close()
