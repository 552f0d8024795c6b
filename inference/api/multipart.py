"""Read multipart/form-data uploads into memory, with strict limits; nothing touches the disk.

Starlette's own form parser spools files over 1 MB to a temporary file; medical uploads must
not land on disk, so the body is parsed here with python-multipart's streaming parser, and the
parts the endpoint asks for are kept in memory (all others are discarded as they stream).
File names and part headers other than the field name are never stored or logged.

Answers: malformed multipart (no boundary, no closing boundary, too many parts, oversized part
headers) -> 400; a missing field or an empty file -> 422; a body that is not multipart -> 415.
A field may be asked for as repeated (many parts of one name, e.g. the files of a DICOM study,
at most ``max_repeated`` of them) or optional (absent is no error).

The parser hands control back to the event loop between 64 KiB pieces, so a hostile upload
never stalls other requests (``/healthz`` keeps answering).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from fastapi import HTTPException, Request
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect

PIECE = 64 * 1024


class _Malformed(ValueError):
    pass


class _FormCollector:
    """python-multipart callbacks that keep the wanted fields' bytes and count everything."""

    def __init__(
        self,
        wanted: tuple[str, ...],
        max_parts: int,
        max_header_bytes: int,
        repeated: tuple[str, ...] = (),
        max_repeated: int = 0,
    ) -> None:
        self.wanted = wanted
        self.max_parts = max_parts
        self.max_header_bytes = max_header_bytes
        self.repeated = repeated
        self.max_repeated = max_repeated
        self.fields: dict[str, bytearray] = {}
        self.lists: dict[str, list[bytearray]] = {name: [] for name in repeated}
        self.parts = 0
        self.finished = False
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._disposition: bytes | None = None
        self._current: bytearray | None = None

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_end": self.on_end,
        }

    def on_part_begin(self) -> None:
        self.parts += 1
        if self.parts > self.max_parts:
            raise _Malformed(f"more than {self.max_parts} parts in the form")
        self._disposition = None
        self._current = None

    def _check_header_size(self) -> None:
        if len(self._header_name) + len(self._header_value) > self.max_header_bytes:
            raise _Malformed(f"a part header is longer than {self.max_header_bytes} bytes")

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]
        self._check_header_size()

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]
        self._check_header_size()

    def on_header_end(self) -> None:
        if bytes(self._header_name).strip().lower() == b"content-disposition":
            self._disposition = bytes(self._header_value)
        self._header_name.clear()
        self._header_value.clear()

    def on_headers_finished(self) -> None:
        if self._disposition is None:
            raise _Malformed("a part has no Content-Disposition header")
        _, options = parse_options_header(self._disposition)
        raw_name = options.get(b"name")
        if raw_name is None:
            raise _Malformed('a part\'s Content-Disposition has no "name"')
        name = raw_name.decode("utf-8", "replace")
        if name in self.lists:
            if len(self.lists[name]) >= self.max_repeated:
                raise _Malformed(f"more than {self.max_repeated} '{name}' parts in the form")
            self._current = bytearray()
            self.lists[name].append(self._current)
        elif name in self.wanted:
            if name in self.fields:
                raise _Malformed(f"the field '{name}' appears more than once")
            self._current = self.fields[name] = bytearray()

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._current is not None:
            self._current += data[start:end]

    def on_part_end(self) -> None:
        self._current = None

    def on_end(self) -> None:
        self.finished = True


async def _stream_with_deadline(request: Request, pause_s: float) -> AsyncIterator[bytes]:
    """The body's chunks; 408 when the client pauses longer than ``pause_s`` (slow upload)."""
    chunks = request.stream().__aiter__()
    while True:
        try:
            async with asyncio.timeout(pause_s):
                chunk = await anext(chunks)
        except StopAsyncIteration:
            return
        except TimeoutError:
            stalled = f"the upload stalled: no data for {pause_s:g} s"
            raise HTTPException(408, stalled, headers={"Connection": "close"}) from None
        yield chunk


@dataclass
class Form:
    """The fields a form was read for: single fields' bytes, repeated fields' parts in order."""

    fields: dict[str, bytes] = field(default_factory=dict)
    lists: dict[str, list[bytes]] = field(default_factory=dict)


async def read_form(
    request: Request,
    required: tuple[str, ...],
    *,
    max_parts: int = 8,
    max_header_bytes: int = 4096,
    body_timeout_s: float = 30.0,
) -> dict[str, bytes]:
    """Parse the request's multipart body in memory; return the ``required`` fields' bytes."""
    form = await read_parts(request, required, max_parts=max_parts,
                            max_header_bytes=max_header_bytes, body_timeout_s=body_timeout_s)
    return form.fields


async def read_parts(
    request: Request,
    required: tuple[str, ...],
    *,
    repeated: tuple[str, ...] = (),
    optional: tuple[str, ...] = (),
    max_repeated: int = 0,
    max_parts: int = 8,
    max_header_bytes: int = 4096,
    body_timeout_s: float = 30.0,
) -> Form:
    """Parse the request's multipart body in memory: the ``required`` fields (422 when missing
    or empty), the ``optional`` ones that were sent, and each ``repeated`` field's parts (at
    least one, none empty, at most ``max_repeated``; else 400/422 naming the field)."""
    content_type = request.headers.get("content-type")
    fields_text = ", ".join(f"'{name}'" for name in (*required, *repeated))
    if not content_type:
        raise HTTPException(
            422, f"send the upload as multipart/form-data with the field(s) {fields_text}"
        )
    media_type, params = parse_options_header(content_type)
    if media_type != b"multipart/form-data":
        raise HTTPException(415, f"expected multipart/form-data with the field(s) {fields_text}")
    boundary = params.get(b"boundary")
    if not boundary:
        raise HTTPException(400, "malformed multipart: the Content-Type has no boundary")
    collector = _FormCollector((*required, *optional), max_parts, max_header_bytes, repeated,
                               max_repeated)  # fmt: skip
    try:
        parser = MultipartParser(
            boundary,
            collector.callbacks(),  # type: ignore[arg-type]
            max_header_size=max_header_bytes,
        )
        async for chunk in _stream_with_deadline(request, body_timeout_s):
            for start in range(0, len(chunk), PIECE):
                parser.write(chunk[start : start + PIECE])
                await asyncio.sleep(0)  # let other requests run between pieces
        parser.finalize()
    except (_Malformed, FormParserError) as exc:
        raise HTTPException(400, f"malformed multipart: {exc}") from None
    except ClientDisconnect:
        raise HTTPException(400, "the client disconnected during the upload") from None
    if not collector.finished:
        raise HTTPException(400, "malformed multipart: the body ends before its closing boundary")
    form = Form()
    for name in required:
        if name not in collector.fields:
            raise HTTPException(422, f"missing form field '{name}' (expected {fields_text})")
        if not collector.fields[name]:
            raise HTTPException(422, f"the form field '{name}' is empty (0 bytes)")
        form.fields[name] = bytes(collector.fields[name])
    for name in optional:
        if name in collector.fields:
            form.fields[name] = bytes(collector.fields[name])
    for name in repeated:
        parts = collector.lists[name]
        if not parts:
            raise HTTPException(422, f"missing form field '{name}' (expected {fields_text})")
        empty = [str(n) for n, part in enumerate(parts, 1) if not part]
        if empty:
            raise HTTPException(422, f"'{name}' part(s) {', '.join(empty[:10])} are empty "
                                     "(0 bytes)")  # fmt: skip
        form.lists[name] = [bytes(part) for part in parts]
        parts.clear()
    return form
