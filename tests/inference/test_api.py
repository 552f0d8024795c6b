"""The API's endpoints on a tiny random-weights checkpoint (TestClient, in-process)."""

from __future__ import annotations

import base64
import gzip
import io
import re
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from inference.api import create_app
from inference.api.settings import get_settings
from inference.metrics import dice
from inference.predictor import StageTimes
from tests.inference.api_helpers import metric_value, settings
from tests.inference.samples import brain_like, nifti_bytes, png_bytes, tiff_bytes, zip_bytes


@pytest.fixture(scope="module")
def client(spread_checkpoint: Path) -> Iterator[TestClient]:
    with TestClient(create_app(settings(spread_checkpoint))) as test_client:
        yield test_client


def png_mask(content: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(content)))


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    assert ready.json()["model_version"].startswith("test-resnet18-0.0.1+")


@pytest.mark.parametrize("shape", [(8, 8), (255, 257), (256, 256)])
def test_segment_returns_a_png_mask_of_the_inputs_size(
    client: TestClient, shape: tuple[int, int]
) -> None:
    response = client.post("/v1/segment", files={"file": ("s.tif", tiff_bytes(brain_like(*shape)))})
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    mask = png_mask(response.content)
    assert mask.shape == shape and mask.dtype == np.uint8
    assert set(np.unique(mask)) <= {0, 255}
    assert int(response.headers["X-Tumour-Pixels"]) == int((mask == 255).sum())
    assert response.headers["X-Model-Version"].startswith("test-resnet18")


def test_server_timing_says_where_a_slices_time_went(client: TestClient) -> None:
    response = client.post("/v1/segment", files={"file": ("s.tif", tiff_bytes(brain_like(64, 64)))})
    assert response.status_code == 200
    entries = [e.strip() for e in response.headers["Server-Timing"].split(",")]
    stages = {e.split(";")[0]: float(re.search(r"dur=([0-9.]+)", e).group(1)) for e in entries}
    assert list(stages) == ["decode", "queue", "prepare", "network", "finish", "encode"]
    assert stages["network"] > 0 and all(value >= 0 for value in stages.values())
    assert 'network;dur=' in response.headers["Server-Timing"]
    assert '"batch of 1"' in response.headers["Server-Timing"]


def test_predict_batch_reports_its_steps(client: TestClient) -> None:
    predictor = client.app.state.service.predictor  # type: ignore[attr-defined]
    times = StageTimes()
    predictor.predict_batch([brain_like(64, 64), brain_like(32, 48)], timings=times)
    assert times.prepare_s > 0 and times.network_s > 0 and times.finish_s > 0


def test_segment_json(client: TestClient) -> None:
    data = png_bytes(brain_like(64, 64, 1))
    response = client.post("/v1/segment?format=json", files={"file": ("a.png", data)})
    assert response.status_code == 200
    body = response.json()
    mask = png_mask(base64.b64decode(body["mask_png"]))
    png = png_mask(client.post("/v1/segment", files={"file": ("a.png", data)}).content)
    assert np.array_equal(mask, png)
    assert body["shape"] == [64, 64]
    assert body["tumour_pixels"] == int((mask == 255).sum())
    assert 0 < body["tumour_pixels"] < 64 * 64
    assert body["tumour_fraction"] == pytest.approx(body["tumour_pixels"] / 4096)
    assert 0.5 < body["max_probability"] <= 1.0
    assert body["threshold"] == 0.5
    assert body["contours"] and all(len(c) >= 3 for c in body["contours"])
    xs = [x for contour in body["contours"] for x, _ in contour]
    assert min(xs) >= -0.5 and max(xs) <= 63.5
    assert body["model_version"] == response.headers["X-Model-Version"]


def test_same_input_twice_gives_identical_bytes(client: TestClient) -> None:
    data = tiff_bytes(brain_like(90, 70, 4))
    first = client.post("/v1/segment", files={"file": ("a", data)})
    second = client.post("/v1/segment", files={"file": ("b", data)})
    assert first.content == second.content
    assert first.headers["X-Model-Version"] == second.headers["X-Model-Version"]


def test_declared_type_and_name_are_ignored(client: TestClient) -> None:
    data = png_bytes(brain_like(32, 32))
    lying = client.post("/v1/segment", files={"file": ("scan.pdf", data, "application/pdf")})
    honest = client.post("/v1/segment", files={"file": ("scan.png", data, "image/png")})
    assert lying.status_code == 200 and lying.content == honest.content


def test_nifti_slice_and_volume_routing(client: TestClient) -> None:
    one = brain_like(40, 48).astype(np.int16)[:, :, None, :]  # H x W x 1 slice x 3 sequences
    ok = client.post("/v1/segment", files={"file": ("x", nifti_bytes(one))})
    assert ok.status_code == 200 and png_mask(ok.content).shape == (40, 48)
    vol = nifti_bytes(np.concatenate([one] * 3, axis=2))
    wrong = client.post("/v1/segment", files={"file": ("x", vol)})
    assert wrong.status_code == 422
    assert "POST /v1/segment/volume" in wrong.json()["detail"]
    reverse = client.post("/v1/segment/volume", files={"file": ("x", nifti_bytes(one))})
    assert reverse.status_code == 422
    assert "POST /v1/segment" in reverse.json()["detail"]


def test_volume_nifti_in_nifti_out(client: TestClient) -> None:
    affine = np.array([[0.9, 0, 0, -100], [0, 0.9, 0, -120], [0, 0, 5.0, 30], [0, 0, 0, 1]])
    slices = [brain_like(48, 40, s) for s in range(3)]
    volume = np.stack(slices, axis=2)  # H x W x Z x 3
    response = client.post(
        "/v1/segment/volume", files={"file": ("v", nifti_bytes(volume, affine, compress=True))}
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/gzip"
    image = nib.Nifti1Image.from_bytes(gzip.decompress(response.content))
    mask = np.asarray(image.dataobj)
    assert mask.shape == (48, 40, 3) and mask.dtype == np.uint8
    assert np.allclose(image.affine, affine)
    assert int(response.headers["X-Tumour-Voxels"]) == int(mask.sum())
    for k, s in enumerate(slices):  # each slice is the slice endpoint's answer...
        single = png_mask(client.post("/v1/segment", files={"file": ("s", png_bytes(s))}).content)
        # ... up to pixels whose logit lies within the batch-size rounding of the threshold
        # (oneDNN sums in another order for a batch of 3 than of 1): a few at most.
        assert np.mean(mask[:, :, k] * 255 != single) <= 0.01


def test_volume_json_summary_and_zip_input(client: TestClient) -> None:
    slices = {f"P_{i}.png": png_bytes(brain_like(32, 32, i)) for i in (1, 2, 10)}
    response = client.post(
        "/v1/segment/volume?format=json", files={"file": ("p.zip", zip_bytes(slices))}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["shape"] == [32, 32, 3] and body["source"] == "zip"
    assert [s["index"] for s in body["slices"]] == [0, 1, 2]
    assert body["tumour_voxels"] == sum(s["tumour_pixels"] for s in body["slices"])
    assert "voxel_volume_mm3" not in body and "tumour_volume_ml" not in body  # no spacing
    assert "no voxel spacing" in body["volume_unavailable"]
    mask = np.asarray(
        nib.Nifti1Image.from_bytes(gzip.decompress(base64.b64decode(body["mask_nifti_gz"]))).dataobj
    )
    assert int(mask.sum()) == body["tumour_voxels"]
    assert [int(mask[:, :, k].sum()) for k in range(3)] == [
        s["tumour_pixels"] for s in body["slices"]
    ]


def test_volume_endpoint_refuses_single_images(client: TestClient) -> None:
    response = client.post("/v1/segment/volume", files={"file": ("x", png_bytes(brain_like(8, 8)))})
    assert response.status_code == 415
    assert "NIfTI" in response.json()["detail"]


def test_evaluate(client: TestClient) -> None:
    image = brain_like(64, 64, 2)
    truth = np.zeros((64, 64), np.uint8)
    truth[20:40, 10:50] = 255
    files = {"file": ("i", tiff_bytes(image)), "mask": ("m", tiff_bytes(truth))}
    response = client.post("/v1/evaluate", files=files)
    assert response.status_code == 200
    body = response.json()
    predicted = png_mask(
        client.post("/v1/segment", files={"file": ("i", png_bytes(image))}).content
    )
    assert body["dice"] == pytest.approx(dice(predicted, truth))
    assert body["true_pixels"] == 20 * 40
    assert body["predicted_pixels"] == int((predicted > 0).sum())
    assert body["shape"] == [64, 64] and body["total_pixels"] == 4096
    wrong = {"file": ("i", tiff_bytes(image)), "mask": ("m", tiff_bytes(truth[:32]))}
    mismatch = client.post("/v1/evaluate", files=wrong)
    assert mismatch.status_code == 422 and "must match" in mismatch.json()["detail"]
    missing = client.post("/v1/evaluate", files={"file": ("i", tiff_bytes(image))})
    assert missing.status_code == 422 and "'mask'" in missing.json()["detail"]


def test_jpeg_is_segmented_with_a_warning_in_header_and_json(client: TestClient) -> None:
    from tests.inference.samples import jpeg_bytes

    jpeg = {"file": ("s.jpg", jpeg_bytes(brain_like(48, 48, 3)))}
    png = client.post("/v1/segment", files=jpeg)
    assert png.status_code == 200 and "JPEG is lossy" in png.headers["X-Input-Warning"]
    body = client.post("/v1/segment?format=json", files=jpeg).json()
    assert len(body["warnings"]) == 1 and "JPEG is lossy" in body["warnings"][0]
    lossless = client.post("/v1/segment?format=json",
                           files={"file": ("s.png", png_bytes(brain_like(48, 48, 3)))})
    assert lossless.json()["warnings"] == [] and "X-Input-Warning" not in lossless.headers
    truth = np.zeros((48, 48), np.uint8)
    scored = client.post("/v1/evaluate", files={**jpeg, "mask": ("m.png", png_bytes(truth))})
    assert scored.status_code == 200 and "JPEG is lossy" in scored.json()["warnings"][0]
    assert "JPEG is lossy" in scored.headers["X-Input-Warning"]


def test_evaluate_takes_masks_by_the_one_mask_rule(client: TestClient) -> None:
    image = brain_like(32, 32, 1)
    coloured = brain_like(32, 32, 2)  # an MRI slice sent as the mask
    response = client.post("/v1/evaluate", files={"file": ("i.png", png_bytes(image)),
                                                   "mask": ("m.png", png_bytes(coloured))})
    assert response.status_code == 422 and "colours" in response.json()["detail"]
    ones = np.ones((32, 32), np.uint8)  # one value only: all tumour
    body = client.post("/v1/evaluate", files={"file": ("i.png", png_bytes(image)),
                                               "mask": ("m.png", png_bytes(ones))}).json()
    assert body["true_pixels"] == 32 * 32


def test_model_card(client: TestClient, spread_checkpoint: Path) -> None:
    body = client.get("/v1/model").json()
    assert body["card"]["model"]["backbone"] == "resnet18"
    assert body["card"]["preprocessing"]["image_size"] == 64
    assert body["model_version"] == client.get("/readyz").json()["model_version"]
    assert body["threshold"] == 0.5
    runtime = body["runtime"]
    assert runtime["engine"] in ("openvino", "torch") and runtime["precision"] in ("fp32", "bf16")
    assert runtime["device"] == "cpu" and isinstance(runtime["cpu_flags"], list)


def test_docs_render_without_internet(client: TestClient) -> None:
    """/docs and /redoc name only assets this server serves (hospital servers are offline)."""
    for page in ("/docs", "/redoc"):
        html = client.get(page).text
        assert "cdn.jsdelivr.net" not in html and "unpkg.com" not in html
        assets = re.findall(r'(?:src|href)="(/static-offline-docs/[^"]+)"', html)
        assert any(a.endswith(".js") for a in assets)
        for asset in assets:
            answer = client.get(asset)
            assert answer.status_code == 200 and len(answer.content) > 1000, asset


def test_metrics_count_requests_and_batches(client: TestClient) -> None:
    client.post("/v1/segment", files={"file": ("s", png_bytes(brain_like(16, 16)))})
    client.post("/v1/segment", files={"file": ("s", b"GIF89a" + b"\x00" * 20)})
    text = client.get("/metrics").text
    ok = metric_value(text, "lggseg_http_requests_total", route="/v1/segment", status="200")
    refused = metric_value(text, "lggseg_http_requests_total", route="/v1/segment", status="415")
    assert ok >= 1 and refused >= 1
    assert metric_value(text, "lggseg_batch_size_count") >= 1
    assert metric_value(text, "lggseg_http_requests_in_flight") == 1.0  # this /metrics request
    assert metric_value(text, "lggseg_model_ready") == 1.0
    assert "lggseg_http_request_duration_seconds_bucket" in text


def test_openapi_documents_the_multipart_bodies(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/v1/segment"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert body["schema"]["required"] == ["file"]
    assert body["schema"]["properties"]["file"]["format"] == "binary"
    evaluate = spec["paths"]["/v1/evaluate"]["post"]["requestBody"]["content"]
    assert evaluate["multipart/form-data"]["schema"]["required"] == ["file", "mask"]
    assert "415" in spec["paths"]["/v1/segment"]["post"]["responses"]
    assert spec["components"]["schemas"]["SegmentResult"]["examples"]


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LGGSEG_SERVE_MAX_BATCH", "3")
    monkeypatch.setenv("LGGSEG_SERVE_CORS_ORIGINS", '["http://localhost:8501"]')
    get_settings.cache_clear()
    try:
        loaded = get_settings()
        assert loaded.max_batch == 3 and loaded.cors_origins == ["http://localhost:8501"]
    finally:
        get_settings.cache_clear()


def test_cors(spread_checkpoint: Path) -> None:
    app = create_app(settings(spread_checkpoint, cors_origins=["http://viewer:8501"]))
    with TestClient(app) as c:
        allowed = c.get("/healthz", headers={"Origin": "http://viewer:8501"})
        other = c.get("/healthz", headers={"Origin": "http://evil.example"})
    assert allowed.headers["access-control-allow-origin"] == "http://viewer:8501"
    assert "access-control-allow-origin" not in other.headers


def test_default_torch_threads_use_every_usable_core(spread_checkpoint: Path) -> None:
    """The model thread runs with as many intra-op threads as this process has cores."""
    import os

    import torch

    from inference.predictor import Predictor

    class ThreadCounting:
        def __init__(self, inner: Predictor) -> None:
            self.inner, self.card = inner, inner.card
            self.model_version, self.threshold = inner.model_version, inner.threshold
            self.seen: list[int] = []

        def predict_batch(
            self, images: list[np.ndarray], timings: StageTimes | None = None
        ) -> list[object]:
            self.seen.append(torch.get_num_threads())
            return self.inner.predict_batch(images, timings)  # type: ignore[return-value]

    counting = ThreadCounting(Predictor.from_checkpoint(spread_checkpoint))
    app = create_app(settings(spread_checkpoint, torch_threads=None), predictor=counting)
    before = torch.get_num_threads()
    try:
        with TestClient(app) as c:
            c.post("/v1/segment", files={"file": ("x", png_bytes(brain_like(16, 16)))})
    finally:
        torch.set_num_threads(before)
    assert counting.seen == [len(os.sched_getaffinity(0))]


def test_small_slices_decode_on_the_event_loop_and_large_ones_in_a_thread() -> None:
    import asyncio
    import threading

    from inference.api.deps import INLINE_MAX_PIXELS, on_loop_if, small_slice
    from inference.decode import decoded_size

    async def where(small: bool) -> int:
        return await on_loop_if(small, threading.get_ident)

    loop_thread = threading.get_ident()
    assert asyncio.run(where(True)) == loop_thread
    assert asyncio.run(where(False)) != loop_thread
    small = tiff_bytes(brain_like(256, 256))
    assert small_slice(small, decoded_size(small))
    side = int(INLINE_MAX_PIXELS**0.5) + 1
    large = png_bytes(np.zeros((side, side, 3), np.uint8))  # a few KiB, too many pixels
    assert not small_slice(large, decoded_size(large))
