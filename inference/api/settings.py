"""Serving settings: environment variables prefixed ``LGGSEG_SERVE_`` (or a ``.env`` file).

Examples: ``LGGSEG_SERVE_CHECKPOINT=runs/x/best.safetensors``, ``LGGSEG_SERVE_API_KEY=secret``,
``LGGSEG_SERVE_CORS_ORIGINS='["http://localhost:8501"]'`` (lists are JSON).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from inference.decode import DecodeLimits
from models import BUNDLED_CHECKPOINT


class ServeSettings(BaseSettings):
    """Everything the API can be tuned with; read once per process (see :func:`get_settings`)."""

    model_config = SettingsConfigDict(env_prefix="LGGSEG_SERVE_", extra="ignore", frozen=True)

    # The model
    checkpoint: Path = Field(BUNDLED_CHECKPOINT, description="weights (.safetensors; card beside)")
    device: str = Field("cpu", description="torch device, e.g. cpu or cuda:0")
    engine: Literal["auto", "torch", "openvino"] = Field(
        "auto",
        description="what runs the network: auto (OpenVINO on CPU where installed, torch on "
        "CUDA), torch or openvino",
    )
    precision: Literal["auto", "bf16", "fp32", "int8"] = Field(
        "auto",
        description="auto: int8 where a validated int8 model lies beside the weights, else bf16 "
        "where the hardware has it natively, else fp32",
    )
    tta: bool = Field(False, description="average with a horizontally flipped pass")
    threshold: float = Field(0.5, gt=0, lt=1)
    torch_threads: int | None = Field(
        None, ge=1, description="intra-op threads; None: every usable core"
    )
    warmup: bool = Field(True, description="run dummy batches at start-up before /readyz is 200")

    # Uploads and decoding
    max_upload_bytes: int = Field(64 * 2**20, ge=1024)
    max_form_parts: int = Field(8, ge=1)
    max_form_files: int = Field(
        1024,
        ge=1,
        description="files of one DICOM study upload (/v1/*/dicom): loose parts and the "
        "entries of its zips together",
    )
    max_part_header_bytes: int = Field(4096, ge=256)
    max_pixels: int = Field(2048 * 2048, ge=64)
    max_aspect_ratio: float = Field(8.0, ge=1)
    max_volume_values: int = Field(2**25, ge=64)
    max_slices: int = Field(1024, ge=1)
    max_decompressed_bytes: int = Field(512 * 2**20, ge=1024)
    decode_budget_mb: int = Field(
        1024,
        ge=16,
        description="memory for the requests' bodies and decoded images together (MiB); a "
        "request reserves its share, bounded from the file's header, before decoding",
    )
    admission_wait_s: float = Field(
        2.0, ge=0, description="how long a request waits for its memory share; then 503"
    )

    # Batching, overload and timeouts
    max_batch: int = Field(8, ge=1, description="largest micro-batch")
    model_workers: int = Field(
        1,
        ge=1,
        description="batches run side by side, one thread each; keep "
        "model_workers x torch_threads <= cores",
    )
    batch_wait_ms: float = Field(
        0.0,
        ge=0,
        description="how long a batch waits to fill; 0: greedy (a batch is whatever queued "
        "while the model was busy, so an idle model starts at once)",
    )
    queue_limit: int = Field(16, ge=1, description="slices waiting or running; beyond -> 503")
    latency_budget_s: float | None = Field(
        0.6,
        gt=0,
        description="503 when the slices ahead would take longer than this at the "
        "measured pace (keeps admitted requests fast whatever the hardware); None: off",
    )
    max_concurrent_volumes: int = Field(1, ge=1)
    request_timeout_s: float = Field(30.0, gt=0)
    volume_timeout_s: float = Field(300.0, gt=0)
    retry_after_s: int = Field(1, ge=1)

    # Connections (applied by python -m inference.serve)
    max_concurrent_requests: int = Field(
        64,
        ge=1,
        description="requests being worked on at once; beyond -> 503. Probes (/healthz, "
        "/readyz, /metrics) are never counted or refused",
    )
    keep_alive_s: int = Field(5, ge=1, description="idle keep-alive connections close (s)")
    header_timeout_s: float = Field(
        10.0, gt=0, description="a request's line and headers must arrive within this"
    )
    max_header_bytes: int = Field(
        32 * 1024, ge=1024, description="request line + headers; beyond -> 431"
    )
    body_timeout_s: float = Field(
        30.0, gt=0, description="longest pause while an upload's body arrives; then 408"
    )

    # Access
    api_key: SecretStr | None = Field(None, description="if set, /v1/* needs header X-API-Key")
    cors_origins: list[str] = Field(default_factory=list)

    @field_validator("api_key")
    @classmethod
    def _printable_ascii_key(cls, key: SecretStr | None) -> SecretStr | None:
        if key is not None and not all(32 < ord(c) < 127 for c in key.get_secret_value()):
            raise ValueError(
                "the API key must be printable ASCII without spaces (HTTP headers carry "
                "ASCII, so any other key could never match); choose another key"
            )
        return key

    def decode_limits(self) -> DecodeLimits:
        return DecodeLimits(
            max_pixels=self.max_pixels,
            max_aspect_ratio=self.max_aspect_ratio,
            max_volume_values=self.max_volume_values,
            max_slices=self.max_slices,
            max_decompressed_bytes=self.max_decompressed_bytes,
        )


@lru_cache
def get_settings() -> ServeSettings:
    """The process's settings (cached), read from the environment; routes take the settings the
    app was built with (``deps.app_settings``)."""
    return ServeSettings()
