"""RELIABILITY.md, case by case, against the API in-process: every bad input gets the stated
status and a message, and ``/healthz`` still answers after each."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from inference.api import create_app
from inference.predictor import Predictor
from tests.inference.api_helpers import SlowPredictor, metric_value, serving, settings
from tests.inference.samples import (
    brain_like,
    jpeg_bytes,
    make_checkpoint,
    multipage_tiff,
    nifti_bytes,
    png_bytes,
    set_png_size,
    tiff_bytes,
    tiff_declaring,
    zip_bytes,
)

LIMIT = 2 * 2**20  # upload limit of the module's app


@pytest.fixture(scope="module")
def client(tiny_checkpoint: Path) -> Iterator[TestClient]:
    with TestClient(create_app(settings(tiny_checkpoint, max_upload_bytes=LIMIT))) as c:
        yield c


def post(client: TestClient, data: bytes, path: str = "/v1/segment", **kw: Any) -> Any:
    return client.post(path, files={"file": ("upload", data)}, **kw)


def check(response: Any, status: int, message: str, client: TestClient) -> None:
    """The stated status, a message containing ``message``, and a healthy server after."""
    assert response.status_code == status, response.text
    assert message.lower() in response.json()["detail"].lower()
    assert client.get("/healthz").status_code == 200


# ----------------------------------------------------------------- upload and HTTP


def test_zero_byte_file(client: TestClient) -> None:
    check(post(client, b""), 422, "empty (0 bytes)", client)


def test_missing_or_misnamed_field(client: TestClient) -> None:
    misnamed = client.post("/v1/segment", files={"image": ("x", png_bytes(brain_like(8, 8)))})
    check(misnamed, 422, "missing form field 'file'", client)
    fields_only = client.post("/v1/segment", data={"file": "not a file"}, files={"x": ("x", b"1")})
    assert fields_only.status_code in (415, 422)  # the text field is read as bytes and sniffed
    check(client.post("/v1/segment"), 422, "multipart/form-data", client)
    not_multipart = client.post(
        "/v1/segment", content=b"{}", headers={"content-type": "application/json"}
    )
    check(not_multipart, 415, "multipart/form-data", client)


def test_body_over_the_limit_from_content_length(client: TestClient) -> None:
    response = post(client, b"\x00" * (LIMIT + 1))
    check(response, 413, f"limit of {LIMIT} bytes", client)


def test_body_over_the_limit_without_content_length(client: TestClient) -> None:
    boundary = "b0undary"
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x"\r\n\r\n'

    def chunks() -> Iterator[bytes]:
        yield head.encode()
        for _ in range(40):  # 40 x 64 KiB = 2.5 MiB > LIMIT, never announced up front
            yield b"\x00" * 65536

    response = client.post(
        "/v1/segment",
        content=chunks(),
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )
    check(response, 413, "larger than the limit", client)


def test_413_is_decided_before_reading_the_body(tiny_checkpoint: Path) -> None:
    """At the ASGI level: with a Content-Length over the limit no body message is pulled."""
    app = create_app(settings(tiny_checkpoint, max_upload_bytes=1024))
    pulled: list[dict[str, Any]] = []
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        message = {"type": "http.request", "body": b"\x00" * 4096, "more_body": False}
        pulled.append(message)
        return message

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "path": "/v1/segment", "raw_path": b"/v1/segment", "query_string": b"", "root_path": "",
        "scheme": "http", "server": ("test", 80), "client": ("1.2.3.4", 5),
        "headers": [(b"content-length", b"1000000000"),
                    (b"content-type", b"multipart/form-data; boundary=x")],
    }  # fmt: skip

    async def run() -> None:
        async with app.router.lifespan_context(app):
            await app(scope, receive, send)

    asyncio.run(run())
    assert sent[0]["status"] == 413
    assert pulled == []


def multipart(parts: list[tuple[str, bytes]], boundary: str = "XyZ", close: bool = True) -> bytes:
    body = b""
    for name, data in parts:
        body += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        body += data + b"\r\n"
    if close:
        body += f"--{boundary}--\r\n".encode()
    return body


def raw_post(client: TestClient, body: bytes, boundary: str = "XyZ") -> Any:
    return client.post(
        "/v1/segment",
        content=body,
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )


def test_malformed_multipart_is_400(client: TestClient) -> None:
    slice_png = png_bytes(brain_like(16, 16))
    no_end = multipart([("file", slice_png)], close=False)
    check(raw_post(client, no_end), 400, "before its closing boundary", client)
    many = multipart([(f"f{i}", b"x") for i in range(5000)])
    check(raw_post(client, many), 400, "more than 8 parts", client)
    huge_header = (
        b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="'
        + b"a" * 100_000
        + b'"\r\n\r\n'
        + slice_png
        + b"\r\n--XyZ--\r\n"
    )
    check(raw_post(client, huge_header), 400, "malformed multipart", client)
    no_boundary = client.post(
        "/v1/segment", content=no_end, headers={"content-type": "multipart/form-data"}
    )
    check(no_boundary, 400, "no boundary", client)
    twice = multipart([("file", slice_png), ("file", slice_png)])
    check(raw_post(client, twice), 400, "more than once", client)
    garbage = b"--XyZ\r\n\x00\x01\x02 not a header\r\n\r\n"
    check(raw_post(client, garbage), 400, "malformed multipart", client)


def test_healthz_answers_while_a_malformed_multipart_is_parsed(tiny_checkpoint: Path) -> None:
    app = create_app(settings(tiny_checkpoint, max_upload_bytes=64 * 2**20))
    body = multipart([("file", b"\x00" * (24 * 2**20))], close=False)  # 24 MiB, never closed
    headers = {"content-type": "multipart/form-data; boundary=XyZ"}

    async def scenario() -> tuple[int, list[int], list[float], float]:
        async with serving(app) as http:
            upload = asyncio.create_task(http.post("/v1/segment", content=body, headers=headers))
            await asyncio.sleep(0)
            statuses, finished = [], []
            for _ in range(5):
                statuses.append((await http.get("/healthz")).status_code)
                finished.append(time.perf_counter())
            response = await upload
            return response.status_code, statuses, finished, time.perf_counter()

    status, health, health_done, upload_done = asyncio.run(scenario())
    assert status == 400
    assert health == [200] * 5
    assert max(health_done) < upload_done  # all answered while the upload was still parsed


def test_unsupported_formats_are_415_whatever_they_claim(client: TestClient) -> None:
    samples = {
        "GIF": b"GIF89a" + b"\x00" * 100,
        "BMP": b"BM" + b"\x00" * 100,
        "PDF": b"%PDF-1.4 ...",
        "SVG": b"<svg xmlns='http://www.w3.org/2000/svg'></svg>",
        "zip": zip_bytes({"a.png": png_bytes(brain_like(8, 8))}),
        "unrecognised": os.urandom(512),
    }
    for name, data in samples.items():
        response = client.post("/v1/segment", files={"file": ("scan.png", data, "image/png")})
        check(response, 415, name, client)


@pytest.mark.parametrize(
    "filename",
    ["../../../../tmp/evil.png", "a\x00b.png", "x\r\nX-Injected: 1.png", "n" * 2000 + ".png"],
    ids=["traversal", "nul", "crlf", "long"],
)
def test_hostile_filenames_are_never_used_or_logged(
    client: TestClient, filename: str, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.DEBUG)
    data = png_bytes(brain_like(16, 16))
    boundary = "QqQ"
    disposition = f'form-data; name="file"; filename="{filename}"'.encode("latin-1")
    body = (
        f"--{boundary}\r\n".encode() + b"Content-Disposition: " + disposition + b"\r\n\r\n"
        + data + f"\r\n--{boundary}--\r\n".encode()
    )  # fmt: skip
    response = raw_post(client, body, boundary)
    assert response.status_code == 200
    assert Image.open(io.BytesIO(response.content)).size == (16, 16)
    assert not Path("/tmp/evil.png").exists()
    marker = filename[:20]
    metrics = client.get("/metrics").text
    assert marker not in caplog.text and marker not in metrics
    assert "evil" not in caplog.text and "evil" not in metrics
    assert "X-Injected" not in response.headers


def test_filename_longer_than_the_part_header_limit_is_400(client: TestClient) -> None:
    body = (
        b'--QqQ\r\nContent-Disposition: form-data; name="file"; filename="'
        + b"n" * 5000
        + b'.png"\r\n\r\n'
        + png_bytes(brain_like(8, 8))
        + b"\r\n--QqQ--\r\n"
    )
    check(raw_post(client, body, "QqQ"), 400, "header", client)


# ----------------------------------------------------------------- decoding


def test_truncated_and_corrupt_images_are_422(client: TestClient) -> None:
    for make in (png_bytes, jpeg_bytes, tiff_bytes):
        data = make(brain_like(64, 64))
        check(post(client, data[: len(data) // 2]), 422, "truncated", client)
    check(post(client, b"\x89PNG\r\n\x1a\n" + os.urandom(300)), 422, "corrupt", client)


def test_decompression_bombs_are_422_fast(client: TestClient) -> None:
    for bomb in (
        set_png_size(png_bytes(brain_like(8, 8)), 30000, 30000),
        tiff_declaring(30000, 30000),
    ):
        check(post(client, bomb), 422, "pixels", client)


def test_multiframe_is_422(client: TestClient) -> None:
    frames = [Image.fromarray(brain_like(16, 16, s)) for s in range(2)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="PNG", save_all=True, append_images=frames[1:])
    check(post(client, buffer.getvalue()), 422, "frames", client)
    check(post(client, multipage_tiff(3)), 422, "3 pages", client)


@pytest.mark.parametrize(
    "data",
    [
        tiff_bytes(brain_like(20, 30).astype(np.uint16) * 250),
        tiff_bytes(brain_like(20, 30).astype(np.int16) - 100),
        tiff_bytes(brain_like(20, 30).astype(np.float32) / 7.0),
        png_bytes(np.dstack([brain_like(20, 30), np.full((20, 30), 128, np.uint8)])),
    ],
    ids=["uint16", "int16", "float32", "rgba"],
)
def test_pixel_types_are_converted(client: TestClient, data: bytes) -> None:
    response = post(client, data, params={"format": "json"})
    assert response.status_code == 200
    assert response.json()["shape"] == [20, 30]


@pytest.mark.parametrize(
    "data",
    [
        png_bytes(brain_like(20, 30)[:, :, 0]),
        png_bytes(brain_like(20, 30)[:, :, 0].astype(np.uint16) * 250),
        png_bytes(np.dstack([brain_like(20, 30)[:, :, 0]] * 2), mode="LA"),
        nifti_bytes(brain_like(20, 30)[:, :, 0].astype(np.int16)),
    ],
    ids=["grey", "grey-16bit", "grey-alpha", "grey-nifti"],
)
def test_one_or_two_channel_slices_are_422_naming_the_three_sequences(
    client: TestClient, data: bytes
) -> None:
    response = post(client, data)
    check(response, 422, "pre-contrast, FLAIR, post-contrast", client)
    assert "1 channel" in response.json()["detail"]


def test_grey_volume_is_422_and_never_reaches_the_model(tiny_checkpoint: Path) -> None:
    slow = SlowPredictor(Predictor.from_checkpoint(tiny_checkpoint), delay_s=0.0)
    with TestClient(create_app(settings(tiny_checkpoint), predictor=slow)) as c:
        grey = nifti_bytes(brain_like(16, 16)[:, :, :2].astype(np.int16))  # 16 x 16 x 2 slices
        check(post(c, grey, path="/v1/segment/volume"), 422, "FLAIR", c)
    assert slow.batches == []  # refused before any batch: other requests' batches never fail


def test_palette_image(client: TestClient) -> None:
    buffer = io.BytesIO()
    Image.fromarray(brain_like(20, 30)).quantize(colors=8).save(buffer, format="PNG")
    assert post(client, buffer.getvalue()).status_code == 200


def test_extreme_aspect_ratio_is_422(client: TestClient) -> None:
    check(post(client, png_bytes(np.zeros((3, 300), np.uint8))), 422, "aspect ratio", client)


def test_constant_image_gives_a_mask_and_no_nan(client: TestClient) -> None:
    response = post(client, png_bytes(np.zeros((32, 32, 3), np.uint8)), params={"format": "json"})
    assert response.status_code == 200
    body = response.json()
    assert body["shape"] == [32, 32] and np.isfinite(body["max_probability"])
    assert "NaN" not in response.text


def test_nifti_cases_are_422(client: TestClient) -> None:
    ints = np.ones((16, 16, 3), np.int16)
    nan_vol = np.ones((16, 16, 3), np.float32)
    nan_vol[0, 0, 0] = np.nan
    cases = {
        "values": nifti_bytes(ints, dim=[3, 30000, 30000, 30000, 1, 1, 1, 1]),
        "NaN or infinite": nifti_bytes(nan_vol),
        "ambiguous": nifti_bytes(ints, scl_slope=0.0, scl_inter=4.0),
        "datatype code 32": nifti_bytes(ints, datatype=32),
    }
    for message, data in cases.items():
        check(post(client, data, path="/v1/segment/volume"), 422, message, client)
        check(post(client, gzip.compress(data), path="/v1/segment/volume"), 422, message, client)


def test_gzip_bomb_volume_is_bounded(client: TestClient) -> None:
    bomb = gzip.compress(nifti_bytes(np.ones((16, 16, 2, 3), np.uint8)) + b"\x00" * (200 * 2**20))
    assert len(bomb) < LIMIT
    response = post(client, bomb, path="/v1/segment/volume")
    assert response.status_code == 200  # the 200 MiB tail is never inflated
    assert client.get("/healthz").status_code == 200


# ----------------------------------------------------------------- faults and operations


def test_overload_gets_503_with_retry_after_and_recovers(tiny_checkpoint: Path) -> None:
    slow = SlowPredictor(Predictor.from_checkpoint(tiny_checkpoint), delay_s=0.4)
    app = create_app(settings(tiny_checkpoint, queue_limit=2, max_batch=1), predictor=slow)
    data = png_bytes(brain_like(16, 16))

    async def scenario() -> tuple[list[Any], Any, float]:
        async with serving(app) as http:
            start = time.perf_counter()
            answers = await asyncio.gather(
                *(http.post("/v1/segment", files={"file": ("x", data)}) for _ in range(8))
            )
            refused_in = time.perf_counter() - start
            after = await http.post("/v1/segment", files={"file": ("x", data)})
            return answers, after, refused_in

    answers, after, _ = asyncio.run(scenario())
    statuses = sorted(r.status_code for r in answers)
    assert len(answers) == 8  # nothing lost
    assert statuses.count(200) == 2 and statuses.count(503) == 6
    for refused in (r for r in answers if r.status_code == 503):
        assert refused.headers["Retry-After"] == "1"
        assert "overloaded" in refused.json()["detail"]
    assert after.status_code == 200  # recovers by itself
    assert slow.batches == [1, 1, 1]


def test_work_the_model_would_refuse_is_503_before_its_upload_is_read(
    tiny_checkpoint: Path,
) -> None:
    """With the one queue place taken, a slice is refused before its body is parsed or
    decoded: garbage that reading it would answer 415 gets 503. Likewise a second volume while
    one is being segmented. (Under overload, refusals then cost the admitted work no CPU.)"""
    slow = SlowPredictor(Predictor.from_checkpoint(tiny_checkpoint), delay_s=0.5)
    app = create_app(settings(tiny_checkpoint, queue_limit=1, max_batch=1), predictor=slow)
    garbage = {"file": ("x", b"not an image at all")}
    volume = nifti_bytes(np.stack([brain_like(16, 16, s) for s in range(2)], axis=2))

    async def busy_then(path: str, first: bytes) -> tuple[Any, Any]:
        async with serving(app) as http:
            running = asyncio.ensure_future(http.post(path, files={"file": ("x", first)}))
            service = app.state.service
            while service.batcher.pending == 0:
                await asyncio.sleep(0.01)
            refused = await http.post(path, files=garbage)
            return refused, await running

    for path, first in (("/v1/segment", png_bytes(brain_like(16, 16))),
                        ("/v1/segment/volume", volume)):  # fmt: skip
        refused, admitted = asyncio.run(busy_then(path, first))
        assert admitted.status_code == 200
        assert refused.status_code == 503, refused.text
        assert refused.headers["Retry-After"] == "1"
        assert "overloaded" in refused.json()["detail"]
    with TestClient(app) as idle:  # the same garbage on an idle model: read, then 415
        assert idle.post("/v1/segment", files=garbage).status_code == 415


def test_a_volume_is_not_refused_by_the_slices_latency_budget(tiny_checkpoint: Path) -> None:
    """Volumes bypass the slices' queue limit and latency budget (only the volume slot bounds
    them), and so does the check made before their upload is read."""
    slow = SlowPredictor(Predictor.from_checkpoint(tiny_checkpoint), delay_s=0.3)
    app = create_app(settings(tiny_checkpoint, latency_budget_s=0.05, max_batch=1), predictor=slow)
    data = png_bytes(brain_like(16, 16))
    volume = nifti_bytes(np.stack([brain_like(16, 16, s) for s in range(2)], axis=2))

    async def scenario() -> tuple[Any, Any]:
        async with serving(app) as http:
            await http.post("/v1/segment", files={"file": ("x", data)})  # measures the pace
            running = asyncio.ensure_future(http.post("/v1/segment", files={"file": ("x", data)}))
            while app.state.service.batcher.pending == 0:
                await asyncio.sleep(0.01)
            answer = await http.post("/v1/segment/volume", files={"file": ("v", volume)})
            return answer, await running

    answer, sliced = asyncio.run(scenario())
    assert sliced.status_code == 200
    assert answer.status_code == 200, answer.text


def test_micro_batching_groups_concurrent_requests(tiny_checkpoint: Path) -> None:
    slow = SlowPredictor(Predictor.from_checkpoint(tiny_checkpoint), delay_s=0.3)
    app = create_app(settings(tiny_checkpoint, max_batch=4, queue_limit=32), predictor=slow)
    images = [png_bytes(brain_like(24, 24, s)) for s in range(9)]

    async def scenario() -> list[Any]:
        async with serving(app) as http:
            return await asyncio.gather(
                *(http.post("/v1/segment", files={"file": ("x", d)}) for d in images)
            )

    answers = asyncio.run(scenario())
    assert [r.status_code for r in answers] == [200] * 9
    assert sum(slow.batches) == 9 and max(slow.batches) == 4 and len(slow.batches) <= 4
    direct = Predictor.from_checkpoint(tiny_checkpoint)
    for data, response in zip(images, answers, strict=True):  # batching changes no answer
        expected = direct.predict_slice(np.asarray(Image.open(io.BytesIO(data)))).mask * 255
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(response.content))), expected)


def test_request_timeout_is_503(tiny_checkpoint: Path) -> None:
    slow = SlowPredictor(Predictor.from_checkpoint(tiny_checkpoint), delay_s=1.0)
    app = create_app(settings(tiny_checkpoint, request_timeout_s=0.2), predictor=slow)
    with TestClient(app) as c:
        response = c.post("/v1/segment", files={"file": ("x", png_bytes(brain_like(8, 8)))})
        check(response, 503, "timed out", c)
        assert response.headers["Retry-After"] == "1"


def test_client_gone_mid_inference_leaks_nothing(tiny_checkpoint: Path) -> None:
    slow = SlowPredictor(Predictor.from_checkpoint(tiny_checkpoint), delay_s=0.5)
    app = create_app(settings(tiny_checkpoint), predictor=slow)
    data = png_bytes(brain_like(16, 16))

    async def scenario() -> tuple[str, int, Any]:
        async with serving(app) as http:
            task = asyncio.create_task(http.post("/v1/segment", files={"file": ("x", data)}))
            await asyncio.sleep(0.2)  # the request is now waiting for the model
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await asyncio.sleep(0.6)  # the batch finishes and its result is dropped
            metrics = (await http.get("/metrics")).text
            pending = app.state.service.batcher.pending
            after = await http.post("/v1/segment", files={"file": ("x", data)})
            return metrics, pending, after

    metrics, pending, after = asyncio.run(scenario())
    assert metric_value(metrics, "lggseg_http_requests_in_flight") == 1.0  # only /metrics itself
    assert pending == 0
    assert after.status_code == 200


def test_client_gone_mid_upload_leaks_nothing(tiny_checkpoint: Path) -> None:
    """At the ASGI level: half a body, then a disconnect."""
    app = create_app(settings(tiny_checkpoint))
    head = b'--B\r\nContent-Disposition: form-data; name="file"\r\n\r\n' + b"\x00" * 1000
    messages = [
        {"type": "http.request", "body": head, "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "path": "/v1/segment", "raw_path": b"/v1/segment", "query_string": b"", "root_path": "",
        "scheme": "http", "server": ("test", 80), "client": ("1.2.3.4", 5),
        "headers": [(b"content-type", b"multipart/form-data; boundary=B")],
    }  # fmt: skip

    async def run() -> None:
        async with app.router.lifespan_context(app):
            await app(scope, receive, send)

    asyncio.run(run())
    assert sent[0]["status"] == 400
    gauge = app.state.metrics.in_flight._value.get()
    assert gauge == 0


@pytest.mark.parametrize("fault", ["missing", "truncated", "tampered", "wrong-architecture"])
def test_bad_checkpoint_means_not_ready_never_random_weights(tmp_path: Path, fault: str) -> None:
    path = make_checkpoint(tmp_path / "m.safetensors")
    card_path = path.with_suffix(".json")
    if fault == "missing":
        path = tmp_path / "absent.safetensors"
    elif fault == "truncated":
        path.write_bytes(path.read_bytes()[:5000])
    elif fault == "tampered":
        blob = bytearray(path.read_bytes())
        blob[len(blob) // 2] ^= 1
        path.write_bytes(bytes(blob))
    else:
        card = json.loads(card_path.read_text())
        card["model"]["backbone"] = "resnet50"
        card_path.write_text(json.dumps(card))
    expected = {
        "missing": "not found",
        "truncated": "truncated or modified",
        "tampered": "truncated or modified",
        "wrong-architecture": "does not fit a resnet50",
    }[fault]
    with TestClient(create_app(settings(path))) as c:
        ready = c.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["status"] == "not ready" and expected in ready.json()["reason"]
        check(post(c, png_bytes(brain_like(8, 8))), 503, expected, c)
        assert c.get("/v1/model").status_code == 503
        assert metric_value(c.get("/metrics").text, "lggseg_model_ready") == 0.0


# ----------------------------------------------------------------- privacy and access


def test_uploads_never_touch_the_temp_dir(
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    calls: list[str] = []

    def spy(name: str) -> Callable[..., Any]:
        real = getattr(tempfile, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            return real(*args, **kwargs)

        return wrapper

    for name in ("SpooledTemporaryFile", "TemporaryFile", "NamedTemporaryFile", "mkstemp"):
        monkeypatch.setattr(tempfile, name, spy(name))
    big = tiff_bytes(brain_like(1500, 1500))  # 6.75 MB: Starlette would spool this to disk
    assert len(big) > 6 * 2**20
    app = create_app(settings(tiny_checkpoint))
    seen: list[list[str]] = []

    async def scenario() -> Any:
        async with serving(app) as http:
            upload = asyncio.create_task(http.post("/v1/segment", files={"file": ("x", big)}))
            while not upload.done():
                seen.append(os.listdir(spool))
                await asyncio.sleep(0)
            return await upload

    response = asyncio.run(scenario())
    assert response.status_code == 200
    assert Image.open(io.BytesIO(response.content)).size == (1500, 1500)
    assert len(seen) > 1 and all(listing == [] for listing in seen)
    assert os.listdir(spool) == [] and calls == []


def test_api_key(tiny_checkpoint: Path) -> None:
    app = create_app(settings(tiny_checkpoint, api_key="s3cret"))
    data = png_bytes(brain_like(8, 8))
    with TestClient(app) as c:
        check(c.post("/v1/segment", files={"file": ("x", data)}), 401, "X-API-Key", c)
        wrong = c.post("/v1/segment", files={"file": ("x", data)}, headers={"X-API-Key": "nope"})
        check(wrong, 401, "X-API-Key", c)
        assert c.get("/v1/model").status_code == 401
        good = c.post("/v1/segment", files={"file": ("x", data)}, headers={"X-API-Key": "s3cret"})
        assert good.status_code == 200
        assert c.get("/readyz").status_code == 200  # probes stay open
        assert c.get("/metrics").status_code == 200


def test_api_key_is_checked_before_the_body_is_read(tiny_checkpoint: Path) -> None:
    app = create_app(settings(tiny_checkpoint, api_key="s3cret"))
    with TestClient(app) as c:  # a malformed body would be 400 if it were parsed first
        response = c.post(
            "/v1/segment", content=b"garbage",
            headers={"content-type": "multipart/form-data; boundary=x"},
        )  # fmt: skip
        assert response.status_code == 401


def test_settings_override_through_dependency_overrides(tiny_checkpoint: Path) -> None:
    from inference.api.deps import app_settings

    app = create_app(settings(tiny_checkpoint))
    app.dependency_overrides[app_settings] = lambda: settings(tiny_checkpoint, max_pixels=100)
    with TestClient(app) as c:
        check(post(c, png_bytes(brain_like(16, 16))), 422, "limit is 100", c)
