"""``python -m inference.predict``: slices, patient folders, NIfTI in; predictions, areas.csv and
summary.csv out; inputs and ground truth never written over."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from inference.predict import main
from inference.predictor import Predictor
from tests.inference.samples import brain_like, jpeg_bytes, nifti_bytes, png_bytes, tiff_bytes


def read_rows(out: Path) -> list[dict[str, str]]:
    with (out / "areas.csv").open() as fh:
        return list(csv.DictReader(fh))


def test_slices_and_nifti(
    tmp_path: Path, spread_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a.png").write_bytes(png_bytes(brain_like(40, 50, 1)))
    (tmp_path / "b.data").write_bytes(tiff_bytes(brain_like(33, 31, 2)))  # sniffed, not named
    affine = np.diag([0.5, 0.5, 2.0, 1.0])
    volume = np.stack([brain_like(30, 30, s) for s in range(3)], axis=2)
    (tmp_path / "v.nii.gz").write_bytes(nifti_bytes(volume, affine, compress=True))
    out = tmp_path / "out"
    args = [str(tmp_path / n) for n in ("a.png", "b.data", "v.nii.gz")]
    code = main([*args, "--checkpoint", str(spread_checkpoint), "--out", str(out), "--quiet"])
    assert code == 0
    predictor = Predictor.from_checkpoint(spread_checkpoint)
    mask = np.asarray(Image.open(out / "a_pred.png"))
    expected = predictor.predict_slice(brain_like(40, 50, 1)).mask * 255
    assert np.array_equal(mask, expected)
    assert np.asarray(Image.open(out / "b_pred.png")).shape == (33, 31)
    nifti = nib.Nifti1Image.from_bytes(gzip.decompress((out / "v_pred.nii.gz").read_bytes()))
    assert nifti.shape == (30, 30, 3) and np.allclose(nifti.affine, affine)
    rows = read_rows(out)
    assert len(rows) == 5
    by_input = {(Path(r["input"]).name, r["slice"]): r for r in rows}
    assert int(by_input[("a.png", "")]["tumour_pixels"]) == int((mask > 0).sum())
    vol_row = by_input[("v.nii.gz", "2")]  # 1-based slice numbers
    assert float(vol_row["tumour_mm2"]) == pytest.approx(int(vol_row["tumour_pixels"]) * 0.25)
    assert int(vol_row["tumour_pixels"]) == int(np.asarray(nifti.dataobj)[:, :, 1].sum())
    assert "segmented 5 slices from 3 input(s)" in capsys.readouterr().out


def test_patient_folder_with_masks_gives_dice(tmp_path: Path, tiny_checkpoint: Path) -> None:
    patient = tmp_path / "TCGA_AB_1234_20000101"
    patient.mkdir()
    for i in (1, 2, 10):
        stem = f"{patient.name}_{i}"
        (patient / f"{stem}.tif").write_bytes(tiff_bytes(brain_like(32, 32, i)))
        truth = np.zeros((32, 32), np.uint8)
        truth[: i * 2] = 255
        (patient / f"{stem}_mask.tif").write_bytes(tiff_bytes(truth))
    out = tmp_path / "out"
    assert (
        main([str(tmp_path), "--checkpoint", str(tiny_checkpoint), "--out", str(out), "--quiet"])
        == 0
    )
    written = sorted(p.name for p in (out / patient.name).iterdir())
    assert written == sorted(f"{patient.name}_{i}_pred.png" for i in (1, 2, 10))
    rows = read_rows(out)
    assert [r["slice"] for r in rows] == ["1", "2", "10"]  # numeric slice order
    assert [int(r["true_pixels"]) for r in rows] == [64, 128, 640]
    assert all(0.0 <= float(r["dice"]) <= 1.0 for r in rows)


def test_errors_and_missing_bundled_model(
    tmp_path: Path, tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(
            [
                str(tmp_path / "nope.png"),
                "--checkpoint",
                str(tiny_checkpoint),
                "--out",
                str(tmp_path),
            ]
        )
        == 2
    )
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "x.png").write_bytes(png_bytes(brain_like(8, 8)))
    missing = tmp_path / "absent.safetensors"
    assert (
        main([str(tmp_path / "x.png"), "--checkpoint", str(missing), "--out", str(tmp_path)]) == 2
    )
    assert "checkpoint not found" in capsys.readouterr().err
    (tmp_path / "bad.gif").write_bytes(b"GIF89a" + b"\x00" * 600)
    assert (
        main(
            [
                str(tmp_path / "bad.gif"),
                "--checkpoint",
                str(tiny_checkpoint),
                "--out",
                str(tmp_path),
            ]
        )
        == 2
    )
    assert "GIF" in capsys.readouterr().err


def test_a_corrupt_slice_fails_alone(
    tmp_path: Path, tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "good.png").write_bytes(png_bytes(brain_like(16, 16)))
    (tmp_path / "cut.png").write_bytes(png_bytes(brain_like(64, 64))[:200])
    out = tmp_path / "out"
    code = main([str(tmp_path / "good.png"), str(tmp_path / "cut.png"),
                 "--checkpoint", str(tiny_checkpoint), "--out", str(out), "--quiet"])  # fmt: skip
    assert code == 1
    assert (out / "good_pred.png").is_file() and not (out / "cut_pred.png").exists()
    assert "cut.png" in capsys.readouterr().err


def test_default_checkpoint_message_says_how_to_get_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from models import BUNDLED_CHECKPOINT

    if BUNDLED_CHECKPOINT.is_file():
        pytest.skip("the bundled model exists")
    (tmp_path / "x.png").write_bytes(png_bytes(brain_like(8, 8)))
    assert main([str(tmp_path / "x.png"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "python -m training.train" in err and "--checkpoint" in err


def test_help_explains_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for flag in (
        "--out",
        "--checkpoint",
        "--device",
        "--precision",
        "--tta",
        "--threshold",
        "--batch-size",
    ):
        assert flag in text
    assert "areas.csv" in text and "summary.csv" in text and "--overwrite" in text
    # every input mode, with an example of each
    for flag in ("--pre", "--flair", "--post", "--case", "--truth", "--labels", "--pre-series",
                 "--flair-series", "--post-series", "--no-qc"):  # fmt: skip
        assert flag in text
    for mode in ("_0000.nii.gz", "_0001.nii.gz", "_0002.nii.gz", "DICOM study", "DICOM SEG",
                 "kaggle_3m patient folder", "qc/<case>.png", "hd95_mm", "Examples:",
                 "python -m inference.predict imagesTs/ --labels labelsTs/ --out preds/",
                 "python -m inference.predict dicom/study1/ --flair-series"):  # fmt: skip
        assert mode in text, mode


def read_summary(out: Path) -> dict[str, dict[str, str]]:
    with (out / "summary.csv").open() as fh:
        return {row["case"]: row for row in csv.DictReader(fh)}


def test_out_in_the_input_folder_leaves_inputs_and_truth_untouched(
    tmp_path: Path, spread_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    truth = np.zeros((40, 40), np.uint8)
    truth[10:20, 10:30] = 255
    files = {"case_15.png": png_bytes(brain_like(40, 40, 3)), "case_15_mask.png": png_bytes(truth)}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    # As a shell expands *.png: the mask is among the inputs and must be paired, not segmented.
    inputs = [str(tmp_path / name) for name in sorted(files)]
    options = ["--checkpoint", str(spread_checkpoint), "--out", str(tmp_path), "--quiet"]
    run = [*inputs, *options]
    assert main(run) == 0
    for name, data in files.items():
        assert (tmp_path / name).read_bytes() == data, f"{name} was written over"
    assert sorted(p.name for p in tmp_path.glob("*_pred*")) == ["case_15_pred.png"]
    rows = read_rows(tmp_path)
    assert len(rows) == 1 and int(rows[0]["true_pixels"]) == 200
    predicted = np.asarray(Image.open(tmp_path / "case_15_pred.png")) > 0
    summary = read_summary(tmp_path)["case_15.png"]
    expected = 2 * (predicted & (truth > 0)).sum() / (predicted.sum() + 200)
    assert float(summary["dice"]) == pytest.approx(expected, abs=1e-4)
    assert "case_15.png" in capsys.readouterr().out  # the per-case table

    # A second run refuses to replace its own earlier prediction...
    before = (tmp_path / "case_15_pred.png").read_bytes()
    (tmp_path / "case_15_pred.png").write_bytes(b"edited by hand")
    assert main(run) == 1
    assert (tmp_path / "case_15_pred.png").read_bytes() == b"edited by hand"
    assert "--overwrite" in capsys.readouterr().err
    # ... unless asked, and earlier predictions among the inputs are not segmented again.
    assert main([*inputs, str(tmp_path / "case_15_pred.png"), *options, "--overwrite"]) == 0
    assert (tmp_path / "case_15_pred.png").read_bytes() == before
    assert len(read_rows(tmp_path)) == 1


def test_patient_summary_has_volumetric_dice_and_nifti_ml(
    tmp_path: Path, spread_checkpoint: Path
) -> None:
    patient = tmp_path / "TCGA_AB_1234_20000101"
    patient.mkdir()
    for i in (1, 2):
        (patient / f"{patient.name}_{i}.tif").write_bytes(tiff_bytes(brain_like(32, 32, i)))
        truth = np.zeros((32, 32), np.uint8)
        truth[8:16, 8:16] = 255
        (patient / f"{patient.name}_{i}_mask.tif").write_bytes(tiff_bytes(truth))
    volume = np.stack([brain_like(30, 30, s) for s in range(3)], axis=2)
    affine = np.diag([0.5, 0.5, 2.0, 1.0])
    (tmp_path / "v.nii.gz").write_bytes(nifti_bytes(volume, affine, compress=True))
    out = tmp_path / "out"
    assert main([str(patient), str(tmp_path / "v.nii.gz"), "--checkpoint",
                 str(spread_checkpoint), "--out", str(out), "--quiet"]) == 0  # fmt: skip
    summary = read_summary(out)
    rows = read_rows(out)
    predicted = sum(int(r["tumour_pixels"]) for r in rows if patient.name in r["input"])
    overlap_bound = 2 * min(predicted, 128) / (predicted + 128)
    row = summary[patient.name]
    assert int(row["slices"]) == 2 and int(row["true_voxels"]) == 128
    assert int(row["tumour_voxels"]) == predicted
    assert 0.0 <= float(row["dice"]) <= overlap_bound + 1e-9
    nifti = summary["v.nii.gz"]
    assert float(nifti["tumour_volume_ml"]) == pytest.approx(
        int(nifti["tumour_voxels"]) * 0.5 * 0.5 * 2.0 / 1000, abs=1e-3
    )
    assert nifti["dice"] == ""  # no truth given


def test_one_channel_slice_is_refused_naming_the_sequences(
    tmp_path: Path, tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "flair.png").write_bytes(png_bytes(brain_like(32, 32)[:, :, 1]))
    (tmp_path / "full.png").write_bytes(png_bytes(brain_like(32, 32)))
    out = tmp_path / "out"
    code = main([str(tmp_path / "flair.png"), str(tmp_path / "full.png"),
                 "--checkpoint", str(tiny_checkpoint), "--out", str(out), "--quiet"])  # fmt: skip
    assert code == 1
    err = capsys.readouterr().err
    assert "flair.png" in err and "pre-contrast, FLAIR, post-contrast" in err
    assert not (out / "flair_pred.png").exists() and (out / "full_pred.png").is_file()


def test_jpeg_is_segmented_with_a_warning(
    tmp_path: Path, tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "s.jpg").write_bytes(jpeg_bytes(brain_like(32, 32)))
    out = tmp_path / "out"
    assert main([str(tmp_path / "s.jpg"), "--checkpoint", str(tiny_checkpoint),
                 "--out", str(out), "--quiet"]) == 0  # fmt: skip
    assert (out / "s_pred.png").is_file()
    assert "JPEG is lossy" in capsys.readouterr().err


def test_nifti_truth_follows_the_mask_rule_and_absurd_spacing_gives_no_ml(
    tmp_path: Path, spread_checkpoint: Path
) -> None:
    volume = np.stack([brain_like(30, 30, s) for s in range(3)], axis=2)
    absurd = np.diag([1e30, 1e30, 1e30, 1.0])  # a header no scanner writes: voxels only
    (tmp_path / "v.nii.gz").write_bytes(nifti_bytes(volume, absurd, compress=True))
    truth = np.zeros((30, 30, 3), np.uint8)
    truth[10:20, 10:20, 1] = 255
    (tmp_path / "v_mask.nii.gz").write_bytes(nifti_bytes(truth, absurd, compress=True))
    out = tmp_path / "out"
    assert main([str(tmp_path / "v.nii.gz"), "--checkpoint", str(spread_checkpoint),
                 "--out", str(out), "--quiet"]) == 0  # fmt: skip
    row = read_summary(out)["v.nii.gz"]
    assert row["tumour_volume_ml"] == "" and int(row["true_voxels"]) == 100
    assert 0.0 <= float(row["dice"]) <= 1.0
    three = truth.copy()
    three[0, 0, 0] = 7  # a third value: not a mask
    (tmp_path / "v_mask.nii.gz").write_bytes(nifti_bytes(three, absurd, compress=True))
    assert main([str(tmp_path / "v.nii.gz"), "--checkpoint", str(spread_checkpoint),
                 "--out", str(out), "--quiet", "--overwrite"]) == 1  # fmt: skip
