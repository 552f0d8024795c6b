"""``python -m analysis.cohort`` end to end on a synthetic kaggle_3m cohort with a data.csv."""

from __future__ import annotations

import base64
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import cohort
from analysis.shape import FEATURES
from analysis.stats import AGREEMENT_COLUMNS, ASSOCIATION_COLUMNS
from data.kaggle3m import read_mask, scan_dataset, tumour_volumes
from data.preprocessing import PreprocessingConfig
from inference.predictor import Predictor
from models.card import ModelCard
from models.network import ModelConfig


def _run(data: Path, out: Path, model: Path, *extra: str) -> int:
    return cohort.main(["--data-dir", str(data), "--out", str(out), "--checkpoint", str(model),
                        "--quiet", *extra])


@pytest.fixture(scope="module")
def finished(cohort_dir: Path, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
             ) -> Path:
    out = tmp_path_factory.mktemp("report") / "out"
    assert _run(cohort_dir, out, tiny_model) == 0
    return out


def test_writes_every_output(finished: Path) -> None:
    for name in ("features.csv", "agreement.csv", "associations.csv", "summary.json",
                 "report.html", "figures/bland_altman.png"):
        assert (finished / name).is_file(), name
    assert len(list((finished / "patients").glob("*.json"))) == 8


def test_features_have_one_row_per_patient_and_the_issue_columns(
        finished: Path, cohort_dir: Path) -> None:
    features = pd.read_csv(finished / "features.csv")
    assert len(features) == 8
    assert list(features.columns[:6]) == ["patient", "subject", "slices", "model_split",
                                          "truth_voxels", "pred_voxels"]
    assert features["model_split"].isna().all()  # the tiny model's card has no split
    for name in FEATURES:
        assert {f"truth_{name}", f"pred_{name}"} <= set(features.columns)
    assert features.columns[-1] == "dice"
    assert features["dice"].between(0, 1).all()
    # Each synthetic tumour is a disc on 3 of 5 slices: a cylinder, BEVR well below 1 but > 0.
    assert features["truth_bevr"].between(0.5, 1.0).all()
    assert (features["truth_asd"] < 0.1).all()


def test_expert_voxels_equal_the_masks_own(finished: Path, cohort_dir: Path) -> None:
    features = pd.read_csv(finished / "features.csv").set_index("patient")
    expected = tumour_volumes(scan_dataset(cohort_dir))
    assert features["truth_voxels"].to_dict() == expected
    patient = scan_dataset(cohort_dir)[0]
    masks = sum(int(read_mask(s.mask_path).sum()) for s in patient.slices)
    assert features.loc[patient.patient_id, "truth_voxels"] == masks


def test_associations_cover_both_sources_with_valid_p_values(finished: Path) -> None:
    tests = pd.read_csv(finished / "associations.csv", keep_default_na=False,
                        na_values=[""])
    assert list(tests.columns) == ASSOCIATION_COLUMNS
    assert set(tests["source"]) == {"pred", "truth"}
    assert set(tests["variable"]) == {"RNASeqCluster", "CNCluster", "tumor_tissue_site",
                                      "age_at_initial_pathologic"}
    assert ((tests["n"] + tests["n_missing"]) == 8).all()
    rna = tests[tests["variable"] == "RNASeqCluster"]
    assert (rna["missing_variable"] == 2).all()  # one empty cell + FG_0008 without a row
    p = tests["p_value"]
    assert ((p >= 0) & (p <= 1) | p.isna()).all()
    # NaN only where documented: a one-category variable, or a constant feature (every
    # synthetic expert disc has solidity 1 and eccentricity 0).
    undefined = tests[p.isna()]
    assert ((undefined["variable"] == "tumor_tissue_site")
            | undefined["note"].str.contains("constant")).all()
    assert list(pd.read_csv(finished / "agreement.csv").columns) == AGREEMENT_COLUMNS


def test_report_is_self_contained(finished: Path) -> None:
    text = (finished / "report.html").read_text()
    sources = re.findall(r'src="([^"]+)"', text)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert base64.b64decode(sources[0].split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "href=" not in text and "<script" not in text
    assert "not for diagnostic use" in text
    assert "RNASeqCluster" in text and "ICC(2,1)" in text
    assert len(list((finished / "figures").glob("worst_*.png"))) == 6


def test_summary_line_and_resume_skips_finished_patients(
        finished: Path, cohort_dir: Path, tiny_model: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    before = (out / "features.csv").read_text()
    calls: list[int] = []
    original = Predictor.predict_volume

    def counting(self: Predictor, volume: object, batch_size: int | None = None) -> object:
        calls.append(1)
        return original(self, volume, batch_size)  # type: ignore[arg-type]

    monkeypatch.setattr(Predictor, "predict_volume", counting)
    capsys.readouterr()
    assert _run(cohort_dir, out, tiny_model) == 0
    assert calls == []
    line = capsys.readouterr().out
    assert "8 patients (0 segmented, 0 re-measured, 8 from cache, 0 failed)" in line
    assert (out / "features.csv").read_text() == before

    (out / "patients" / "TCGA_DU_0005_20000105.json").unlink()  # an interrupted patient
    assert _run(cohort_dir, out, tiny_model) == 0
    assert len(calls) == 1
    assert (out / "features.csv").read_text() == before

    assert _run(cohort_dir, out, tiny_model, "--no-largest-component") == 0
    assert len(calls) == 1  # post-processing changes features, not predictions
    assert "8 re-measured" in capsys.readouterr().out


def test_largest_component_keeps_one_predicted_component(finished: Path) -> None:
    from skimage.measure import label

    for path in (finished / "patients").glob("*.npz"):
        raw = cohort._unpack(path)
        kept = cohort.keep_largest_component(raw)
        assert label(kept, connectivity=3).max() <= 1
        assert kept.sum() <= raw.sum()
        assert np.isin(kept, [0, 1]).all()


def test_bad_inputs_exit_2_with_a_message(cohort_dir: Path, tiny_model: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(cohort_dir, tmp_path / "o1", tiny_model, "--clinical",
                str(tmp_path / "none.csv")) == 2
    assert "clinical table not found" in capsys.readouterr().err
    assert _run(cohort_dir, tmp_path / "o2", tmp_path / "none.safetensors") == 2
    assert "checkpoint not found" in capsys.readouterr().err
    assert _run(tmp_path, tmp_path / "o3", tiny_model) == 2
    assert "no patient folders" in capsys.readouterr().err


def test_help_explains_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cohort.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for action in cohort.build_parser()._actions:
        assert action.help, action.option_strings
        for option in action.option_strings:
            assert option in text


def test_model_split_comes_from_the_card() -> None:
    base = ModelCard(model=ModelConfig(), preprocessing=PreprocessingConfig())
    split = {"seed": 0, "fractions": [0.7, 0.15, 0.15], "train": ["A"], "val": ["B"],
             "test": ["C"]}
    assert cohort.model_splits(base.with_updates(split=split)) == {
        "A": "train", "B": "val", "C": "test"}
    assert cohort.model_splits(base) == {}
    # A patient listed twice is no split at all: no patient is marked.
    assert cohort.model_splits(base.with_updates(split={**split, "test": ["A"]})) == {}
