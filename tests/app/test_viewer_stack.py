"""The viewer's stack pages with ``AppTest``: sequence files and DICOM studies uploaded in
memory, units, layers, the patient table, the example patient, and what shows while the next
patient is segmented."""

from __future__ import annotations

import gzip
import io
import zipfile
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import streamlit as st
import tifffile
from streamlit.testing.v1 import AppTest

from app import backend, overlay, uploads
from app.units import area_label, volume_label
from app.views.layers import LAYER_AGREEMENT, LAYER_PREDICTION, Display, stack_layers
from inference import metrics
from inference.predictor import Predictor
from tests.app.test_viewer import (
    _brain,
    _dataset_page,
    _metric,
    _patient,
    _started,
    _texts,
    _truth,
    _volume_and_truth,
)
from tests.dicom_study import write_study

MODE_VOLUME = "Upload a volume (NIfTI, sequences, DICOM)"
SPACING = (0.5, 0.5, 2.0)


def _case() -> tuple[np.ndarray, np.ndarray]:
    """64 x 64 x 3 x 3 (pre, FLAIR, post) and a truth whose disc is largest on slice 2."""
    return _volume_and_truth((4, 9, 6))


def _nifti(data: np.ndarray) -> bytes:
    affine = np.diag([*SPACING, 1.0])
    return gzip.compress(nib.Nifti1Image(data, affine).to_bytes())


def _sequence_files(volume: np.ndarray, truth: np.ndarray) -> list[tuple[str, bytes]]:
    files = [(f"case7_000{c}.nii.gz", _nifti(volume[..., c].astype(np.float32)))
             for c in range(3)]
    return files + [("case7_mask.nii.gz", _nifti(truth))]


@pytest.fixture
def viewer(monkeypatch: pytest.MonkeyPatch, tiny_checkpoint: Path) -> AppTest:
    at = _started(monkeypatch, tiny_checkpoint)
    at.radio(key="mode").set_value(MODE_VOLUME).run()
    assert not at.exception, at.exception
    return at


# --------------------------------------------------------------- uploads (no Streamlit)


def test_read_sequences_stacks_pre_flair_post_with_spacing_and_truth() -> None:
    volume, truth = _case()
    files = _sequence_files(volume, truth)
    case = uploads.read_sequences(list(reversed(files)))  # any order: the names decide
    assert case.name == "case7" and case.volume.shape == (64, 64, 3, 3)
    np.testing.assert_array_equal(case.volume, volume.astype(np.float32))
    np.testing.assert_array_equal(case.truth, truth)
    assert case.spacing == pytest.approx(SPACING)
    with pytest.raises(backend.BadUpload, match="case7_0002"):
        uploads.read_sequences(files[:2])


def test_read_sequences_refuses_sequences_on_two_grids() -> None:
    volume, _ = _case()
    files = _sequence_files(volume, volume[..., 0])[:3]
    other = nib.Nifti1Image(volume[..., 2].astype(np.float32), np.diag([1.0, 1.0, 2.0, 1.0]))
    files[2] = ("case7_0002.nii.gz", gzip.compress(other.to_bytes()))
    with pytest.raises(backend.BadUpload, match="voxel spacing"):
        uploads.read_sequences(files)


def _study(tmp_path: Path, descriptions: tuple[str, ...] = ("T1 pre", "FLAIR", "T1 post gd")
           ) -> tuple[list[tuple[str, bytes]], np.ndarray]:
    volume, _ = _case()
    stored = [(d, (volume[..., c].astype(np.uint16) * 4)) for c, d in enumerate(descriptions)]
    study = write_study(tmp_path / "study", stored)
    files = [(p.name, p.read_bytes()) for p in sorted(study.folder.iterdir())]
    return files, volume


def test_read_dicom_study_from_files_and_from_a_zip(tmp_path: Path) -> None:
    files, volume = _study(tmp_path)
    case = uploads.read_dicom_study(files)
    assert case.volume.shape == (64, 64, 3, 3)
    # The slices come back in position order whatever the files' order; channels pre/FLAIR/post.
    np.testing.assert_allclose(case.volume[..., 1], volume[..., 1].astype(np.float32) * 4)
    assert case.spacing == pytest.approx((0.9, 0.8, 3.0))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files:
            archive.writestr(f"study/{name}", data)
    zipped = uploads.read_dicom_study([("study.zip", buffer.getvalue())])
    np.testing.assert_array_equal(zipped.volume, case.volume)


def test_a_dicom_study_without_a_flair_says_which_series_it_has(tmp_path: Path) -> None:
    files, _ = _study(tmp_path, ("T1 pre", "T2 axial", "T1 post gd"))
    with pytest.raises(backend.BadUpload, match="no series looks FLAIR.*T2 axial"):
        uploads.read_dicom_study(files)
    with pytest.raises(backend.BadUpload, match="no DICOM MR image"):
        uploads.read_dicom_study([("notes.dcm", b"not dicom")])


def test_units_follow_the_spacing() -> None:
    assert volume_label(2000, (0.5, 0.5, 2.0)) == "1.00 ml"
    assert volume_label(2000, None) == "2,000 voxels"
    assert area_label(100, (0.5, 0.4, 3.0)) == "20.0 mm²"
    assert area_label(1234, None) == "1,234 px"


# --------------------------------------------------------------------- the page


def test_sequence_files_show_ml_mm2_and_hd95_in_mm(viewer: AppTest, tiny_checkpoint: Path
                                                   ) -> None:
    volume, truth = _case()
    viewer.radio(key="volume_kind").set_value("Three sequence files (NIfTI)").run()
    viewer.file_uploader(key="sequences").set_value(
        [(n, d, "application/gzip") for n, d in _sequence_files(volume, truth)]).run()
    assert not viewer.exception and not viewer.error, [e.value for e in viewer.error]
    expected = Predictor.from_checkpoint(tiny_checkpoint).predict_volume(volume).masks
    voxel_ml = float(np.prod(SPACING)) / 1000
    assert _metric(viewer, "Volumetric Dice") == f"{metrics.dice(expected, truth):.3f}"
    assert _metric(viewer, "Ground-truth tumour volume") == f"{truth.sum() * voxel_ml:,.2f} ml"
    assert viewer.slider(key="slice-volume").value == 2  # the largest tumour, 1-based
    assert _metric(viewer, "Ground-truth tumour area") == f"{truth[:, :, 1].sum() * 0.25:,.1f} mm²"
    hd95 = [m for m in viewer.metric if m.label.startswith("HD95")]
    assert [m.label for m in hd95] == ["HD95 (mm)"]
    distance = metrics.hd95(expected, truth, SPACING)
    assert hd95[0].value == ("-" if np.isnan(distance) else f"{distance:.1f} mm")


def test_no_code_text_reaches_the_page(viewer: AppTest) -> None:
    """Module docstrings and comments stay out of the page (Streamlit's "magic" is off)."""
    volume, truth = _case()
    viewer.radio(key="volume_kind").set_value("Three sequence files (NIfTI)").run()
    viewer.file_uploader(key="sequences").set_value(
        [(n, d, "application/gzip") for n, d in _sequence_files(volume, truth)]).run()
    shown = [m.value for m in viewer.markdown]
    assert not [m for m in shown if "st.metric" in m or "CSS px" in m or "(label" in m], shown


def test_a_dicom_study_is_read_in_memory_and_shown(viewer: AppTest, tmp_path: Path) -> None:
    files, _ = _study(tmp_path)
    viewer.radio(key="volume_kind").set_value("DICOM study").run()
    viewer.file_uploader(key="dicom").set_value(
        [(n, d, "application/dicom") for n, d in files]).run()
    assert not viewer.exception and not viewer.error, [e.value for e in viewer.error]
    assert _metric(viewer, "Slices") == "3"
    assert _metric(viewer, "Predicted tumour volume").endswith(" ml")
    assert any("SYN001" in m.value for m in viewer.markdown)  # the study's PatientID


def test_a_bad_dicom_upload_is_a_message(viewer: AppTest) -> None:
    viewer.radio(key="volume_kind").set_value("DICOM study").run()
    viewer.file_uploader(key="dicom").set_value([("x.dcm", b"nothing", "application/dicom")])
    viewer.run()
    assert not viewer.exception
    assert any("no DICOM MR image" in e.value for e in viewer.error)


def test_layers_uncertainty_runs_the_mirrored_pass(
    viewer: AppTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    original = backend.LocalSegmenter.uncertainty

    def counted(self: Any, images: Any, masks: Any) -> list[np.ndarray]:
        calls.append(len(images))
        return original(self, images, masks)

    monkeypatch.setattr(backend.LocalSegmenter, "uncertainty", counted)
    volume, truth = _case()
    viewer.radio(key="volume_kind").set_value("Three sequence files (NIfTI)").run()
    viewer.file_uploader(key="sequences").set_value(
        [(n, d, "application/gzip") for n, d in _sequence_files(volume, truth)]).run()
    assert "both (TP)" in _texts(viewer) and "uncertain" not in _texts(viewer)
    assert calls == []
    viewer.checkbox(key="layer_uncertainty").check().run()
    viewer.checkbox(key="layer_agreement").uncheck().run()
    assert not viewer.exception
    assert "uncertain (mirror disagrees)" in _texts(viewer) and "both (TP)" not in _texts(viewer)
    assert calls == [3]  # once for the 3 slices, then kept for this session


# ---------------------------------------------------------------------- dataset mode


def test_the_example_patient_opens_the_dataset_mode(
    monkeypatch: pytest.MonkeyPatch, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    root = tmp_path / "kaggle_3m"
    _patient(root, "TCGA_AA_0001_20000101", 2)
    _patient(root, "TCGA_BB_0002_20000202", 3)
    at = _started(monkeypatch, tiny_checkpoint, data_dir=root)
    at.button(key="example").click().run()
    assert not at.exception and not at.error
    assert at.radio(key="mode").value == "Browse a dataset folder"
    assert any(m.value.startswith("**TCGA_AA_0001_20000101**") for m in at.markdown)


def test_patient_table_lists_segmented_patients_worst_dice_first(
    monkeypatch: pytest.MonkeyPatch, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    root = tmp_path / "kaggle_3m"
    _patient(root, "TCGA_AA_0001_20000101", 2)
    _patient(root, "TCGA_BB_0002_20000202", 3)
    _patient(root, "TCGA_CC_0003_20000303", 1)
    at = _dataset_page(monkeypatch, tiny_checkpoint, root)
    table = at.dataframe[0].value
    assert list(table["patient"])[0] == "TCGA_AA_0001_20000101"  # the only one scored yet
    assert table["volumetric Dice"].isna().sum() == 2
    assert list(table["slices"]) == [2, 3, 1]
    at.button(key="score_all").click().run()
    table = at.dataframe[0].value
    assert table["volumetric Dice"].notna().all()
    assert list(table["volumetric Dice"]) == sorted(table["volumetric Dice"])
    truth_voxels = {"TCGA_AA_0001_20000101": 1, "TCGA_BB_0002_20000202": 2,
                    "TCGA_CC_0003_20000303": 1}  # slices with the disc (odd numbers)
    per_slice = int((_truth() > 0).sum())
    for pid, n in truth_voxels.items():
        row = table[table["patient"] == pid].iloc[0]
        assert row["tumour volume (voxels)"] == n * per_slice


def test_nothing_of_the_previous_patient_shows_while_the_next_is_segmented(
    monkeypatch: pytest.MonkeyPatch, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    root = tmp_path / "kaggle_3m"
    _patient(root, "TCGA_AA_0001_20000101", 2)
    _patient(root, "TCGA_BB_0002_20000202", 3)
    for k in range(1, 4):  # other pixels than the first patient's, so they are segmented anew
        tifffile.imwrite(root / "TCGA_BB_0002_20000202" / f"TCGA_BB_0002_20000202_{k}.tif",
                         _brain() // 2 + k, photometric="rgb")
    at = _dataset_page(monkeypatch, tiny_checkpoint, root)
    assert _metric(at, "Volumetric Dice")  # the first patient's metrics are shown
    original = backend.LocalSegmenter.segment

    def still_computing(self: Any, items: Any) -> Any:
        if len(items) == 3:  # the second patient: freeze the page as it is at this moment
            st.stop()
        return original(self, items)

    monkeypatch.setattr(backend.LocalSegmenter, "segment", still_computing)
    at.selectbox(key="patient").set_value("TCGA_BB_0002_20000202").run()
    assert not at.exception
    assert [i.value for i in at.info] == ["Segmenting patient TCGA_BB_0002_20000202 (3 slices)..."]
    assert not at.metric, [m.label for m in at.metric]
    assert not [m for m in at.markdown if "TCGA_AA_0001_20000101" in m.value]


def test_sequence_files_and_uncertainty_through_the_api(
    monkeypatch: pytest.MonkeyPatch, live_api: str, tiny_checkpoint: Path
) -> None:
    at = _started(monkeypatch, tiny_checkpoint, api_url=live_api)
    at.radio(key="mode").set_value(MODE_VOLUME).run()
    at.radio(key="volume_kind").set_value("Three sequence files (NIfTI)").run()
    volume, truth = _case()
    at.file_uploader(key="sequences").set_value(
        [(n, d, "application/gzip") for n, d in _sequence_files(volume, truth)]).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("served by the API" in c.value for c in at.caption)
    expected = Predictor.from_checkpoint(tiny_checkpoint).predict_volume(volume).masks
    shown = float(_metric(at, "Volumetric Dice"))
    assert shown == pytest.approx(metrics.dice(expected, truth), abs=0.01)
    at.checkbox(key="layer_uncertainty").check().run()  # mirrored slices sent as TIFF
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert "uncertain (mirror disagrees)" in _texts(at)


def test_a_case_without_truth_shows_its_prediction_under_the_default_layers() -> None:
    """A DICOM study or sequence files without a mask: Agreement (the default layer) has nothing
    to agree with, so the prediction itself is drawn there instead of a bare image."""
    prediction = np.zeros((8, 8), np.uint8)
    prediction[2:5, 2:5] = 1
    display = Display(channel="flair", mode="fill", opacity=0.5)
    (mask, colour, mode), = stack_layers(prediction, None, display, None)
    assert colour == overlay.PREDICTION and mode == "fill"
    assert np.array_equal(mask, prediction)
    truth = np.zeros_like(prediction)
    truth[3:6, 3:6] = 1
    colours = [c for _, c, _ in stack_layers(prediction, truth, display, None)]
    assert colours == [overlay.TRUE_POSITIVE, overlay.FALSE_POSITIVE, overlay.FALSE_NEGATIVE]
    outlined = Display(channel="flair", mode="fill", opacity=0.5,
                       layers=frozenset({LAYER_AGREEMENT, LAYER_PREDICTION}))
    assert [(c, m) for _, c, m in stack_layers(prediction, None, outlined, None)] == [
        (overlay.PREDICTION, "contour")]
