"""Shared fixtures. Real-data tests read ../shared/data/lgg/kaggle_3m (or $LGGSEG_TEST_DATA_DIR)
and skip with a reason where it is absent, as on a user's fresh clone."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tests.inference.samples import make_checkpoint

REPO = Path(__file__).resolve().parents[1]
DEFAULT_LGG = REPO.parent / "shared" / "data" / "lgg" / "kaggle_3m"
TRAINING_PATIENT = "TCGA_CS_4941_19960909"
"""The tiny checkpoint's card lists this (real) patient as a training patient."""

# Two cores: keep intra-op threads fixed so tests are repeatable and do not oversubscribe.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _restore_torch_threads() -> object:
    """A test that changes torch's thread count (the API's lifespan does) changes it for itself
    only: every later test starts with the suite's setting."""
    threads = torch.get_num_threads()
    yield
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


@pytest.fixture(autouse=True, scope="session")
def _engine_cache(tmp_path_factory: pytest.TempPathFactory) -> object:
    """Converted models (OpenVINO IR) go to a temporary folder, never the user's ~/.cache."""
    before = os.environ.get("LGGSEG_CACHE_DIR")
    os.environ["LGGSEG_CACHE_DIR"] = str(tmp_path_factory.mktemp("engine-cache"))
    yield
    if before is None:
        os.environ.pop("LGGSEG_CACHE_DIR", None)
    else:
        os.environ["LGGSEG_CACHE_DIR"] = before


def lgg_root() -> Path | None:
    root = Path(os.environ.get("LGGSEG_TEST_DATA_DIR", DEFAULT_LGG))
    return root if (root / "data.csv").is_file() else None


@pytest.fixture(scope="session")
def lgg_dir() -> Path:
    """The real kaggle_3m folder; skips the test when it is not on this machine."""
    root = lgg_root()
    if root is None:
        pytest.skip(
            "real LGG data not found at ../shared/data/lgg/kaggle_3m "
            "(set LGGSEG_TEST_DATA_DIR to a kaggle_3m folder to run this test)"
        )
    return root


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small checkpoint every test shares: resnet18, 64 x 64 input, seed 0, random weights
    (predictions are meaningless, probabilities all near 0.5, but every code path is the real
    one), with a full model card. Tests that modify a checkpoint build their own with
    ``tests.inference.samples.make_checkpoint``."""
    return make_checkpoint(
        tmp_path_factory.mktemp("ckpt") / "tiny.safetensors",
        metrics={"test_mean_patient_dice": 0.5},
        split={"seed": 0, "fractions": [0.7, 0.15, 0.15], "train": [TRAINING_PATIENT],
               "val": [], "test": []},
        data_source="random weights for tests",
    )
