"""Patient-level split: deterministic, leak-free, stratified; JSON round trip."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from data.kaggle3m import DatasetError, PatientRecord, SliceRecord
from data.split import PARTS, Split, make_split, target_counts


def _volumes(tumour: dict[str, np.ndarray]) -> dict[str, int]:
    return {pid: int(t.sum()) for pid, t in tumour.items()}


def fake_patients(spec: dict[str, int]) -> tuple[list[PatientRecord], dict[str, int]]:
    """Records without files (the split never opens them when volumes are given)."""
    patients = []
    for name in spec:
        s = SliceRecord(name, 1, Path(f"{name}_1.tif"), Path(f"{name}_1_mask.tif"))
        patients.append(PatientRecord(name, name.split("_")[1], (s,)))
    return patients, dict(spec)


# ---------------------------------------------------------------------------- real data


@pytest.mark.realdata
def test_real_split_is_deterministic_leak_free_and_stratified(
    lgg_patients: list[PatientRecord], lgg_tumour: dict[str, np.ndarray]
) -> None:
    volumes = _volumes(lgg_tumour)
    split = make_split(lgg_patients, seed=0, volumes=volumes)
    again = make_split(list(reversed(lgg_patients)), seed=0, volumes=volumes)
    assert split == again  # same seed, same patients (in any order) -> same split
    other = make_split(lgg_patients, seed=1, volumes=volumes)
    assert other.test != split.test

    parts = [set(split.train), set(split.val), set(split.test)]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert parts[0] | parts[1] | parts[2] == {p.patient_id for p in lgg_patients}
    sizes = target_counts(len(lgg_patients), (0.7, 0.15, 0.15))
    assert (len(split.train), len(split.val), len(split.test)) == sizes

    institution = {p.patient_id: p.institution for p in lgg_patients}
    for seed in range(20):
        s = make_split(lgg_patients, seed=seed, volumes=volumes)
        in_train = Counter(institution[pid] for pid in s.train)
        for inst, n in Counter(institution.values()).items():
            if n >= 3:
                assert in_train[inst] > 0, (seed, inst)
        # burden: every part has patients with tumour volume below and above the median
        median = np.median(list(volumes.values()))
        for part in PARTS:
            vols = [volumes[pid] for pid in s.part(part)]
            assert min(vols) < median < max(vols), (seed, part)


@pytest.mark.realdata
def test_real_split_selects_the_records(lgg_patients: list[PatientRecord], lgg_tumour) -> None:
    split = make_split(lgg_patients, seed=3, volumes=_volumes(lgg_tumour))
    test = split.select(lgg_patients, "test")
    assert [p.patient_id for p in test] == split.test
    assert sum(len(split.select(lgg_patients, part)) for part in PARTS) == len(lgg_patients)


# ---------------------------------------------------------------------------- synthetic


def test_split_reads_tumour_volumes_when_not_given(make_kaggle3m) -> None:
    from data.kaggle3m import scan_dataset

    root = make_kaggle3m([f"TCGA_AA_000{i}_20000101" for i in range(1, 5)], slices=2)
    patients = scan_dataset(root)
    volumes = {p.patient_id: 24 for p in patients}  # one tumour slice of 4x6 pixels each
    assert make_split(patients, seed=5) == make_split(patients, seed=5, volumes=volumes)


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (1, (1, 0, 0)),
        (2, (1, 1, 0)),
        (3, (1, 1, 1)),
        (10, (7, 2, 1)),
        (20, (14, 3, 3)),
        (74, (52, 11, 11)),
        (110, (77, 17, 16)),
    ],
)
def test_target_counts(n: int, expected: tuple[int, int, int]) -> None:
    assert target_counts(n, (0.7, 0.15, 0.15)) == expected


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7])
def test_small_lists_every_part_filled_when_possible(n: int) -> None:
    patients, volumes = fake_patients({f"TCGA_A{i}_000{i}_2000": i * 10 for i in range(n)})
    split = make_split(patients, seed=0, volumes=volumes)
    sizes = [len(split.train), len(split.val), len(split.test)]
    assert sum(sizes) == n and sizes[0] >= 1
    if n >= 3:
        assert min(sizes) >= 1


def test_subject_scanned_twice_stays_in_one_part() -> None:
    spec = {f"TCGA_AA_{i:04d}_20000101": i for i in range(20)}
    spec["TCGA_AA_0007_20050505"] = 3  # a second scan of subject TCGA_AA_0007
    patients, volumes = fake_patients(spec)
    for seed in range(10):
        split = make_split(patients, seed=seed, volumes=volumes)
        home = [part for part in PARTS if "TCGA_AA_0007_20000101" in split.part(part)]
        assert "TCGA_AA_0007_20050505" in split.part(home[0])


@pytest.mark.parametrize(
    "fractions",
    [(0.5, 0.5), (0.7, 0.2, 0.2), (0.0, 0.5, 0.5), (1.2, -0.1, -0.1), (float("nan"), 0.5, 0.5)],
)
def test_bad_fractions_are_refused(fractions) -> None:
    patients, volumes = fake_patients({"TCGA_AA_0001_2000": 1, "TCGA_AA_0002_2000": 2})
    with pytest.raises(ValueError, match="fractions"):
        make_split(patients, fractions=fractions, volumes=volumes)


def test_empty_and_duplicate_lists_are_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        make_split([], volumes={})
    patients, volumes = fake_patients({"TCGA_AA_0001_2000": 1})
    with pytest.raises(ValueError, match="duplicate"):
        make_split(patients * 2, volumes=volumes)


def test_json_round_trip_is_atomic_and_exact(tmp_path: Path) -> None:
    split = Split(["a", "b"], ["c"], ["d"], seed=7, fractions=(0.5, 0.25, 0.25))
    path = tmp_path / "runs" / "split.json"
    split.to_json(path)
    assert Split.from_json(path) == split
    assert json.loads(path.read_text())["format"] == "lggseg-split/1"
    assert [p.name for p in path.parent.iterdir()] == ["split.json"]  # no temp file left
    assert Split.from_dict(split.to_dict()) == split


def test_split_validation() -> None:
    with pytest.raises(ValueError, match="patient a is in both train and test"):
        Split(["a"], [], ["a"], seed=0)
    with pytest.raises(ValueError, match="missing val"):
        Split.from_dict({"seed": 0, "fractions": [1, 0, 0], "train": [], "test": []})
    with pytest.raises(ValueError, match="list of patient ids"):
        Split.from_dict({"seed": 0, "fractions": [1, 0, 0], "train": "a", "val": [], "test": []})
    with pytest.raises(ValueError, match="unknown split part"):
        Split(["a"], [], [], seed=0).part("validation")


def test_from_json_reports_bad_files(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="cannot read split file .*bad.json"):
        Split.from_json(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="cannot read split file"):
        Split.from_json(tmp_path / "missing.json")


def test_select_names_missing_patients() -> None:
    patients, _ = fake_patients({"TCGA_AA_0001_2000": 1})
    split = Split(["TCGA_AA_0001_2000"], ["TCGA_AA_0002_2000"], [], seed=0)
    assert split.select(patients, "train") == patients
    with pytest.raises(DatasetError, match="1 patient.* val split .*TCGA_AA_0002_2000"):
        split.select(patients, "val")
