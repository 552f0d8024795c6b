"""Memory admission: every request reserves the bytes it will hold before it holds them.

The upload's body is reserved before it is read (its Content-Length, else the upload limit),
and its decoded size, bounded from the file's header(s) by :func:`inference.decode.decoded_size`,
before a pixel is decoded. Reservations come out of one byte budget per process
(``LGGSEG_SERVE_DECODE_BUDGET_MB``); a request that does not fit within ``ADMISSION_WAIT_S``
gets 503 with Retry-After, one that could never fit gets 422. So whatever arrives, the memory
the requests hold stays under the budget (inference/README.md states the measured ceiling).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from inference.api.batching import Overloaded
from inference.decode import DecodedSize, DecodeError

MIB = 2**20

PREP_BYTES_PER_PIXEL = 48
"""The predictor's copies of one slice at its input size while preparing it (float32 H x W x 3,
the resize's float64 working copy) and its outputs (probabilities, mask)."""
OUTPUT_BYTES_PER_PIXEL = 6
"""What each slice in a batch keeps at the input size (float32 probabilities, masks)."""
FIXED_BYTES = 8 * MIB
"""Per request: the batch tensors at the model's input size, encoders, small buffers."""


def request_bytes(size: DecodedSize, max_batch: int) -> int:
    """Bytes a request holds from decoding to its answer, besides the upload itself."""
    stored = size.values * size.itemsize * size.copies
    checks = size.values * 5  # the NaN/Inf check's float32 view and its boolean result
    prepared = size.pixels * (
        PREP_BYTES_PER_PIXEL + min(size.slices, max_batch) * OUTPUT_BYTES_PER_PIXEL
    )
    masks = size.pixels * size.slices * 2  # the mask volume and its encoded copy
    return size.inflated + stored + checks + prepared + masks + FIXED_BYTES


class MemoryBudget:
    """A byte semaphore: ``reserve(n)`` waits up to ``wait_s`` for ``n`` bytes, else 503."""

    def __init__(self, total_bytes: int, wait_s: float) -> None:
        self.total = total_bytes
        self.wait_s = wait_s
        self.used = 0
        self._changed = asyncio.Condition()

    @asynccontextmanager
    async def reserve(self, nbytes: int, what: str) -> AsyncIterator[None]:
        if nbytes > self.total:
            raise DecodeError(
                f"the {what} would need {nbytes / MIB:.0f} MiB of memory; this server's budget "
                f"is {self.total / MIB:.0f} MiB (LGGSEG_SERVE_DECODE_BUDGET_MB): send a smaller "
                "image or volume"
            )
        async with self._changed:
            try:
                async with asyncio.timeout(self.wait_s):
                    await self._changed.wait_for(lambda: self.used + nbytes <= self.total)
            except TimeoutError:
                raise Overloaded(
                    f"the memory for this {what} is not free within {self.wait_s:g} s"
                ) from None
            self.used += nbytes
        try:
            yield
        finally:
            async with self._changed:
                self.used -= nbytes
                self._changed.notify_all()
