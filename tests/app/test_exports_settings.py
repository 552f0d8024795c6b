"""app/exports.py (the metrics download) and app/settings.py (LGGSEG_* environment)."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest

from app import exports
from app.settings import ViewerSettings
from models import BUNDLED_CHECKPOINT


def test_metrics_csv_has_a_header_and_one_line_per_row() -> None:
    rows = [{"slice": "a.tif", "dice": 0.5, "truth_pixels": None},
            {"slice": "b.tif", "dice": 1.0, "truth_pixels": 3}]
    table = pd.read_csv(io.BytesIO(exports.metrics_csv(rows)))
    assert list(table.columns) == ["slice", "dice", "truth_pixels"]
    assert table["dice"].tolist() == [0.5, 1.0]
    with pytest.raises(ValueError):
        exports.metrics_csv([])


def test_settings_read_the_lggseg_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("API_URL", "API_KEY", "CHECKPOINT", "DATA_DIR", "DEVICE"):
        monkeypatch.delenv(f"LGGSEG_{name}", raising=False)
    defaults = ViewerSettings()
    assert defaults.api_url is None and defaults.data_dir is None and defaults.api_key is None
    assert defaults.checkpoint == BUNDLED_CHECKPOINT and defaults.device == "cpu"

    monkeypatch.setenv("LGGSEG_API_URL", " http://api:8000/ ")
    monkeypatch.setenv("LGGSEG_API_KEY", "s3cret-key-42")
    monkeypatch.setenv("LGGSEG_DATA_DIR", "/data/kaggle_3m")
    monkeypatch.setenv("LGGSEG_CHECKPOINT", "/m/best.safetensors")
    configured = ViewerSettings()
    assert configured.api_url == "http://api:8000"
    assert configured.api_key is not None
    assert configured.api_key.get_secret_value() == "s3cret-key-42"
    assert "s3cret" not in repr(configured)
    assert configured.data_dir == Path("/data/kaggle_3m")
    assert configured.checkpoint == Path("/m/best.safetensors")

    monkeypatch.setenv("LGGSEG_API_URL", "")
    monkeypatch.setenv("LGGSEG_DATA_DIR", "  ")
    blank = ViewerSettings()
    assert blank.api_url is None and blank.data_dir is None
