"""``python -m inference.predict`` on three sequence files per case (nnU-Net naming, or
``--pre/--flair/--post``): grouping, the shared-grid rule, ground truth, units, QC montages."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from inference.metrics import dice, hd95
from inference.predict import main
from inference.predictor import Predictor
from tests.inference.samples import brain_like, nifti_bytes

AFFINE = np.array([[0.0, 0.0, 2.0, -30.0], [-0.5, 0.0, 0.0, 20.0], [0.0, 0.5, 0.0, -10.0],
                   [0.0, 0.0, 0.0, 1.0]])  # fmt: skip
SPACING = (0.5, 0.5, 2.0)


def case_volume(seed: int, depth: int = 4) -> np.ndarray:
    """H x W x Z x 3 (pre-contrast, FLAIR, post-contrast) uint8."""
    return np.stack([brain_like(32, 28, seed + k) for k in range(depth)], axis=2)


def write_case(folder: Path, case: str, volume: np.ndarray, affine: np.ndarray = AFFINE,
               names: tuple[str, str, str] | None = None) -> list[Path]:  # fmt: skip
    """The three sequences as ``<case>_0000/1/2.nii.gz`` (or ``names``) on ``affine``."""
    folder.mkdir(parents=True, exist_ok=True)
    names = names or tuple(f"{case}_000{c}.nii.gz" for c in range(3))  # type: ignore[assignment]
    paths = []
    for channel, name in enumerate(names):
        path = folder / name
        path.write_bytes(nifti_bytes(np.ascontiguousarray(volume[..., channel]), affine,
                                     compress=name.endswith(".gz")))  # fmt: skip
        paths.append(path)
    return paths


def read_nifti(path: Path) -> nib.Nifti1Image:
    data = path.read_bytes()
    return nib.Nifti1Image.from_bytes(gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data)


def summary(out: Path) -> dict[str, dict[str, str]]:
    with (out / "summary.csv").open() as fh:
        return {row["case"]: row for row in csv.DictReader(fh)}


def run(*args: str | Path, checkpoint: Path) -> int:
    return main([*map(str, args), "--checkpoint", str(checkpoint), "--quiet"])


def test_a_folder_of_sequence_cases_with_labels(tmp_path: Path, spread_checkpoint: Path) -> None:
    images, labels, out = tmp_path / "imagesTs", tmp_path / "labelsTs", tmp_path / "out"
    volumes = {"BraTS_001": case_volume(0), "BraTS_002": case_volume(10, depth=3)}
    for case, volume in volumes.items():
        write_case(images, case, volume)
    truth = np.zeros((32, 28, 4), np.uint8)
    truth[8:20, 6:18, 1:3] = 1
    labels.mkdir()
    (labels / "BraTS_001.nii.gz").write_bytes(nifti_bytes(truth, AFFINE, compress=True))
    assert run(images, "--labels", labels, "--out", out, checkpoint=spread_checkpoint) == 0

    predictor = Predictor.from_checkpoint(spread_checkpoint)
    rows = summary(out)
    for case, volume in volumes.items():
        mask = read_nifti(out / f"{case}_pred.nii.gz")
        assert np.allclose(mask.affine, AFFINE) and mask.get_data_dtype() == np.uint8
        predicted = np.asarray(mask.dataobj)
        # the three files give exactly the masks of the same volume as one H x W x Z x 3 array
        assert np.array_equal(predicted, predictor.predict_volume(volume).masks)
        row = rows[case]
        voxels = int(predicted.sum())
        assert int(row["tumour_voxels"]) == voxels and voxels > 0
        assert float(row["tumour_volume_ml"]) == pytest.approx(
            voxels * np.prod(SPACING) / 1000, abs=5e-4)  # ml = voxels x voxel volume / 1000
        assert row["voxel_spacing_mm"] == "0.5x0.5x2"
        assert int(row["slices"]) == volume.shape[2]
        assert int(row["slices_with_tumour"]) == int(predicted.any(axis=(0, 1)).sum())
        assert Image.open(out / "qc" / f"{case}.png").format == "PNG"
    first = rows["BraTS_001"]
    predicted = np.asarray(read_nifti(out / "BraTS_001_pred.nii.gz").dataobj)
    assert float(first["dice"]) == pytest.approx(dice(predicted, truth), abs=1e-4)
    assert float(first["hd95_mm"]) == pytest.approx(hd95(predicted, truth, SPACING), abs=0.01)
    assert first["hd95_px"] == "" and int(first["true_voxels"]) == int(truth.sum())
    assert rows["BraTS_002"]["dice"] == rows["BraTS_002"]["hd95_mm"] == ""  # no label: optional
    with (out / "areas.csv").open() as fh:
        areas = [r for r in csv.DictReader(fh) if "BraTS_001" in r["input"]]
    assert [r["slice"] for r in areas] == ["1", "2", "3", "4"]  # 1-based
    for r in areas:
        assert float(r["tumour_mm2"]) == pytest.approx(int(r["tumour_pixels"]) * 0.25, abs=1e-3)


def test_pre_flair_post_flags_name_one_case_with_its_truth(
    tmp_path: Path, spread_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    volume = case_volume(3)
    pre, flair, post = write_case(tmp_path / "scans", "x", volume,
                                  names=("t1.nii", "flair.nii.gz", "t1c.nii.gz"))  # fmt: skip
    truth = np.zeros(volume.shape[:3], np.uint8)
    truth[10:22, 8:20, 2] = 255  # 0/255 is a mask too (the one mask rule)
    tumour = tmp_path / "tumour.nii.gz"
    tumour.write_bytes(nifti_bytes(truth, AFFINE, compress=True))
    out = tmp_path / "out"
    code = run("--pre", pre, "--flair", flair, "--post", post, "--truth", tumour,
               "--case", "patient7", "--out", out, checkpoint=spread_checkpoint)  # fmt: skip
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "areas.csv", "patient7_pred.nii.gz", "qc", "summary.csv"
    ]
    predicted = np.asarray(read_nifti(out / "patient7_pred.nii.gz").dataobj)
    row = summary(out)["patient7"]
    assert float(row["hd95_mm"]) == pytest.approx(hd95(predicted, truth, SPACING), abs=0.01)
    printed = capsys.readouterr().out
    assert "patient7" in printed and " mm" in printed  # the table gives HD95 with its unit


def test_sequences_on_different_grids_are_refused_naming_files_and_difference(
    tmp_path: Path, tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = tmp_path / "imagesTs"
    shifted = AFFINE.copy()
    shifted[:3, 3] += [0.0, 4.0, 0.0]  # the post-contrast 4 mm away
    write_case(images, "good", case_volume(1))
    volume = case_volume(2)
    write_case(images, "moved", volume)
    (images / "moved_0002.nii.gz").write_bytes(
        nifti_bytes(np.ascontiguousarray(volume[..., 2]), shifted, compress=True))
    write_case(images, "cropped", volume)
    (images / "cropped_0000.nii.gz").write_bytes(
        nifti_bytes(np.ascontiguousarray(volume[:30, :, :, 0]), AFFINE, compress=True))
    out = tmp_path / "out"
    assert run(images, "--out", out, checkpoint=tiny_checkpoint) == 1
    err = capsys.readouterr().err
    moved = next(line for line in err.splitlines() if "moved" in line)
    assert "moved_0002.nii.gz (the post-contrast)" in moved and "moved_0001.nii.gz" in moved
    assert "origin" in moved and "not on one voxel grid" in moved
    cropped = next(line for line in err.splitlines() if "cropped" in line)
    assert "cropped_0000.nii.gz" in cropped and "shape 30 x 28 x 4 vs 32 x 28 x 4" in cropped
    assert (out / "good_pred.nii.gz").is_file()  # the other case is still segmented
    assert not (out / "moved_pred.nii.gz").exists() and not (out / "cropped_pred.nii.gz").exists()


def test_incomplete_cases_and_misused_flags_are_refused(
    tmp_path: Path, tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = write_case(tmp_path, "c", case_volume(0))
    out = str(tmp_path / "out")
    assert run(paths[0], paths[1], "--out", out, checkpoint=tiny_checkpoint) == 2
    assert "c_0002 missing" in capsys.readouterr().err
    assert run("--pre", paths[0], "--flair", paths[1], "--out", out,
               checkpoint=tiny_checkpoint) == 2  # fmt: skip
    assert "--pre, --flair and --post go together" in capsys.readouterr().err
    assert run(*paths, "--flair-series", "AX FLAIR", "--out", out, checkpoint=tiny_checkpoint) == 2
    assert "no DICOM study folder" in capsys.readouterr().err
    write_case(tmp_path / "two", "d", case_volume(1))
    assert run(tmp_path / "two", *paths, "--truth", paths[0], "--out", out,
               checkpoint=tiny_checkpoint) == 2  # fmt: skip
    assert "--truth belongs to one case" in capsys.readouterr().err


def test_out_in_the_sequence_folder_never_touches_inputs_or_truth(
    tmp_path: Path, spread_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    volume = case_volume(5)
    paths = write_case(tmp_path, "case", volume)
    truth = np.zeros(volume.shape[:3], np.uint8)
    truth[5:15, 5:15, 1] = 1
    (tmp_path / "case_mask.nii.gz").write_bytes(nifti_bytes(truth, AFFINE, compress=True))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    # as a shell expands *.nii.gz: the mask is among the inputs, the truth of its case
    inputs = sorted(tmp_path.glob("*.nii.gz"))
    assert run(*inputs, "--out", tmp_path, checkpoint=spread_checkpoint) == 0
    assert summary(tmp_path)["case"]["dice"] != ""
    for name, data in before.items():
        assert (tmp_path / name).read_bytes() == data, f"{name} was written over"
    assert (tmp_path / "case_pred.nii.gz").is_file() and len(paths) == 3
    # a second run refuses to replace its own outputs, and skips them as inputs
    assert run(*sorted(tmp_path.glob("*.nii.gz")), "--out", tmp_path,
               checkpoint=spread_checkpoint) == 1  # fmt: skip
    assert "--overwrite" in capsys.readouterr().err
