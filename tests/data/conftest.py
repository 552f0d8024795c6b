"""Fixtures for the data tests: the real dataset scanned once per session, and small synthetic
kaggle_3m folders written with tifffile."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
import tifffile

from data.kaggle3m import PatientRecord, scan_dataset, tumour_pixels

SyntheticWriter = Callable[..., Path]


@pytest.fixture(scope="session")
def lgg_patients(lgg_dir: Path) -> list[PatientRecord]:
    """The real dataset, scanned once (headers only)."""
    return scan_dataset(lgg_dir)


@pytest.fixture(scope="session")
def lgg_tumour(lgg_patients: list[PatientRecord]) -> dict[str, np.ndarray]:
    """Tumour pixels of every real slice, by patient id: the one full decode of all masks."""
    return {p.patient_id: tumour_pixels(p) for p in lgg_patients}


def synthetic_slice(
    seed: int, size: int = 16, tumour: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """A random uint8 H x W x 3 image with a zero border, and a 0/255 mask."""
    rng = np.random.default_rng(seed)
    image = np.zeros((size, size, 3), dtype=np.uint8)
    image[2:-2, 2:-2] = rng.integers(1, 256, (size - 4, size - 4, 3), dtype=np.uint8)
    mask = np.zeros((size, size), dtype=np.uint8)
    if tumour:
        mask[5:9, 4:10] = 255
    return image, mask


def expected_slice(name: str, index: int, size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """The image and 0/255 mask that ``make_kaggle3m`` writes for slice ``index`` of ``name``."""
    return synthetic_slice(zlib.crc32(f"{name}_{index}".encode()), size, tumour=index % 2 == 0)


def write_tif(path: Path, array: np.ndarray, compress: bool) -> None:
    kwargs = {"compression": "zlib", "predictor": True} if compress else {}
    photometric = "rgb" if array.ndim == 3 else "minisblack"
    tifffile.imwrite(path, array, photometric=photometric, **kwargs)


@pytest.fixture
def make_kaggle3m(tmp_path: Path) -> SyntheticWriter:
    """Write a synthetic kaggle_3m folder; returns its path.

    ``patients`` maps a folder name to its number of slices (1..n); slices with an even number
    have tumour. ``compress`` alternates deflate and uncompressed files when "mixed".
    """

    def write(
        patients: dict[str, int] | Sequence[str] = ("TCGA_AA_0001_20000101",),
        slices: int = 12,
        compress: bool | str = "mixed",
        size: int = 16,
        root: Path | None = None,
    ) -> Path:
        root = root or tmp_path / "kaggle_3m"
        root.mkdir(parents=True, exist_ok=True)
        (root / "data.csv").write_text("Patient\n")
        counts = patients if isinstance(patients, dict) else dict.fromkeys(patients, slices)
        for name, n in counts.items():
            folder = root / name
            folder.mkdir()
            for i in range(1, n + 1):
                image, mask = expected_slice(name, i, size)
                packed = (i % 2 == 1) if compress == "mixed" else bool(compress)
                write_tif(folder / f"{name}_{i}.tif", image, packed)
                write_tif(folder / f"{name}_{i}_mask.tif", mask, not packed)
        return root

    return write
