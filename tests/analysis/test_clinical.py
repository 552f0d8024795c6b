"""data.csv reading and its join to the patient folders."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from analysis.clinical import ClinicalError, join, read_clinical
from data.kaggle3m import scan_dataset


def test_join_keeps_every_folder_and_reports_both_kinds_of_mismatch(cohort_dir: Path) -> None:
    clinical = read_clinical(cohort_dir / "data.csv")
    joined = join(scan_dataset(cohort_dir), clinical)
    assert len(joined.table) == 8  # every folder, with or without a row
    assert joined.without_row == ["TCGA_FG_0008_20000108"]
    assert joined.without_folder == ["TCGA_XX_9999"]
    assert joined.subjects["TCGA_CS_0001_20000101"] == "TCGA_CS_0001"
    assert joined.table.loc["TCGA_CS_0002_20000102", "CNCluster"] == 2
    assert math.isnan(joined.table.loc["TCGA_CS_0003_20000103", "CNCluster"])  # empty cell
    assert joined.table.loc["TCGA_FG_0008_20000108"].isna().all()


def test_variables_selects_columns(cohort_dir: Path) -> None:
    clinical = read_clinical(cohort_dir / "data.csv", ["RNASeqCluster"])
    assert list(clinical.columns) == ["RNASeqCluster"]
    with pytest.raises(ClinicalError, match="no column"):
        read_clinical(cohort_dir / "data.csv", ["RNASeq"])


@pytest.mark.parametrize(("text", "message"), [
    ("ID,RNASeqCluster\nTCGA_CS_0001,1\n", "no 'Patient' column"),
    ("Patient,RNASeqCluster\nTCGA_CS_0001,1\nTCGA_CS_0001,2\n", "more than once"),
    ("Patient,RNASeqCluster\nTCGA_CS_0001,high\n", "non-numeric"),
])
def test_bad_tables_are_refused_with_a_reason(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "data.csv"
    path.write_text(text)
    with pytest.raises(ClinicalError, match=message):
        read_clinical(path)


def test_missing_table_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ClinicalError, match="not found"):
        read_clinical(tmp_path / "data.csv")
