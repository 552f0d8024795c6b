"""A synthetic kaggle_3m cohort with a data.csv, and a tiny random-weights checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.inference.samples import make_checkpoint
from tests.training.conftest import PATIENTS, write_synthetic_kaggle3m

CLINICAL = """Patient,RNASeqCluster,CNCluster,tumor_tissue_site,age_at_initial_pathologic
TCGA_CS_0001,1,1,1,30
TCGA_CS_0002,1,2,1,35
TCGA_CS_0003,2,,1,41
TCGA_DU_0004,2,1,1,47
TCGA_DU_0005,1,2,1,52
TCGA_DU_0006,,1,1,58
TCGA_FG_0007,2,2,1,63
TCGA_XX_9999,1,1,1,70
"""
"""Eight rows: seven of the eight synthetic patients (FG_0008 has no row), one row without a
folder (XX_9999); one missing RNASeqCluster, one missing CNCluster; a constant column; a numeric
column (age, more than 10 distinct values would be needed to count as numeric: see the tests)."""


@pytest.fixture(scope="session")
def cohort_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_synthetic_kaggle3m(tmp_path_factory.mktemp("cohort") / "kaggle_3m")
    (root / "data.csv").write_text(CLINICAL)
    assert len(PATIENTS) == 8
    return root


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random weights at 32 px with spread logits, so that some pixels come out as tumour."""
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors",
                           image_size=32, logit_scale=8.0)
