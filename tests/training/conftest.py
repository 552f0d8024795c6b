"""A tiny synthetic dataset in the kaggle_3m layout, so training tests need no real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

# (institution, patient) pairs: three institutions, eight patients -> split 6 / 1 / 1.
PATIENTS = [
    ("CS", "0001"), ("CS", "0002"), ("CS", "0003"),
    ("DU", "0004"), ("DU", "0005"), ("DU", "0006"),
    ("FG", "0007"), ("FG", "0008"),
]
SLICES = 5
SIDE = 64


def write_synthetic_kaggle3m(root: Path, seed: int = 0) -> Path:
    """Write 8 patients x 5 slices of 64x64 'brains' with a bright FLAIR blob as tumour."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIDE, :SIDE]
    brain = (yy - SIDE / 2) ** 2 + (xx - SIDE / 2) ** 2 < (SIDE * 0.4) ** 2
    for n, (institution, patient) in enumerate(PATIENTS):
        case = f"TCGA_{institution}_{patient}_2000010{n % 9 + 1}"
        folder = root / case
        folder.mkdir(parents=True)
        cy, cx = rng.integers(20, SIDE - 20, size=2)
        radius = 4 + n % 4
        for index in range(1, SLICES + 1):
            image = np.zeros((SIDE, SIDE, 3), dtype=np.uint8)
            image[brain] = rng.integers(60, 120, size=(int(brain.sum()), 3), dtype=np.uint8)
            mask = np.zeros((SIDE, SIDE), dtype=np.uint8)
            if 2 <= index <= SLICES - 1:  # tumour on the middle slices only
                tumour = (yy - cy) ** 2 + (xx - cx) ** 2 < radius**2
                mask[tumour] = 255
                image[tumour, 1] = 220  # FLAIR hyperintensity
            tifffile.imwrite(folder / f"{case}_{index}.tif", image)
            tifffile.imwrite(folder / f"{case}_{index}_mask.tif", mask)
    return root


@pytest.fixture(scope="session")
def synthetic_lgg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_kaggle3m(tmp_path_factory.mktemp("kaggle_3m"))


TINY_RUN = (
    "preprocessing.image_size=32", "model.backbone=resnet18", "training.batch_size=4",
    "training.device=cpu", "data.num_workers=0", "training.seed=3", "optimizer.name=znorm-adam",
    "optimizer.lr=0.003", "training.warmup_epochs=0.5", "training.early_stopping_patience=0",
    "data.augmentation=light", "data.tumour_sampling=0.5", "training.val_batch_size=8",
)
"""A seconds-long CPU run on the synthetic data, as ``--set`` values."""


def sets(*values: str) -> list[str]:
    """``--set`` flags for ``values``: ``sets("optimizer.lr=1") == ["--set", "optimizer.lr=1"]``."""
    return [arg for value in values for arg in ("--set", value)]


def tiny_args(data_dir: Path, out: Path, *extra: str) -> list[str]:
    """CLI arguments for a seconds-long CPU run on the synthetic data, two epochs."""
    return ["--data-dir", str(data_dir), "--out", str(out), "--epochs", "2", *sets(*TINY_RUN),
            *extra]
