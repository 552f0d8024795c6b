"""Fixtures for the data tests: the real dataset scanned once per session, and small synthetic
kaggle_3m folders written with tifffile."""

from __future__ import annotations

import re
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Listing:
    """What the real folder holds, counted from its file names alone (not by the reader)."""

    slices: dict[str, int]  # patient folder -> image files (masks not counted)

    @property
    def patients(self) -> int:
        return len(self.slices)

    @property
    def total_slices(self) -> int:
        return sum(self.slices.values())

    def institutions(self) -> Counter[str]:
        return Counter(name.split("_")[1] for name in self.slices)


@pytest.fixture(scope="session")
def lgg_listing(lgg_dir: Path) -> Listing:
    """The real folder's own counts, so tests hold for any copy (74 patients here, 110 public)."""
    slices = {}
    for folder in sorted(d for d in lgg_dir.iterdir() if d.is_dir() and d.name.startswith("TCGA_")):
        slices[folder.name] = sum(
            1 for f in folder.iterdir() if re.fullmatch(rf"{folder.name}_\d+\.tif", f.name)
        )
    return Listing(slices)


def tumour_slices(tumour: dict[str, np.ndarray], patients: object = None) -> int:
    """Slices with tumour, from the per-slice pixel counts of ``lgg_tumour``."""
    return sum(int((t > 0).sum()) for pid, t in tumour.items()
               if patients is None or pid in patients)  # type: ignore[operator]


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
