"""app/exports.py (downloads built in memory) and app/settings.py (LGGSEG_* environment)."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from app import exports
from app.settings import ViewerSettings
from models import BUNDLED_CHECKPOINT


def test_mask_png_is_0_255_of_the_slices_size() -> None:
    mask = np.zeros((20, 30), np.uint8)
    mask[5:10, 3:8] = 1
    decoded = np.asarray(Image.open(io.BytesIO(exports.mask_png(mask))))
    assert decoded.shape == (20, 30) and decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, mask * 255)
    with pytest.raises(ValueError, match="H x W"):
        exports.mask_png(np.zeros((2, 3, 4)))


def test_mask_nifti_keeps_the_grid_and_the_affine() -> None:
    masks = np.zeros((16, 12, 5), np.uint8)
    masks[4:8, 2:6, 3] = 1
    affine = np.array([[0.9, 0, 0, -10], [0, 0.9, 0, 5], [0, 0, 3.0, 2], [0, 0, 0, 1]])
    image = nib.Nifti1Image.from_bytes(gzip.decompress(exports.mask_nifti(masks, affine)))
    np.testing.assert_array_equal(np.asarray(image.dataobj), masks)
    assert image.get_data_dtype() == np.uint8
    np.testing.assert_allclose(image.affine, affine)
    np.testing.assert_allclose(image.header.get_zooms(), (0.9, 0.9, 3.0))


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
