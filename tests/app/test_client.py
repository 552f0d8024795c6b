"""app/client.py and the API backend against the real FastAPI app (in process, no network)."""

from __future__ import annotations

import gzip
import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import nibabel as nib
import numpy as np
import pytest
import tifffile
from fastapi.testclient import TestClient

from app import backend
from app import client as client_module
from app.client import ApiClient, ApiError
from inference.api.app import create_app
from inference.api.settings import ServeSettings
from inference.predictor import Predictor


def _tif(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array)
    return buffer.getvalue()


def _slice(seed: int = 0, size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    head = ((yy - size / 2) / (size * 0.45)) ** 2 + ((xx - size / 2) / (size * 0.4)) ** 2 < 1
    return np.where(head[..., None], rng.integers(30, 220, (size, size, 3)), 0).astype(np.uint8)


def _nifti(volume: np.ndarray, affine: np.ndarray) -> bytes:
    return gzip.compress(nib.Nifti1Image(volume, affine).to_bytes())


@pytest.fixture
def api(tiny_checkpoint: Path) -> Iterator[TestClient]:
    settings = ServeSettings(checkpoint=tiny_checkpoint, warmup=False, api_key="s3cret")
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture
def client(api: TestClient) -> ApiClient:
    return ApiClient("http://testserver", api_key="s3cret", http=api)


def test_segment_returns_the_predictors_mask(client: ApiClient, tiny_checkpoint: Path) -> None:
    image = _slice()
    answer = client.segment(_tif(image))
    expected = Predictor.from_checkpoint(tiny_checkpoint).predict_slice(image)
    assert answer.mask.shape == (64, 64) and answer.mask.dtype == np.uint8
    np.testing.assert_array_equal(answer.mask, expected.mask)
    assert answer.tumour_pixels == int(expected.mask.sum())
    assert answer.max_probability == pytest.approx(expected.max_probability, abs=1e-6)
    assert answer.model_version == client.ready()


def test_segment_volume_returns_masks_on_the_input_grid(
    client: ApiClient, tiny_checkpoint: Path
) -> None:
    volume = np.stack([_slice(seed) for seed in range(3)], axis=2)  # 64 x 64 x 3 x 3
    affine = np.diag([0.9, 0.9, 3.0, 1.0])
    answer = client.segment_volume(_nifti(volume, affine))
    expected = Predictor.from_checkpoint(tiny_checkpoint).predict_volume(volume)
    assert answer.masks.shape == (64, 64, 3)
    np.testing.assert_array_equal(answer.masks, expected.masks)
    assert answer.max_probabilities == pytest.approx(
        [s.max_probability for s in expected.slices], abs=1e-6)


def test_api_segmenter_reads_card_and_version(client: ApiClient) -> None:
    segmenter = backend.ApiSegmenter(client)
    assert segmenter.card()["name"] == "test-resnet18"
    assert "served by the API at http://testserver" in segmenter.description
    assert client.ready() in segmenter.key


def test_refusals_carry_the_apis_reason(client: ApiClient, api: TestClient) -> None:
    with pytest.raises(ApiError, match=r"415 .*GIF is not supported"):
        client.segment(b"GIF89a" + bytes(32))
    without_key = ApiClient("http://testserver", http=api)
    api.headers.pop("X-API-Key")
    with pytest.raises(ApiError, match=r"401 .*X-API-Key"):
        without_key.segment(_tif(_slice()))


def test_not_ready_api_gives_a_backend_error_with_the_reason(tmp_path: Path) -> None:
    settings = ServeSettings(checkpoint=tmp_path / "missing.safetensors", warmup=False)
    with TestClient(create_app(settings)) as api:
        with pytest.raises(backend.BackendError, match=r"503 .*checkpoint not found") as info:
            backend.ApiSegmenter(ApiClient("http://testserver", http=api))
    assert "python -m inference.serve" in str(info.value)


def test_unreachable_api_says_so() -> None:
    client = ApiClient("http://127.0.0.1:9", timeout_s=2)
    with pytest.raises(ApiError, match="cannot reach the API at http://127.0.0.1:9"):
        client.ready()


# ------------------------------------------------------- errors never echo what answered

SECRET = "SECRET-TOKEN-123"


def _answering(status: int, content: bytes, content_type: str) -> ApiClient:
    """A client whose every request gets this answer (whatever answers at the address)."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=content, headers={"content-type": content_type})

    http = httpx.Client(base_url="http://api.test", transport=httpx.MockTransport(handler))
    return ApiClient("http://api.test", http=http)


@pytest.mark.parametrize(
    "content, content_type",
    [
        (f"<html><body>internal admin page {SECRET}</body></html>".encode(), "text/html"),
        (json.dumps({"detail": SECRET}).encode(), "text/plain"),
        (json.dumps({"error": SECRET}).encode(), "application/json"),
        (json.dumps([SECRET]).encode(), "application/json"),
        (SECRET.encode(), "application/json"),
    ],
)
def test_an_answer_not_in_the_apis_error_shape_is_never_echoed(
    content: bytes, content_type: str
) -> None:
    with pytest.raises(ApiError) as info:
        _answering(502, content, content_type).ready()
    assert str(info.value) == "the API answered HTTP 502 to GET /readyz"


def test_the_apis_own_detail_is_shown_on_one_short_line() -> None:
    detail = "the PNG data is\ntruncated\x1b[2J " + "x" * 1000
    client = _answering(422, json.dumps({"detail": detail}).encode(), "application/json")
    with pytest.raises(ApiError) as info:
        client.segment(b"\x89PNG")
    message = str(info.value)
    assert message.startswith(
        "the API answered HTTP 422 to POST /v1/segment: the PNG data is truncated [2J xxx")
    assert message.endswith("...") and len(message) <= 60 + client_module.MAX_DETAIL_CHARS
    assert "\n" not in message and "\x1b" not in message


def test_a_validation_error_shows_its_messages_only() -> None:
    body = {"detail": [{"loc": ["query", "format"], "msg": "Input should be 'png' or 'json'",
                        "type": "literal_error", "input": SECRET}]}
    client = _answering(422, json.dumps(body).encode(), "application/json")
    with pytest.raises(ApiError) as info:
        client.model_info()
    assert str(info.value) == ("the API answered HTTP 422 to GET /v1/model: "
                               "Input should be 'png' or 'json'")


def test_a_malformed_answer_is_refused_without_its_content() -> None:
    body = {"mask_png": "AAAA", "max_probability": SECRET, "tumour_pixels": 1,
            "model_version": "1"}
    client = _answering(200, json.dumps(body).encode(), "application/json")
    with pytest.raises(ApiError) as info:
        client.segment(b"\x89PNG")
    assert "malformed" in str(info.value) and SECRET not in str(info.value)


def test_a_one_slice_zip_comes_back_as_a_one_slice_volume(
    client: ApiClient, tiny_checkpoint: Path
) -> None:
    image = _slice(seed=4)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("s_1.tif", _tif(image))
    answer = client.segment_volume(buffer.getvalue())
    expected = Predictor.from_checkpoint(tiny_checkpoint).predict_slice(image)
    assert answer.masks.shape == (64, 64, 1)
    np.testing.assert_array_equal(answer.masks[:, :, 0], expected.mask)
