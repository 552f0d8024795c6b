"""A small client of the inference API (``python -m inference.serve``), built on httpx.

Endpoints used: ``GET /readyz``, ``GET /v1/model``, ``POST /v1/segment?format=json`` and
``POST /v1/segment/volume?format=json`` (multipart field ``file``; the API sniffs the format);
for a DICOM study ``POST /v1/segment/dicom`` (JSON, or ``format=seg``) and
``POST /v1/evaluate/dicom`` (repeated field ``files``, optional ``*_series`` fields).
Every failure becomes an ``ApiError`` whose message says what happened and what to do. An error
shows the API's own explanation only when the answer has the API's error shape (a JSON object with
a ``detail`` or ``reason`` text), shortened; anything else that answered is never echoed.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections.abc import Sequence
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


@dataclass(frozen=True)
class ApiCaseSegmentation:
    """A DICOM study's answer: the mask ``H x W x Z`` (uint8 0/1) on the FLAIR series' grid."""

    masks: np.ndarray
    affine: np.ndarray
    """The mask's voxel-to-world matrix (RAS+, mm), as in the returned NIfTI."""
    voxel_spacing_mm: tuple[float, float, float] | None
    tumour_volume_ml: float | None
    tumour_mm2: list[float | None]
    """Per slice, in the mask's slice order."""
    series: dict[str, str]
    """``pre`` / ``flair`` / ``post`` -> the SeriesInstanceUID read as that sequence."""
    model_version: str


@dataclass(frozen=True)
class ApiCaseEvaluation:
    """A DICOM study scored against its truth."""

    segmentation: ApiCaseSegmentation
    dice: float
    hd95_mm: float | None
    hd95_px: float | None
    true_volume_ml: float | None


def _study_parts(files: Sequence[bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    """The files as repeated ``files`` parts, named by number only (no local paths travel)."""
    return [("files", (f"part{n}.dcm", data, "application/octet-stream"))
            for n, data in enumerate(files, 1)]  # fmt: skip


def _series_fields(pre: str | None, flair: str | None, post: str | None) -> dict[str, str]:
    named = {"pre_series": pre, "flair_series": flair, "post_series": post}
    return {field: value for field, value in named.items() if value is not None}


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


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


    def segment_dicom(
        self,
        files: Sequence[bytes],
        *,
        pre_series: str | None = None,
        flair_series: str | None = None,
        post_series: str | None = None,
    ) -> ApiCaseSegmentation:
        """Send a DICOM study's files (each a DICOM file or a zip of them); the series are
        chosen by the ``*_series`` names (SeriesDescription or SeriesInstanceUID) or by the
        API's SeriesDescription rule."""
        body = self._json(self._request(
            "POST", "/v1/segment/dicom", params={"format": "json"}, files=_study_parts(files),
            data=_series_fields(pre_series, flair_series, post_series),
        ))
        return _case("POST /v1/segment/dicom", body)

    def evaluate_dicom(
        self,
        files: Sequence[bytes],
        truth: bytes,
        *,
        pre_series: str | None = None,
        flair_series: str | None = None,
        post_series: str | None = None,
    ) -> ApiCaseEvaluation:
        """As :meth:`segment_dicom`, scored against ``truth`` (a NIfTI mask on the FLAIR
        series' grid): Dice, HD95 in mm (or voxel steps without a spacing)."""
        parts = [*_study_parts(files), ("truth", ("truth.nii.gz", truth, "application/gzip"))]
        body = self._json(self._request(
            "POST", "/v1/evaluate/dicom", files=parts,
            data=_series_fields(pre_series, flair_series, post_series),
        ))
        call = "POST /v1/evaluate/dicom"
        segmentation = _case(call, body)
        try:
            return ApiCaseEvaluation(segmentation, float(body["dice"]),
                                     _optional_float(body.get("hd95_mm")),
                                     _optional_float(body.get("hd95_px")),
                                     _optional_float(body.get("true_volume_ml")))  # fmt: skip
        except (KeyError, TypeError, ValueError) as exc:
            raise _unexpected(call, exc) from exc

    def dicom_seg(
        self,
        files: Sequence[bytes],
        *,
        pre_series: str | None = None,
        flair_series: str | None = None,
        post_series: str | None = None,
    ) -> bytes:
        """The mask of a DICOM study as a DICOM SEG file's bytes (``format=seg``), on the FLAIR
        series' slices and referencing the three series read."""
        response = self._request(
            "POST", "/v1/segment/dicom", params={"format": "seg"}, files=_study_parts(files),
            data=_series_fields(pre_series, flair_series, post_series),
        )
        if response.content[128:132] != b"DICM":
            raise _unexpected("POST /v1/segment/dicom?format=seg", ValueError("not DICOM"))
        return response.content


def _case(call: str, body: dict[str, Any]) -> ApiCaseSegmentation:
    """A case answer (``CaseResult``) with its mask decoded."""
    try:
        volume = decode_nifti(base64.b64decode(body["mask_nifti_gz"], validate=True))
        by_index = {int(s["index"]): _optional_float(s.get("tumour_mm2")) for s in body["slices"]}
        spacing = body.get("voxel_spacing_mm")
        return ApiCaseSegmentation(
            masks=binary_volume(volume.data),
            affine=np.asarray(volume.affine, dtype=np.float64),
            voxel_spacing_mm=None if spacing is None else (
                float(spacing[0]), float(spacing[1]), float(spacing[2])),
            tumour_volume_ml=_optional_float(body.get("tumour_volume_ml")),
            tumour_mm2=[by_index[k] for k in range(volume.data.shape[2])],
            series={str(s["sequence"]): str(s["series_instance_uid"])
                    for s in body.get("series") or []},
            model_version=_version(body),
        )  # fmt: skip
    except (KeyError, TypeError, ValueError, IndexError, binascii.Error, DecodeProblem) as exc:
        raise _unexpected(call, exc) from exc


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
