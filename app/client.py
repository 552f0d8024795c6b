"""A small client of the inference API (``python -m inference.serve``), built on httpx.

Endpoints used: ``GET /readyz``, ``GET /v1/model``, ``POST /v1/segment?format=json`` and
``POST /v1/segment/volume?format=json`` (multipart field ``file``; the API sniffs the format).
Every failure becomes an ``ApiError`` whose message says what happened and what to do. An error
shows the API's own explanation only when the answer has the API's error shape (a JSON object with
a ``detail`` or ``reason`` text), shortened; anything else that answered is never echoed.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np

from data.masks import binary_mask, binary_volume
from inference.decode import DecodeProblem, decode_nifti, decode_slice

logger = logging.getLogger(__name__)

MAX_DETAIL_CHARS = 200
MAX_VERSION_CHARS = 64


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
            answered = f"the API answered HTTP {response.status_code} to {method} {path}"
            detail = _detail(response)
            raise ApiError(f"{answered}: {detail}" if detail else answered)
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
        version = body.get("model_version")
        return _clean(version, MAX_VERSION_CHARS) if isinstance(version, str) else "unknown"

    def model_info(self) -> dict[str, Any]:
        """``GET /v1/model``: ``model_version``, ``threshold``, ``card`` (the model card)..."""
        return self._json(self._request("GET", "/v1/model"))

    def segment(self, data: bytes) -> ApiSegmentation:
        """Send one slice's file bytes as they are."""
        body = self._json(self._request(
            "POST", "/v1/segment", params={"format": "json"},
            files={"file": ("slice", data, "application/octet-stream")},
        ))
        try:
            mask = binary_mask(decode_slice(base64.b64decode(body["mask_png"], validate=True)))
            return ApiSegmentation(mask, float(body["max_probability"]),
                                   int(body["tumour_pixels"]), _version(body))
        except (KeyError, TypeError, ValueError, binascii.Error, DecodeProblem) as exc:
            raise _unexpected("POST /v1/segment", exc) from exc

    def segment_volume(self, data: bytes) -> ApiVolumeSegmentation:
        """Send a NIfTI volume (or a zip of slices) as it is."""
        body = self._json(self._request(
            "POST", "/v1/segment/volume", params={"format": "json"},
            files={"file": ("volume", data, "application/octet-stream")},
        ))
        try:
            masks = decode_nifti(base64.b64decode(body["mask_nifti_gz"], validate=True)).data
            by_index = {int(s["index"]): float(s["max_probability"]) for s in body["slices"]}
            probabilities = [by_index[k] for k in range(masks.shape[2])]
            return ApiVolumeSegmentation(binary_volume(masks), probabilities, _version(body))
        except (KeyError, TypeError, ValueError, binascii.Error, DecodeProblem) as exc:
            raise _unexpected("POST /v1/segment/volume", exc) from exc


def _version(body: dict[str, Any]) -> str:
    version = body["model_version"]
    if not isinstance(version, str):
        raise TypeError("model_version is not a string")
    return _clean(version, MAX_VERSION_CHARS)


def _unexpected(call: str, exc: Exception) -> ApiError:
    """A malformed answer: named by the call, without any of the answer's content (logged by
    exception type only)."""
    logger.warning("malformed answer to %s (%s)", call, type(exc).__name__)
    return ApiError(f"the API answered {call} with a malformed result; check that the address "
                    "configured in LGGSEG_API_URL is this project's API")


def _clean(text: str, limit: int) -> str:
    """One line of at most ``limit`` characters: control characters and runs of whitespace
    become single spaces."""
    text = re.sub(r"[\x00-\x1f\x7f-\x9f\s]+", " ", text).strip()
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def _detail(response: httpx.Response) -> str | None:
    """The API's own explanation, shortened, or None when the answer is not in its error shape.

    The API answers errors as ``{"detail": "..."}`` (FastAPI's validation errors: ``{"detail":
    [{"msg": "..."}, ...]}``) and /readyz as ``{"reason": "..."}``, always as JSON. Whatever else
    answered (a proxy's HTML page, another service) is never shown.
    """
    if response.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    for key in ("detail", "reason"):
        value = body.get(key)
        if isinstance(value, str) and value.strip():
            return _clean(value, MAX_DETAIL_CHARS)
        if isinstance(value, list) and value and all(
            isinstance(v, dict) and isinstance(v.get("msg"), str) for v in value
        ):
            return _clean("; ".join(v["msg"] for v in value), MAX_DETAIL_CHARS)
    return None
