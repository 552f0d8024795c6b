"""The viewer's configuration: one typed object read from ``LGGSEG_*`` environment variables.

=======================  ==============================================================
``LGGSEG_API_URL``       base URL of a running API (``python -m inference.serve``); when
                         set, the viewer calls it instead of loading the model itself
``LGGSEG_API_KEY``       the API's key (sent as ``X-API-Key``), when the API requires one
``LGGSEG_CHECKPOINT``    weights for the in-process model (default: the bundled model)
``LGGSEG_DATA_DIR``      a ``kaggle_3m`` folder to browse by patient
``LGGSEG_REPORTS_DIR``   a folder of cohort reports (``python -m analysis.cohort --out``
                         folders, or one such folder) for the "cohort report" page
``LGGSEG_DEVICE``        device for the in-process model (``cpu``, ``cuda``, ``cuda:1``)
``LGGSEG_ENGINE``        engine of the in-process model: ``auto`` (OpenVINO on CPU where
                         installed, torch on CUDA), ``torch`` or ``openvino``
=======================  ==============================================================

These are the operator's settings, never page inputs: the API key is sent only to
``LGGSEG_API_URL``, and users pick patients only among the folders found under ``LGGSEG_DATA_DIR``
and reports only among those found under ``LGGSEG_REPORTS_DIR``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from models import BUNDLED_CHECKPOINT


class ViewerSettings(BaseSettings):
    """Settings of the Streamlit viewer (environment variables with the ``LGGSEG_`` prefix)."""

    model_config = SettingsConfigDict(env_prefix="LGGSEG_", extra="ignore", frozen=True)

    api_url: str | None = Field(None, description="base URL of the inference API")
    api_key: SecretStr | None = Field(None, description="X-API-Key for the API, if it needs one")
    checkpoint: Path = Field(BUNDLED_CHECKPOINT, description="weights for the in-process model")
    data_dir: Path | None = Field(None, description="a kaggle_3m folder to browse")
    reports_dir: Path | None = Field(None, description="a folder of cohort reports to browse")
    device: str = Field("cpu", description="device for the in-process model")
    engine: Literal["auto", "torch", "openvino"] = Field(
        "auto", description="engine of the in-process model (auto, torch, openvino)"
    )
    api_timeout_s: float = Field(60.0, gt=0, description="timeout of one API call")

    @field_validator("api_url", mode="before")
    @classmethod
    def _blank_url_is_none(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip().rstrip("/")
            return value or None
        return value

    @field_validator("data_dir", "reports_dir", mode="before")
    @classmethod
    def _blank_dir_is_none(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value
