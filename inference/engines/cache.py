"""Where converted models are kept: ``LGGSEG_CACHE_DIR``, by default ``~/.cache/lggseg``."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class CacheSettings(BaseSettings):
    """``LGGSEG_CACHE_DIR``: a folder for engine files derived from the weights (rebuildable)."""

    model_config = SettingsConfigDict(env_prefix="LGGSEG_", extra="ignore", frozen=True)

    cache_dir: Path = Field(
        Path.home() / ".cache" / "lggseg",
        description="converted models (OpenVINO IR), keyed by the weights' SHA-256",
    )


def cache_dir() -> Path:
    """The cache folder, read from the environment on each call (tests point it elsewhere)."""
    return CacheSettings().cache_dir.expanduser()
