"""Reading a synthetic DICOM study (written with pydicom in the test): series found, sequences
chosen by flag or by SeriesDescription, slices sorted along their normal, rescale applied."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from data.dicom import DicomError, choose_sequences, find_series, read_series, sequence_role
from tests.dicom_study import OBLIQUE, Geometry, write_series, write_study

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def stored(seed: int, shape: tuple[int, int, int] = (12, 10, 5)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 3000, shape).astype(np.uint16)


@pytest.mark.parametrize(
    ("description", "role"),
    [
        ("T2 FLAIR", "flair"), ("AX T2_FLAIR fs", "flair"), ("T1 pre", "pre"),
        ("pre-contrast T1", "pre"), ("T1 non-contrast", "pre"), ("T1_MPRAGE", "pre"),
        ("sag t1 c+", "post"), ("AX T1 +C", "post"), ("T1 POST GD", "post"), ("T1W_CE", "post"),
        ("T1 postcontrast", "post"), ("T2", None), ("DWI b1000", None), ("localizer", None),
    ],
)  # fmt: skip
def test_sequence_role_heuristic(description: str, role: str | None) -> None:
    assert sequence_role(description) == role


@pytest.mark.parametrize("geometry", [Geometry(), OBLIQUE, Geometry(slice_step=-2.5)])
def test_read_series_sorts_along_the_normal_applies_rescale_and_gives_the_ras_affine(
    tmp_path: Path, geometry: Geometry
) -> None:
    volumes = [stored(0), stored(1), stored(2)]
    study = write_study(tmp_path, list(zip(["T1 pre", "T2 FLAIR", "T1 post Gd"], volumes,
                                           strict=True)), geometry, slope=2.0, intercept=-5.0)
    series = find_series(tmp_path)
    assert [s.description for s in series] == ["T1 pre", "T2 FLAIR", "T1 post Gd"]
    pre, flair, post = choose_sequences(series)
    assert flair.uid == study.series["T2 FLAIR"] and post.uid == study.series["T1 post Gd"]
    read = read_series(flair)
    data = np.asarray(read.image.dataobj)
    # slices ascending along the normal: for a negative step, the order the files were written
    # in is reversed; the values are the rescaled ones
    expected = volumes[1].astype(np.float32) * 2.0 - 5.0
    if geometry.slice_step < 0:
        expected = expected[:, :, ::-1]
    assert data.dtype == np.float32 and np.array_equal(data, expected)
    affine = geometry.affine_lps()
    if geometry.slice_step < 0:  # the same grid, walked from the other end
        affine[:3, 3] += affine[:3, 2] * 4
        affine[:3, 2] *= -1
    assert np.allclose(read.image.affine, LPS_TO_RAS @ affine, atol=1e-4)
    assert read.image.header.get_xyzt_units()[0] == "mm"
    assert read.image.header.get_zooms() == pytest.approx((0.9, 0.8, abs(geometry.slice_step)))
    normal = geometry.normal
    along = [float(np.dot(ds.ImagePositionPatient, normal)) for ds in read.datasets]
    assert along == sorted(along) and "PixelData" not in read.datasets[0]


def test_flags_choose_by_description_or_uid_and_ambiguity_is_explained(tmp_path: Path) -> None:
    study = write_study(tmp_path, [("T1", stored(0)), ("AX FLAIR", stored(1)),
                                   ("COR FLAIR", stored(2)), ("T1 +C", stored(3))])  # fmt: skip
    series = find_series(tmp_path)
    with pytest.raises(DicomError) as info:
        choose_sequences(series)
    message = str(info.value)
    assert "the FLAIR could be 2 series" in message and "--flair-series" in message
    assert "'AX FLAIR'" in message and "'COR FLAIR'" in message
    _, flair, _ = choose_sequences(series, flair="ax flair")  # case-insensitive
    assert flair.uid == study.series["AX FLAIR"]
    _, flair, _ = choose_sequences(series, flair=study.series["COR FLAIR"])
    assert flair.description == "COR FLAIR"
    with pytest.raises(DicomError, match="--post-series 'T2' matches no series"):
        choose_sequences(series, flair="AX FLAIR", post="T2")
    with pytest.raises(DicomError, match="one series was chosen for two sequences"):
        choose_sequences(series, pre="T1", flair="AX FLAIR", post="T1")


def test_a_missing_slice_and_a_folder_without_mr_are_clear_errors(tmp_path: Path) -> None:
    write_study(tmp_path / "a", [("T2 FLAIR", stored(0))])
    middle = [p for p in (tmp_path / "a").iterdir() if pydicom.dcmread(p).InstanceNumber == 3]
    middle[0].unlink()  # the third of five slices: a gap in the stack
    (flair,) = find_series(tmp_path / "a")
    with pytest.raises(DicomError, match="not one stack of slices"):
        read_series(flair)
    empty = tmp_path / "b"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    with pytest.raises(DicomError, match="no DICOM MR image series"):
        find_series(empty)


def test_series_in_subfolders_are_found(tmp_path: Path) -> None:
    for n, description in enumerate(["T1", "FLAIR"]):
        folder = tmp_path / "patient" / f"series{n}"
        folder.mkdir(parents=True)
        write_series(folder, stored(n), description, study_uid="1.2.3", frame_uid="1.2.3.4",
                     series_number=n + 1)  # fmt: skip
    assert [s.description for s in find_series(tmp_path)] == ["T1", "FLAIR"]
