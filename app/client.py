"""A small client of the inference API (``python -m inference.serve``), built on httpx.

Endpoints used: ``GET /readyz``, ``GET /v1/model``, ``POST /v1/segment?format=json`` and
``POST /v1/segment/volume?format=json`` (multipart field ``file``; the API sniffs the format).
Every failure becomes an ``ApiError`` whose message says what happened and what to do.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np

from inference.decode import DecodeProblem, decode_slice, decode_volume


class ApiError(RuntimeError):
    """The API could not be reached, is not ready, or refused a request."""


@dataclass(frozen=True)
class ApiSegmentation:
    """One slice's answer, with the mask decoded (uint8 0/1, the slice's H x W)."""

    mask: np.ndarray
    max_probability: float
    tumour_pixels: int
    model_version: str


@dataclass(frozen=True)
class ApiVolumeSegmentation:
    """A volume's answer: masks ``H x W x Z`` (uint8 0/1) and each slice's max probability."""

    masks: np.ndarray
    max_probabilities: list[float]
    model_version: str


class ApiClient:
    """Calls one API. ``http`` replaces the httpx client (tests pass a Starlette TestClient)."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 60.0,
        api_key: str | None = None,
        http: httpx.Client | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"X-API-Key": api_key} if api_key else {}
        self._http = http or httpx.Client(base_url=self.base_url, timeout=timeout_s)
        self._http.headers.update(headers)

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise ApiError(f"the API at {self.base_url} did not answer in time") from exc
        except httpx.HTTPError as exc:
            raise ApiError(f"cannot reach the API at {self.base_url} ({exc})") from exc
        if response.status_code >= 400:
            raise ApiError(f"the API answered {response.status_code} to {method} {path}: "
                           f"{_detail(response)}")
        return response

    def _json(self, response: httpx.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError as exc:
            raise ApiError(f"the API at {self.base_url} did not answer JSON") from exc
        if not isinstance(body, dict):
            raise ApiError(f"the API at {self.base_url} answered an unexpected JSON value")
        return body

    def ready(self) -> str:
        """The served model's version; ApiError with the API's reason when it is not ready."""
        body = self._json(self._request("GET", "/readyz"))
        return str(body.get("model_version") or "unknown")

    def model_info(self) -> dict[str, Any]:
        """``GET /v1/model``: ``model_version``, ``threshold``, ``card`` (the model card)..."""
        return self._json(self._request("GET", "/v1/model"))

    def segment(self, data: bytes, filename: str = "slice") -> ApiSegmentation:
        """Send one slice's file bytes as they are."""
        body = self._json(self._request(
            "POST", "/v1/segment", params={"format": "json"},
            files={"file": (filename, data, "application/octet-stream")},
        ))
        try:
            mask = _as_binary(decode_slice(base64.b64decode(body["mask_png"], validate=True)))
            return ApiSegmentation(mask, float(body["max_probability"]),
                                   int(body["tumour_pixels"]), str(body["model_version"]))
        except (KeyError, TypeError, ValueError, binascii.Error, DecodeProblem) as exc:
            raise ApiError(f"unexpected answer from POST /v1/segment ({exc})") from exc

    def segment_volume(self, data: bytes, filename: str = "volume") -> ApiVolumeSegmentation:
        """Send a NIfTI volume (or a zip of slices) as it is."""
        body = self._json(self._request(
            "POST", "/v1/segment/volume", params={"format": "json"},
            files={"file": (filename, data, "application/octet-stream")},
        ))
        try:
            masks = decode_volume(base64.b64decode(body["mask_nifti_gz"], validate=True)).data
            by_index = {int(s["index"]): float(s["max_probability"]) for s in body["slices"]}
            probabilities = [by_index[k] for k in range(masks.shape[2])]
            return ApiVolumeSegmentation(_as_binary(masks), probabilities,
                                         str(body["model_version"]))
        except (KeyError, TypeError, ValueError, binascii.Error, DecodeProblem) as exc:
            raise ApiError(f"unexpected answer from POST /v1/segment/volume ({exc})") from exc


def _as_binary(mask: np.ndarray) -> np.ndarray:
    return (np.asarray(mask) != 0).astype(np.uint8)


def _detail(response: httpx.Response) -> str:
    """The API's own explanation (``detail``, or ``reason`` from /readyz), shortened."""
    try:
        body = response.json()
    except ValueError:
        return (response.text or response.reason_phrase)[:300]
    if isinstance(body, dict):
        for key in ("detail", "reason"):
            if body.get(key):
                return str(body[key])[:300]
    return str(body)[:300]
