"""``python -m inference.predict`` on a DICOM study (synthetic, written with pydicom): the NIfTI
mask on the study's grid, and a DICOM SEG that reads back as the same mask, on the right
slices, referencing the right series."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest

from inference.predict import main
from inference.predictor import Predictor
from tests.dicom_study import OBLIQUE, Study, write_study
from tests.inference.samples import brain_like

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
SLOPE, INTERCEPT = 2.0, -5.0


def sequences(depth: int = 5) -> np.ndarray:
    """Stored values, H x W x Z x 3 (pre-contrast, FLAIR, post-contrast)."""
    return np.stack([brain_like(24, 20, 30 + k) for k in range(depth)], axis=2).astype(np.uint16)


@pytest.fixture
def study(tmp_path: Path) -> tuple[Study, np.ndarray]:
    stored = sequences()
    names = ["AX T1 PRE", "AX T2 FLAIR", "AX T1 POST GD"]
    made = write_study(tmp_path / "study1", [(name, stored[..., c]) for c, name in
                                             enumerate(names)], OBLIQUE, SLOPE, INTERCEPT)
    return made, stored


def run(*args: str | Path, checkpoint: Path) -> int:
    return main([*map(str, args), "--checkpoint", str(checkpoint), "--quiet"])


def test_dicom_study_gives_a_nifti_mask_and_a_seg_that_reads_back_equal(
    tmp_path: Path, spread_checkpoint: Path, study: tuple[Study, np.ndarray]
) -> None:
    made, stored = study
    out = tmp_path / "out"
    assert run(made.folder, "--out", out, checkpoint=spread_checkpoint) == 0

    # The NIfTI: the study's grid, and the model's answer on the rescaled, sorted sequences.
    nifti = nib.Nifti1Image.from_bytes(gzip.decompress((out / "study1_pred.nii.gz").read_bytes()))
    assert np.allclose(nifti.affine, LPS_TO_RAS @ OBLIQUE.affine_lps(), atol=1e-4)
    mask = np.asarray(nifti.dataobj)
    values = stored.astype(np.float32) * SLOPE + INTERCEPT
    expected = Predictor.from_checkpoint(spread_checkpoint).predict_volume(values).masks
    assert np.array_equal(mask, expected) and 0 < mask.sum() < mask.size

    # The SEG: same study, references all three series, frames on the FLAIR's slices.
    seg = hd.seg.segread(out / "study1_pred.dcm")
    assert seg.Modality == "SEG" and seg.StudyInstanceUID == made.study_uid
    assert seg.PatientID == "SYN001" and seg.FrameOfReferenceUID == made.frame_uid
    referenced = {item.SeriesInstanceUID for item in seg.ReferencedSeriesSequence}
    assert referenced == set(made.series.values())
    flair = [pydicom.dcmread(p, stop_before_pixels=True) for p in made.folder.iterdir()]
    flair = [ds for ds in flair if ds.SeriesInstanceUID == made.series["AX T2 FLAIR"]]
    flair.sort(key=lambda ds: float(np.dot(ds.ImagePositionPatient, OBLIQUE.normal)))
    by_source = seg.get_pixels_by_source_instance(
        [ds.SOPInstanceUID for ds in flair], segment_numbers=[1]
    )[..., 0]
    assert np.array_equal(np.moveaxis(by_source, 0, 2), mask)  # slice k <-> the k-th FLAIR slice
    for frame in seg.PerFrameFunctionalGroupsSequence:  # geometry: each frame where its slice is
        source = frame.DerivationImageSequence[0].SourceImageSequence[0]
        ds = next(d for d in flair if d.SOPInstanceUID == source.ReferencedSOPInstanceUID)
        position = frame.PlanePositionSequence[0].ImagePositionPatient
        assert np.allclose([float(v) for v in position], ds.ImagePositionPatient, atol=1e-3)
    # ...and read as a volume on its own, every tumour voxel lands on a tumour voxel of the NIfTI
    volume = seg.get_volume()
    voxels = np.argwhere(volume.array.reshape(volume.array.shape[:3]) > 0)
    world = (volume.affine @ np.c_[voxels, np.ones(len(voxels))].T).T  # LPS
    indices = (np.linalg.inv(nifti.affine) @ LPS_TO_RAS @ world.T).T[:, :3]
    rounded = np.rint(indices).astype(int)
    assert np.allclose(indices, rounded, atol=1e-3)
    assert len(rounded) == mask.sum() and mask[tuple(rounded.T)].all()

    with (out / "summary.csv").open() as fh:
        (row,) = list(csv.DictReader(fh))
    assert row["case"] == "study1" and row["voxel_spacing_mm"] == "0.9x0.8x3"
    assert float(row["tumour_volume_ml"]) == pytest.approx(mask.sum() * 0.9 * 0.8 * 3 / 1000,
                                                           abs=5e-4)  # fmt: skip
    assert (out / "qc" / "study1.png").is_file()


def test_dicom_truth_and_series_flags(
    tmp_path: Path,
    spread_checkpoint: Path,
    study: tuple[Study, np.ndarray],
    capsys: pytest.CaptureFixture[str],
) -> None:
    made, stored = study
    truth = np.zeros(stored.shape[:3], np.uint8)
    truth[6:16, 5:15, 1:4] = 1
    grid = LPS_TO_RAS @ OBLIQUE.affine_lps()
    (tmp_path / "truth.nii.gz").write_bytes(
        gzip.compress(nib.Nifti1Image(truth, grid).to_bytes()))
    out = tmp_path / "out"
    flags = ["--pre-series", "ax t1 pre", "--flair-series", made.series["AX T2 FLAIR"],
             "--post-series", "AX T1 POST GD"]  # fmt: skip
    assert run(made.folder, *flags, "--truth", tmp_path / "truth.nii.gz", "--out", out,
               checkpoint=spread_checkpoint) == 0  # fmt: skip
    with (out / "summary.csv").open() as fh:
        (row,) = list(csv.DictReader(fh))
    assert row["dice"] != "" and row["hd95_mm"] != "" and int(row["true_voxels"]) == 300

    # a truth on another grid is refused, naming both
    off = gzip.compress(nib.Nifti1Image(truth, np.eye(4)).to_bytes())
    (tmp_path / "off.nii.gz").write_bytes(off)
    assert run(made.folder, "--truth", tmp_path / "off.nii.gz", "--out", tmp_path / "o2",
               checkpoint=spread_checkpoint) == 1  # fmt: skip
    err = capsys.readouterr().err
    assert "off.nii.gz is not on the grid of" in err and "AX T2 FLAIR" in err


def test_an_ambiguous_study_lists_its_series_and_the_flag(
    tmp_path: Path, tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stored = sequences(depth=3)
    names = ["T1", "AX FLAIR", "SAG FLAIR", "T1 +C"]
    folder = tmp_path / "study2"
    write_study(folder, [(n, stored[..., min(c, 2)]) for c, n in enumerate(names)])
    assert run(folder, "--out", tmp_path / "out", checkpoint=tiny_checkpoint) == 1
    err = capsys.readouterr().err
    assert "the FLAIR could be 2 series" in err and "--flair-series" in err
    assert "'SAG FLAIR'" in err and not (tmp_path / "out" / "study2_pred.nii.gz").exists()
    assert run(folder, "--flair-series", "sag flair", "--out", tmp_path / "out",
               checkpoint=tiny_checkpoint) == 0  # fmt: skip
    # the SEG written into the study folder is left aside on a second run there
    assert run(folder, "--flair-series", "sag flair", "--out", folder,
               checkpoint=tiny_checkpoint) == 0  # fmt: skip
    assert run(folder, "--flair-series", "sag flair", "--out", folder, "--overwrite",
               checkpoint=tiny_checkpoint) == 0  # fmt: skip
