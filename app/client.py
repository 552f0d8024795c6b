"""A small client of the inference API (``python -m inference.serve``), built on httpx."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np

from inference.decode import DecodeProblem, decode_slice


class ApiError(RuntimeError):
    """The API could not be reached or refused a request; the message says which and why."""


@dataclass(frozen=True)
class ApiSegmentation:
    """What ``POST /v1/segment?format=json`` returns, with the mask decoded (uint8 0/1)."""

    mask: np.ndarray
    max_probability: float
    tumour_pixels: int
    model_version: str | None


class ApiClient:
    """Calls ``/readyz``, ``/v1/model`` and ``/v1/segment`` of one API."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout_s, transport=transport)

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise ApiError(f"the API at {self.base_url} did not answer in time ({exc})") from exc
        except httpx.HTTPError as exc:
            raise ApiError(f"cannot reach the API at {self.base_url}: {exc}") from exc
        if response.status_code >= 400:
            raise ApiError(f"the API refused the request ({response.status_code}): "
                           f"{_detail(response)}")
        return response

    def ready(self) -> None:
        """Raises ApiError with the API's reason unless ``/readyz`` says it is ready."""
        self._request("GET", "/readyz")

    def model_card(self) -> dict[str, Any]:
        card = self._request("GET", "/v1/model").json()
        if not isinstance(card, dict):
            raise ApiError("GET /v1/model did not return a JSON object")
        return card

    def segment(self, data: bytes, filename: str = "slice") -> ApiSegmentation:
        """Send one slice's file bytes as they are; the API sniffs the format."""
        response = self._request(
            "POST",
            "/v1/segment",
            params={"format": "json"},
            files={"file": (filename, data, "application/octet-stream")},
        )
        try:
            body = response.json()
            mask = _decode_mask(body["mask_png"])
            return ApiSegmentation(
                mask=mask,
                max_probability=float(body["max_probability"]),
                tumour_pixels=int(body["tumour_pixels"]),
                model_version=body.get("model_version"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ApiError(f"unexpected answer from POST /v1/segment: {exc}") from exc


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])[:300]
    return str(body)[:300]


def _decode_mask(encoded: str) -> np.ndarray:
    try:
        png = base64.b64decode(encoded, validate=True)
        mask = decode_slice(png)
    except (binascii.Error, DecodeProblem) as exc:
        raise ValueError(f"the mask is not a base64 PNG ({exc})") from exc
    if mask.ndim == 3:
        mask = mask[:, :, 0]
    return (mask > 0).astype(np.uint8)
