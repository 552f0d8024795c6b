"""Shared fixtures. Real-data tests read ../shared/data/lgg/kaggle_3m (or $LGGSEG_TEST_DATA_DIR)
and skip with a reason where it is absent, as on a user's fresh clone."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_LGG = REPO.parent / "shared" / "data" / "lgg" / "kaggle_3m"

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
