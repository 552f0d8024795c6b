"""``python -m inference.predict``: slices, patient folders, NIfTI in; masks and areas.csv out."""

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
from tests.inference.samples import brain_like, nifti_bytes, png_bytes, tiff_bytes


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
    mask = np.asarray(Image.open(out / "a_mask.png"))
    expected = predictor.predict_slice(brain_like(40, 50, 1)).mask * 255
    assert np.array_equal(mask, expected)
    assert np.asarray(Image.open(out / "b_mask.png")).shape == (33, 31)
    nifti = nib.Nifti1Image.from_bytes(gzip.decompress((out / "v_mask.nii.gz").read_bytes()))
    assert nifti.shape == (30, 30, 3) and np.allclose(nifti.affine, affine)
    rows = read_rows(out)
    assert len(rows) == 5
    by_input = {(Path(r["input"]).name, r["slice"]): r for r in rows}
    assert int(by_input[("a.png", "")]["tumour_pixels"]) == int((mask > 0).sum())
    vol_row = by_input[("v.nii.gz", "1")]
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
    assert written == sorted(f"{patient.name}_{i}_mask.png" for i in (1, 2, 10))
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
    assert (out / "good_mask.png").is_file() and not (out / "cut_mask.png").exists()
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
    assert "areas.csv" in text
