"""``analysis.cohort`` on three real kaggle_3m patients (symlinked, with their data.csv rows)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from analysis import cohort
from data.kaggle3m import PATIENT_DIR, scan_dataset, tumour_volumes

pytestmark = [pytest.mark.realdata, pytest.mark.slow]
COUNT = 3


@pytest.fixture(scope="module")
def three_patients(lgg_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A kaggle_3m folder of symlinks to three real patients and their data.csv rows (nothing
    is copied)."""
    root = tmp_path_factory.mktemp("real3") / "kaggle_3m"
    root.mkdir()
    folders = sorted(d for d in lgg_dir.iterdir() if d.is_dir() and PATIENT_DIR.match(d.name))
    chosen = folders[:: max(1, len(folders) // COUNT)][:COUNT]
    for folder in chosen:
        (root / folder.name).symlink_to(folder, target_is_directory=True)
    table = pd.read_csv(lgg_dir / "data.csv", dtype={"Patient": str})
    subjects = {"_".join(f.name.split("_")[:3]) for f in chosen}
    table[table["Patient"].isin(subjects)].to_csv(root / "data.csv", index=False)
    return root


def test_real_patients_end_to_end(three_patients: Path, tiny_model: Path, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert cohort.main(["--data-dir", str(three_patients), "--out", str(out), "--checkpoint",
                        str(tiny_model), "--quiet", "--gallery", "1", "--top", "1"]) == 0
    assert f"cohort: {COUNT} patients ({COUNT} segmented" in capsys.readouterr().out
    features = pd.read_csv(out / "features.csv").set_index("patient")
    assert features["truth_voxels"].to_dict() == tumour_volumes(scan_dataset(three_patients))
    assert (features["truth_voxels"] > 0).all()  # every kaggle_3m patient has tumour
    # Real FLAIR abnormalities span several slices: BEVR is defined and an ellipsoid bounds it.
    assert features["truth_bevr"].between(0.05, 1.0).all()
    assert features["truth_solidity"].between(0.0, 1.0).all()
    tests = pd.read_csv(out / "associations.csv")
    assert {"RNASeqCluster", "MethylationCluster", "COCCluster"} <= set(tests["variable"])
    assert (tests["n"] + tests["n_missing"] == COUNT).all()
    p = tests["p_value"]
    assert ((p >= 0) & (p <= 1) | p.isna()).all()
    summary = (out / "summary.json").read_text()
    assert '"without_clinical_row": []' in summary
    assert (out / "report.html").stat().st_size > 10_000
