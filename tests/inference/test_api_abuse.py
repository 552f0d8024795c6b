"""Issue 12, in-process: hostile files, memory admission, the work limit, probes under load,
cancelled volumes, and what errors and logs may show."""

from __future__ import annotations

import asyncio
import gzip
import logging
import threading
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio.to_thread
import numpy as np
import pytest
from fastapi.testclient import TestClient
from starlette.concurrency import run_in_threadpool

from inference.api import create_app
from inference.api.admission import request_bytes
from inference.api.middleware import RedactQueryFilter, redact_query
from inference.decode import DecodeLimits, DecodeProblem, decode_slice, decode_volume, decoded_size
from inference.predictor import Predictor
from tests.inference.api_helpers import SlowPredictor, metric_value, serving, settings
from tests.inference.samples import (
    brain_like,
    corrupt_tiff_data,
    hostile_niftis,
    jpeg_bytes,
    nifti_bytes,
    png_bytes,
    tiff_bytes,
    tiff_with_compression,
    zip_bytes,
)


def slow_app(checkpoint: Path, delay_s: float = 0.0, **overrides: Any) -> tuple[Any, SlowPredictor]:
    slow = SlowPredictor(Predictor.from_checkpoint(checkpoint), delay_s=delay_s)
    return create_app(settings(checkpoint, **overrides), predictor=slow), slow


def upload(data: bytes) -> dict[str, tuple[str, bytes]]:
    return {"file": ("x", data)}


# ----------------------------------------------------------------- decoder failures


def hostile_uploads() -> dict[str, tuple[str, bytes]]:
    rgb = brain_like(32, 32)
    cases = {
        "ZSTD TIFF": ("/v1/segment", tiff_with_compression(rgb, 50000)),
        "corrupt LZMA TIFF": (
            "/v1/segment",
            corrupt_tiff_data(tiff_bytes(rgb, compression="lzma")),
        ),
    }
    for name, data in hostile_niftis().items():
        cases[name] = ("/v1/segment/volume", data)
        cases[f"{name} (gz)"] = ("/v1/segment/volume", gzip.compress(data))
    return cases


def test_every_decoder_failure_is_422_before_inference_and_logs_no_values(
    tiny_checkpoint: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    app, slow = slow_app(tiny_checkpoint)
    with TestClient(app) as c:
        for name, (path, data) in hostile_uploads().items():
            response = c.post(path, files=upload(data))
            assert response.status_code == 422, (name, response.text)
            assert response.json()["detail"], name
            assert c.get("/healthz").status_code == 200
    assert slow.batches == []  # decided before the model ran
    assert not any(record.exc_info for record in caplog.records)
    for leak in ("Traceback", "decompose", "nan", "inf ", "255", "srow", "quatern_b ="):
        assert leak not in caplog.text


def test_an_unexpected_error_is_500_and_its_message_never_logged(
    tiny_checkpoint: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class Failing:
        card, model_version, threshold = {}, "test", 0.5

        def predict_batch(self, images: list[np.ndarray], timings: object = None) -> list[Any]:
            raise RuntimeError("descrip=Jane Doe 1961")

    caplog.set_level(logging.DEBUG)
    app = create_app(settings(tiny_checkpoint), predictor=Failing())
    with TestClient(app, raise_server_exceptions=False) as c:
        response = c.post("/v1/segment", files=upload(png_bytes(brain_like(16, 16))))
        assert response.status_code == 500 and "internal error" in response.json()["detail"]
        assert c.get("/healthz").status_code == 200
    assert "RuntimeError" in caplog.text and "test_api_abuse.py" in caplog.text  # type, place
    assert "Jane" not in caplog.text and "Jane" not in response.text
    assert not any(record.exc_info for record in caplog.records)


def test_invalid_query_gives_a_string_detail_without_the_value(tiny_checkpoint: Path) -> None:
    with TestClient(create_app(settings(tiny_checkpoint))) as c:
        response = c.post(
            "/v1/segment?format=xml-evil", files=upload(png_bytes(brain_like(8, 8, 0)))
        )
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "format" in detail and "'png' or 'json'" in detail
    assert "evil" not in detail


# ----------------------------------------------------------------- volumes: spacing, cancel


def test_volume_json_never_carries_null_nan_or_absurd_volumes(tiny_checkpoint: Path) -> None:
    vol = np.stack([brain_like(16, 16, s) for s in range(2)], axis=2)
    huge = nifti_bytes(vol, pixdim=[1, 1e30, 1e30, 1e30, 1, 1, 1, 1])
    mm2 = nifti_bytes(vol, np.diag([2.0, 2.0, 3.0, 1.0]), xyzt_units=2)
    metres = nifti_bytes(vol, np.diag([0.002, 0.002, 0.003, 1.0]), xyzt_units=1)
    with TestClient(create_app(settings(tiny_checkpoint))) as c:
        absurd = c.post("/v1/segment/volume?format=json", files=upload(huge))
        good = c.post("/v1/segment/volume?format=json", files=upload(mm2))
        in_m = c.post("/v1/segment/volume?format=json", files=upload(metres))
    assert absurd.status_code == 200
    assert "NaN" not in absurd.text and "null" not in absurd.text and "e+" not in absurd.text
    body = absurd.json()
    assert "tumour_volume_ml" not in body and "voxels only" in body["volume_unavailable"]
    assert body["tumour_voxels"] >= 0
    for response in (good, in_m):
        body = response.json()
        assert body["voxel_volume_mm3"] == pytest.approx(12.0)
        assert body["tumour_volume_ml"] == pytest.approx(body["tumour_voxels"] * 12.0 / 1000)


def test_a_volume_is_cancelled_when_its_client_goes_away(tiny_checkpoint: Path) -> None:
    """At the ASGI level: the body, then a disconnect while the slices are being segmented."""
    app, slow = slow_app(tiny_checkpoint, delay_s=0.1, max_batch=1)
    volume = nifti_bytes(np.stack([brain_like(16, 16, s) for s in range(40)], axis=2))
    boundary = b"B0UND"
    body = (
        b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"\r\n\r\n'
        + volume + b"\r\n--" + boundary + b"--\r\n"
    )  # fmt: skip
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "path": "/v1/segment/volume", "raw_path": b"/v1/segment/volume", "query_string": b"",
        "root_path": "", "scheme": "http", "server": ("test", 80), "client": ("1.2.3.4", 5),
        "headers": [(b"content-type", b"multipart/form-data; boundary=" + boundary),
                    (b"content-length", str(len(body)).encode())],
    }  # fmt: skip
    sent: list[dict[str, Any]] = []

    async def scenario() -> tuple[int, bool, int]:
        gone = asyncio.Event()
        delivered = False

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        async with app.router.lifespan_context(app):
            request = asyncio.create_task(app(scope, receive, send))
            while len(slow.batches) < 3:  # the volume is running
                await asyncio.sleep(0.02)
            gone.set()
            await asyncio.wait_for(request, 10)
            await asyncio.sleep(0.3)  # a batch already running may finish; no new one starts
            batches = len(slow.batches)
            slot_free = not app.state.service._volumes.locked()
            async with serving(app) as http:  # the next volume is admitted at once
                after = await http.post("/v1/segment/volume", files=upload(volume[:0] or
                                        nifti_bytes(np.stack([brain_like(8, 8)] * 2, axis=2))))
            return batches, slot_free, after.status_code

    batches, slot_free, after = asyncio.run(scenario())
    assert batches < 10  # of 40: the rest was never run
    assert slot_free and after == 200
    assert sent and sent[0]["status"] == 499


# ----------------------------------------------------------------- work limit and probes


def test_work_limit_refuses_work_but_never_the_probes(tiny_checkpoint: Path) -> None:
    app, _ = slow_app(tiny_checkpoint, delay_s=0.6, max_concurrent_requests=1, max_batch=1)
    data = png_bytes(brain_like(16, 16))

    async def scenario() -> tuple[list[Any], list[int]]:
        async with serving(app) as http:
            work = [asyncio.create_task(http.post("/v1/segment", files=upload(data)))
                    for _ in range(3)]  # fmt: skip
            await asyncio.sleep(0.2)
            probes = [(await http.get(p)).status_code for p in ("/healthz", "/readyz", "/metrics")]
            return list(await asyncio.gather(*work)), probes

    answers, probes = asyncio.run(scenario())
    assert probes == [200, 200, 200]
    assert sorted(r.status_code for r in answers) == [200, 503, 503]
    refused = next(r for r in answers if r.status_code == 503)
    assert refused.headers["Retry-After"] == "1" and "in progress" in refused.json()["detail"]


def test_readyz_never_waits_for_the_thread_pool(tiny_checkpoint: Path) -> None:
    """Decoding fills the thread pool under load; the probes must not queue behind it."""
    app = create_app(settings(tiny_checkpoint))
    release = threading.Event()

    async def scenario() -> int:
        limiter = anyio.to_thread.current_default_thread_limiter()
        tokens = limiter.total_tokens
        limiter.total_tokens = 1
        try:
            async with serving(app) as http:
                blocker = asyncio.create_task(run_in_threadpool(release.wait, 10))
                await asyncio.sleep(0.05)
                try:
                    ready = await asyncio.wait_for(http.get("/readyz"), 2)
                finally:
                    release.set()
                    await blocker
                return ready.status_code
        finally:
            limiter.total_tokens = tokens

    assert asyncio.run(scenario()) == 200


# ----------------------------------------------------------------- memory admission


def big_hostile_nifti(megabytes: int) -> bytes:
    """A gzipped float32 NIfTI of ``megabytes`` MiB decoded, a few KiB on the wire, with one
    NaN at the end (refused, but only once decoded)."""
    values = np.zeros(megabytes * 2**18, np.float32)
    values[-1] = np.nan
    return nifti_bytes(values.reshape(128, 128, -1, order="F"), compress=True)


def test_an_upload_that_could_never_fit_the_budget_is_422_before_decoding(
    tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from inference.api.routers import segment

    decoded: list[int] = []
    monkeypatch.setattr(segment, "decode_volume", lambda *a: decoded.append(1))
    bomb = big_hostile_nifti(64)
    assert len(bomb) < 2**20
    with TestClient(create_app(settings(tiny_checkpoint, decode_budget_mb=32))) as c:
        response = c.post("/v1/segment/volume", files=upload(bomb))
    assert response.status_code == 422 and "budget" in response.json()["detail"]
    assert decoded == []


def test_concurrent_requests_share_the_budget_then_get_503(tiny_checkpoint: Path) -> None:
    """A budget of 16 MiB holds one slice request (8 MiB fixed share each) at a time."""
    app, _ = slow_app(
        tiny_checkpoint, delay_s=0.8, decode_budget_mb=16, admission_wait_s=0.2, max_batch=1
    )
    data = png_bytes(brain_like(16, 16))

    async def scenario() -> tuple[list[Any], str]:
        async with serving(app) as http:
            answers = await asyncio.gather(
                *(http.post("/v1/segment", files=upload(data)) for _ in range(3))
            )
            return list(answers), (await http.get("/metrics")).text

    answers, metrics = asyncio.run(scenario())
    assert sorted(r.status_code for r in answers) == [200, 503, 503]
    refused = next(r for r in answers if r.status_code == 503)
    assert "memory" in refused.json()["detail"] and refused.headers["Retry-After"] == "1"
    assert metric_value(metrics, "lggseg_memory_reserved_bytes") == 0.0


@pytest.mark.parametrize(
    ("name", "make", "decode"),
    [
        ("png", lambda: png_bytes(brain_like(300, 200)), decode_slice),
        ("jpeg", lambda: jpeg_bytes(brain_like(300, 200)), decode_slice),
        ("tiff-float", lambda: tiff_bytes(brain_like(300, 200).astype(np.float64)), decode_slice),
        ("nifti-gz", lambda: big_hostile_nifti(8), decode_volume),
        ("nifti-scaled", lambda: nifti_bytes(np.ones((64, 64, 30, 3), np.int16), scl_slope=2.0),
         decode_volume),
        ("zip", lambda: zip_bytes({f"s_{i}.tif": tiff_bytes(brain_like(128, 128, i))
                                   for i in range(12)}), decode_volume),
    ],  # fmt: skip
)
def test_the_header_bound_covers_what_decoding_allocates(
    name: str, make: Callable[[], bytes], decode: Callable[..., object]
) -> None:
    """tracemalloc sees numpy and Python allocations; Pillow's own buffer is in the bound too."""
    data, limits = make(), DecodeLimits()
    bound = request_bytes(decoded_size(data, limits), max_batch=8) - 8 * 2**20  # less fixed
    tracemalloc.start()
    try:
        decode(data, limits)
    except DecodeProblem:
        pass
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak <= bound, (name, peak, bound)


# ----------------------------------------------------------------- what may be shown


def test_readyz_shows_the_missing_checkpoints_name_not_its_folder(tmp_path: Path) -> None:
    missing = tmp_path / "private" / "deploy" / "absent.safetensors"
    with TestClient(create_app(settings(missing))) as c:
        reason = c.get("/readyz").json()["reason"]
    assert "absent.safetensors" in reason and "not found" in reason
    assert str(tmp_path) not in reason and "private" not in reason


def test_keys_in_the_url_are_refused_and_never_logged(tiny_checkpoint: Path) -> None:
    app = create_app(settings(tiny_checkpoint, api_key="s3cret"))
    with TestClient(app) as c:
        for query in ("api_key=s3cret", "key=s3cret", "token=s3cret"):
            response = c.post(
                f"/v1/segment?{query}",
                files=upload(png_bytes(brain_like(8, 8))),
                headers={"X-API-Key": "s3cret"},
            )
            assert response.status_code == 400 and "X-API-Key header" in response.json()["detail"]
    assert redact_query("/v1/segment?format=json&api_key=s3cret") == (
        "/v1/segment?format=json&api_key=REDACTED"
    )
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d',
        ("1.2.3.4:5", "POST", "/v1/segment?X-Api-Key=s3cret&format=png", "1.1", 400), None,
    )  # fmt: skip
    RedactQueryFilter().filter(record)
    assert "s3cret" not in record.getMessage() and "format=png" in record.getMessage()
    access_filters = logging.getLogger("uvicorn.access").filters
    assert any(isinstance(f, RedactQueryFilter) for f in access_filters)
