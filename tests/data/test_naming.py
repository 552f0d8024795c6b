"""The naming rules of data.naming: three sequence files per case (nnU-Net style)."""

from __future__ import annotations

from pathlib import Path

from data.naming import (
    case_prediction_name,
    group_sequences,
    is_mask_name,
    is_prediction_name,
    sequence_file,
    sequence_truth_names,
)


def test_sequence_file_names_the_case_and_channel() -> None:
    assert sequence_file("imagesTs/BraTS_001_0001.nii.gz") == ("BraTS_001", 1)
    assert sequence_file("sub-01.ses-2_0002.NII") == ("sub-01.ses-2", 2)
    assert sequence_file("case_0003.nii") == ("case", 3)
    for other in ("case_0001.tif", "case_1.nii.gz", "scan_2001.nii.gz", "case.nii.gz"):
        assert sequence_file(other) is None, other


def test_group_sequences_orders_channels_and_reports_incomplete_cases() -> None:
    files = [Path(n) for n in (
        "b_0002.nii", "b_0000.nii.gz", "b_0001.nii.gz",  # any order, mixed extensions
        "lonely_0001.nii.gz",
        "four_0000.nii", "four_0001.nii", "four_0002.nii", "four_0003.nii",
        "twice_0000.nii", "twice_0000.nii.gz", "twice_0001.nii", "twice_0002.nii",
        "b.nii.gz", "notes.txt",
    )]  # fmt: skip
    cases, problems = group_sequences(files, lambda p: p.name)
    assert [(c.case, [f.name for f in c.files]) for c in cases] == [
        ("b", ["b_0000.nii.gz", "b_0001.nii.gz", "b_0002.nii"])
    ]
    assert len(problems) == 3
    lonely, four, twice = problems
    assert "lonely_0000, lonely_0002 missing" in lonely and "lonely_0001 (FLAIR)" in lonely
    assert "a single NIfTI holding all three sequences" in lonely
    assert "four_0003 is not a sequence the model reads" in four
    assert "twice_0000.nii.gz is a second file" in twice


def test_outputs_never_take_an_input_or_label_name() -> None:
    case = "BraTS_001"
    out = case_prediction_name(case, ".nii.gz")
    assert out == "BraTS_001_pred.nii.gz" and is_prediction_name(out)
    inputs = [f"{case}_000{i}.nii.gz" for i in range(3)] + sequence_truth_names(case)
    assert out not in inputs and case_prediction_name(case, ".dcm") not in inputs
    assert sequence_truth_names(case)[0] == "BraTS_001.nii.gz"
    assert is_mask_name(sequence_truth_names(case)[-1])
