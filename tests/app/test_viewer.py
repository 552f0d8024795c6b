"""The viewer page driven by ``streamlit.testing.v1.AppTest``: what a user sees after each step."""

from __future__ import annotations

import gzip
import io
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile
from PIL import Image
from streamlit.testing.v1 import AppTest

from data import kaggle3m
from inference import metrics
from inference.predictor import Predictor
from tests.conftest import TRAINING_PATIENT

MODE_VOLUME = "Upload a volume (NIfTI, sequences, DICOM)"
VIEWER = str(Path(__file__).resolve().parents[2] / "app" / "viewer.py")
TIMEOUT = 60


def _tif(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array)
    return buffer.getvalue()


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def _brain(size: int = 64) -> np.ndarray:
    """A synthetic 3-channel slice: a bright disc (the 'tumour') in a textured ellipse."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:size, :size]
    head = ((yy - size / 2) / (size * 0.45)) ** 2 + ((xx - size / 2) / (size * 0.38)) ** 2 < 1
    image = np.where(head[..., None], rng.integers(60, 120, (size, size, 3)), 0)
    disc = (yy - size * 0.4) ** 2 + (xx - size * 0.55) ** 2 < (size * 0.12) ** 2
    image[disc] = 220
    return image.astype(np.uint8)


def _truth(size: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return np.where((yy - size * 0.4) ** 2 + (xx - size * 0.55) ** 2 < (size * 0.12) ** 2,
                    255, 0).astype(np.uint8)


def _started(
    monkeypatch: pytest.MonkeyPatch,
    checkpoint: Path,
    data_dir: Path | None = None,
    api_url: str | None = None,
) -> AppTest:
    """The viewer run once with these settings; a setting given as None is unset."""
    monkeypatch.setenv("LGGSEG_CHECKPOINT", str(checkpoint))
    for name, value in (("LGGSEG_DATA_DIR", data_dir), ("LGGSEG_API_URL", api_url)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, str(value))
    at = AppTest.from_file(VIEWER, default_timeout=TIMEOUT)
    at.run()
    return at


@pytest.fixture
def viewer(monkeypatch: pytest.MonkeyPatch, tiny_checkpoint: Path) -> AppTest:
    at = _started(monkeypatch, tiny_checkpoint)
    assert not at.exception, at.exception
    return at


def _texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    parts += [w.value for w in at.warning] + [i.value for i in at.info]
    return "\n".join(str(p) for p in parts)


def _metric(at: AppTest, label: str) -> str:
    found = [m.value for m in at.metric if m.label == label]
    assert found, f"no metric {label!r}; metrics shown: {[m.label for m in at.metric]}"
    return found[0]


def test_first_page_states_intended_use_and_model(viewer: AppTest) -> None:
    text = _texts(viewer)
    assert "not for diagnostic use" in text
    assert "running in this process" in text
    assert viewer.expander[0].label.startswith("Model card")
    assert not viewer.error


def test_upload_slice_and_mask_shows_the_right_dice(
    viewer: AppTest, tiny_checkpoint: Path
) -> None:
    image, truth = _brain(), _truth()
    viewer.file_uploader(key="slices").set_value(
        [("case_5.tif", _tif(image), "image/tiff"), ("case_5_mask.tif", _tif(truth), "image/tiff")]
    ).run()
    assert not viewer.exception and not viewer.error, [e.value for e in viewer.error]

    expected = Predictor.from_checkpoint(tiny_checkpoint).predict_slice(image).mask
    assert _metric(viewer, "Dice") == f"{metrics.dice(expected, truth):.3f}"
    assert _metric(viewer, "IoU") == f"{metrics.iou(expected, truth):.3f}"
    assert _metric(viewer, "Ground-truth tumour area").startswith(f"{int((truth > 0).sum()):,} px")
    assert _metric(viewer, "Predicted tumour area").startswith(f"{int(expected.sum()):,} px")
    assert len(viewer.image) == 1
    assert "prediction and ground truth" in viewer.image[0].captions[0]
    labels = [b.proto.label for b in viewer.get("download_button")]
    assert "Download the predicted mask (PNG)" in labels
    assert "Download the metrics (CSV)" in labels

    viewer.radio(key="view").set_value("Side by side").run()
    assert [i.captions[0] for i in viewer.image] == ["Image", "Prediction", "Ground truth"]
    viewer.radio(key="view").set_value("Agreement (TP / FP / FN)").run()
    assert "agreement" in viewer.image[0].captions[0]
    assert "false negative" in _texts(viewer)


def test_slice_without_mask_shows_areas_and_asks_for_the_mask(viewer: AppTest) -> None:
    viewer.file_uploader(key="slices").set_value(
        ("only.png", _png(_brain()), "image/png")).run()
    assert not viewer.error
    assert not [m for m in viewer.metric if m.label == "Dice"]
    assert "to see Dice and IoU" in _texts(viewer)
    assert _metric(viewer, "Predicted tumour area").endswith(" px")
    assert "% of the slice" in _texts(viewer)


@pytest.mark.parametrize(
    "name, data, message",
    [
        ("noise.tif", bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)),
         "noise.tif"),
        ("cat.gif", b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", "cat.gif"),
        ("cut.png", _png(_brain())[:150], "cut.png"),
    ],
)
def test_bad_upload_shows_an_error_not_a_traceback(
    viewer: AppTest, name: str, data: bytes, message: str
) -> None:
    viewer.file_uploader(key="slices").set_value((name, data, "application/octet-stream")).run()
    assert not viewer.exception
    errors = [e.value for e in viewer.error]
    assert len(errors) == 1 and message in errors[0] and errors[0].startswith("Cannot use")
    assert not viewer.metric


def test_mask_of_another_size_is_an_error_and_the_slice_is_still_shown(viewer: AppTest) -> None:
    viewer.file_uploader(key="slices").set_value(("s.png", _png(_brain()), "image/png"))
    viewer.file_uploader(key="masks").set_value(("s_mask.png", _png(_truth(32)), "image/png"))
    viewer.run()
    assert not viewer.exception
    errors = [e.value for e in viewer.error]
    assert len(errors) == 1 and "32x32 pixels but its slice is 64x64" in errors[0]
    assert not [m for m in viewer.metric if m.label == "Dice"]
    assert len(viewer.image) == 1


@pytest.mark.realdata
def test_dataset_mode_starts_at_the_largest_tumour_slice(
    monkeypatch: pytest.MonkeyPatch, tiny_checkpoint: Path, lgg_dir: Path
) -> None:
    at = _dataset_page(monkeypatch, tiny_checkpoint, lgg_dir)
    assert not at.error, [e.value for e in at.error]

    patients = kaggle3m.scan_dataset(lgg_dir)
    patient = next(p for p in patients if p.patient_id == at.selectbox(key="patient").value)
    assert patient.patient_id == TRAINING_PATIENT == patients[0].patient_id
    assert "in the model's training set" in _texts(at)
    areas = kaggle3m.tumour_pixels(patient)
    slider = at.slider(key=f"slice-patient-{patient.patient_id}")
    assert slider.value == int(np.argmax(areas)) + 1
    assert slider.max == len(patient.slices)
    assert _metric(at, "Ground-truth tumour volume") == f"{int(areas.sum()):,} voxels"
    assert float(_metric(at, "Volumetric Dice")) >= 0.0
    gt_now = int(areas[slider.value - 1])
    assert _metric(at, "Ground-truth tumour area").startswith(f"{gt_now:,} px")
    labels = [b.proto.label for b in at.get("download_button")]
    assert "Mask volume (NIfTI)" in labels

    other = next(p for p in patients if p.patient_id != patient.patient_id
                 and kaggle3m.tumour_pixels(p).any())
    at.selectbox(key="patient").set_value(other.patient_id).run()
    assert "training set" not in _texts(at)
    assert at.slider(key=f"slice-patient-{other.patient_id}").value == int(
        np.argmax(kaggle3m.tumour_pixels(other))) + 1


def _nifti(volume: np.ndarray, affine: np.ndarray | None = None) -> bytes:
    return gzip.compress(nib.Nifti1Image(volume, np.eye(4) if affine is None else affine)
                         .to_bytes())


def _volume_and_truth(radii: tuple[int, ...] = (3, 6, 10, 5)) -> tuple[np.ndarray, np.ndarray]:
    """64 x 64 x Z x 3 volume, one 'tumour' disc of each radius (by default largest on slice 3)."""
    yy, xx = np.mgrid[:64, :64]
    slices, masks = [], []
    for radius in radii:
        disc = (yy - 26) ** 2 + (xx - 35) ** 2 < radius**2
        image = _brain()
        image[disc] = 230
        slices.append(image)
        masks.append(disc.astype(np.uint8))
    return np.stack(slices, axis=2), np.stack(masks, axis=2)


def test_nifti_volume_shows_volumetric_dice_and_starts_at_the_largest_slice(
    viewer: AppTest, tiny_checkpoint: Path
) -> None:
    volume, truth = _volume_and_truth()
    viewer.radio(key="mode").set_value(MODE_VOLUME).run()
    viewer.file_uploader(key="volume").set_value(("v.nii.gz", _nifti(volume), "application/gzip"))
    viewer.file_uploader(key="volume_mask").set_value(
        ("v_mask.nii.gz", _nifti(truth), "application/gzip"))
    viewer.run()
    assert not viewer.exception and not viewer.error, [e.value for e in viewer.error]

    expected = Predictor.from_checkpoint(tiny_checkpoint).predict_volume(volume).masks
    assert _metric(viewer, "Volumetric Dice") == f"{metrics.dice(expected, truth):.3f}"
    # The NIfTI's 1 mm voxels: the volume is in ml.
    assert _metric(viewer, "Ground-truth tumour volume") == f"{int(truth.sum()) / 1000:,.2f} ml"
    slider = viewer.slider(key="slice-volume")
    assert (slider.value, slider.max) == (3, 4)
    assert _metric(viewer, "Dice") == f"{metrics.dice(expected[:, :, 2], truth[:, :, 2]):.3f}"
    labels = [b.proto.label for b in viewer.get("download_button")]
    assert "Mask volume (NIfTI)" in labels

    slider.set_value(1).run()
    assert _metric(viewer, "Dice") == f"{metrics.dice(expected[:, :, 0], truth[:, :, 0]):.3f}"


def test_nifti_mask_of_another_shape_is_an_error(viewer: AppTest) -> None:
    volume, truth = _volume_and_truth()
    viewer.radio(key="mode").set_value(MODE_VOLUME).run()
    viewer.file_uploader(key="volume").set_value(("v.nii.gz", _nifti(volume), "application/gzip"))
    viewer.file_uploader(key="volume_mask").set_value(
        ("m.nii.gz", _nifti(truth[:32]), "application/gzip"))
    viewer.run()
    assert not viewer.exception
    errors = [e.value for e in viewer.error]
    assert len(errors) == 1 and "32x64x4 but the volume is 64x64x4" in errors[0]
    assert not [m for m in viewer.metric if m.label == "Volumetric Dice"]
    assert _metric(viewer, "Slices") == "4"


def test_a_slice_uploaded_as_a_volume_says_where_to_go(viewer: AppTest) -> None:
    viewer.radio(key="mode").set_value(MODE_VOLUME).run()
    viewer.file_uploader(key="volume").set_value(("s.tif", _tif(_brain()), "image/tiff")).run()
    errors = [e.value for e in viewer.error]
    assert len(errors) == 1 and "not a volume" in errors[0]


def test_api_mode_segments_through_the_api(
    monkeypatch: pytest.MonkeyPatch, live_api: str, tiny_checkpoint: Path
) -> None:
    monkeypatch.setenv("LGGSEG_API_URL", live_api)
    monkeypatch.setenv("LGGSEG_CHECKPOINT", "/nonexistent/not-used.safetensors")
    monkeypatch.delenv("LGGSEG_DATA_DIR", raising=False)
    at = AppTest.from_file(VIEWER, default_timeout=TIMEOUT)
    at.run()
    assert not at.error, [e.value for e in at.error]
    assert f"served by the API at {live_api}" in _texts(at)
    image, truth = _brain(), _truth()
    at.file_uploader(key="slices").set_value(
        [("a.png", _png(image), "image/png"), ("a_mask.png", _png(truth), "image/png")]).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    expected = Predictor.from_checkpoint(tiny_checkpoint).predict_slice(image).mask
    assert _metric(at, "Dice") == f"{metrics.dice(expected, truth):.3f}"


def test_unreachable_api_is_an_error_in_the_page(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LGGSEG_API_URL", "http://127.0.0.1:9")
    at = AppTest.from_file(VIEWER, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "cannot reach the API at http://127.0.0.1:9" in errors[0]


def test_missing_checkpoint_is_an_error_in_the_page(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("LGGSEG_API_URL", raising=False)
    monkeypatch.setenv("LGGSEG_CHECKPOINT", str(tmp_path / "none.safetensors"))
    at = AppTest.from_file(VIEWER, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "checkpoint not found" in errors[0]
    assert "LGGSEG_CHECKPOINT" in errors[0]


def test_an_unexpected_error_is_a_message_not_a_traceback(
    viewer: AppTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app import overlay

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(overlay, "prediction_and_truth", broken)
    viewer.file_uploader(key="slices").set_value(("a.png", _png(_brain()), "image/png")).run()
    assert not viewer.exception
    errors = [e.value for e in viewer.error]
    assert len(errors) == 1 and errors[0].startswith("Something went wrong")
    assert "boom" not in errors[0]


# ------------------------------------------------------- operator settings, not page inputs


def _patient(root: Path, name: str, slices: int) -> None:
    folder = root / name
    folder.mkdir(parents=True)
    for k in range(1, slices + 1):
        tifffile.imwrite(folder / f"{name}_{k}.tif", _brain(), photometric="rgb")
        tifffile.imwrite(folder / f"{name}_{k}_mask.tif", _truth() if k % 2 else _truth() * 0)


def _dataset_page(monkeypatch: pytest.MonkeyPatch, tiny_checkpoint: Path, root: Path) -> AppTest:
    at = _started(monkeypatch, tiny_checkpoint, data_dir=root)
    at.radio(key="mode").set_value("Browse a dataset folder").run()
    assert not at.exception, at.exception
    return at


def test_the_page_asks_for_no_address_or_path(viewer: AppTest) -> None:
    """The API URL (which receives the API key) and the dataset folder are operator settings."""
    assert not viewer.text_input
    viewer.radio(key="mode").set_value("Browse a dataset folder").run()
    assert not viewer.text_input
    assert "LGGSEG_DATA_DIR" in _texts(viewer)


def test_dataset_patients_are_picked_from_the_configured_folder_only(
    monkeypatch: pytest.MonkeyPatch, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    root = tmp_path / "kaggle_3m"
    _patient(root, "TCGA_AA_0001_20000101", 3)
    _patient(root, "TCGA_BB_0002_20000202", 2)
    (root / "not_a_patient").mkdir()
    at = _dataset_page(monkeypatch, tiny_checkpoint, root)
    assert not at.error and not at.text_input, [e.value for e in at.error]
    assert at.selectbox(key="patient").options == [
        "TCGA_AA_0001_20000101 (3 slices)", "TCGA_BB_0002_20000202 (2 slices)"]
    assert _metric(at, "Slices") == "3"
    at.selectbox(key="patient").set_value("TCGA_BB_0002_20000202").run()
    assert not at.exception and not at.error
    assert _metric(at, "Slices") == "2"


def test_dataset_errors_reveal_nothing_about_the_server(
    monkeypatch: pytest.MonkeyPatch, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    """A missing folder and one without patients (but with a kaggle_3m below it) read the same:
    no path, no "did you mean" hint."""
    holder = tmp_path / "holder"
    _patient(holder / "deeper" / "kaggle_3m", "TCGA_AA_0001_20000101", 1)
    shown = []
    for root in (tmp_path / "missing", holder):
        at = _dataset_page(monkeypatch, tiny_checkpoint, root)
        errors = [e.value for e in at.error]
        assert len(errors) == 1 and "cannot be browsed" in errors[0]
        assert str(tmp_path) not in errors[0] and "did you mean" not in errors[0]
        shown.append(errors[0])
    assert shown[0] == shown[1]


def test_a_file_named_like_a_slice_does_not_leak_its_bytes(
    monkeypatch: pytest.MonkeyPatch, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    root = tmp_path / "kaggle_3m"
    name = "TCGA_AA_0001_20000101"
    _patient(root, name, 1)
    (root / name / f"{name}_1.tif").write_bytes(b"SECRET=hunter2\n" * 40)
    at = _dataset_page(monkeypatch, tiny_checkpoint, root)
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "cannot be browsed" in errors[0]
    page = "\n".join(errors + [_texts(at)])
    assert "SECR" not in page and "hunter2" not in page


# ------------------------------------------------------- single-slice volumes and patients


def _zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_a_one_slice_zip_is_shown_without_a_slider(viewer: AppTest) -> None:
    viewer.radio(key="mode").set_value(MODE_VOLUME).run()
    viewer.file_uploader(key="volume").set_value(
        ("one.zip", _zip({"one_1.png": _png(_brain())}), "application/zip")).run()
    assert not viewer.exception and not viewer.error, [e.value for e in viewer.error]
    assert _metric(viewer, "Slices") == "1"
    assert not [s for s in viewer.slider if s.key == "slice-volume"]
    assert any("slice 1 of 1" in m.value for m in viewer.markdown)
    assert _metric(viewer, "Predicted tumour area").endswith(" px")


def test_a_one_slice_patient_is_shown_without_a_slider(
    monkeypatch: pytest.MonkeyPatch, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    root = tmp_path / "kaggle_3m"
    _patient(root, "TCGA_AA_0001_20000101", 1)
    at = _dataset_page(monkeypatch, tiny_checkpoint, root)
    assert not at.error, [e.value for e in at.error]
    assert _metric(at, "Slices") == "1"
    assert _metric(at, "Ground-truth tumour volume") == f"{int((_truth() > 0).sum()):,} voxels"
    assert not [s for s in at.slider if s.key and s.key.startswith("slice-")]


# ------------------------------------------------------- inputs the model cannot read; JPEG


def _jpeg(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def test_a_grey_slice_is_an_error_naming_the_three_sequences(viewer: AppTest) -> None:
    viewer.file_uploader(key="slices").set_value(
        ("flair_only.png", _png(_brain()[:, :, 1]), "image/png")).run()
    assert not viewer.exception
    errors = [e.value for e in viewer.error]
    assert len(errors) == 1 and "flair_only.png" in errors[0] and "1 channel" in errors[0]
    assert "pre-contrast, FLAIR, post-contrast" in errors[0]
    assert not viewer.metric and not viewer.image


def test_a_grey_volume_is_an_error_naming_the_three_sequences(viewer: AppTest) -> None:
    volume, _ = _volume_and_truth()
    viewer.radio(key="mode").set_value(MODE_VOLUME).run()
    viewer.file_uploader(key="volume").set_value(
        ("flair.nii.gz", _nifti(volume[..., 1]), "application/gzip")).run()
    assert not viewer.exception
    errors = [e.value for e in viewer.error]
    assert len(errors) == 1 and "pre-contrast, FLAIR, post-contrast" in errors[0]
    assert not viewer.metric


def test_a_jpeg_is_segmented_with_a_visible_warning(
    viewer: AppTest, tiny_checkpoint: Path
) -> None:
    data = _jpeg(_brain())
    viewer.file_uploader(key="slices").set_value(("scan.jpg", data, "image/jpeg")).run()
    assert not viewer.exception and not viewer.error, [e.value for e in viewer.error]
    warnings = [w.value for w in viewer.warning if "JPEG" in w.value]
    assert len(warnings) == 1 and "`scan.jpg` is a JPEG" in warnings[0]
    assert "lossy compression changes pixel values" in warnings[0]
    decoded = np.asarray(Image.open(io.BytesIO(data)))
    expected = Predictor.from_checkpoint(tiny_checkpoint).predict_slice(decoded).mask
    assert _metric(viewer, "Predicted tumour area").startswith(f"{int(expected.sum()):,} px")

    viewer.file_uploader(key="slices").set_value(("scan.png", _png(_brain()), "image/png")).run()
    assert not [w for w in viewer.warning if "JPEG" in w.value]


def test_a_zip_of_jpegs_is_segmented_with_a_visible_warning(viewer: AppTest) -> None:
    viewer.radio(key="mode").set_value(MODE_VOLUME).run()
    archive = _zip({"v_1.jpg": _jpeg(_brain()), "v_2.jpg": _jpeg(_brain())})
    viewer.file_uploader(key="volume").set_value(("v.zip", archive, "application/zip")).run()
    assert not viewer.exception and not viewer.error, [e.value for e in viewer.error]
    assert any("`v.zip` holds JPEG slices" in w.value for w in viewer.warning)
    assert _metric(viewer, "Slices") == "2"


def test_a_second_volume_shows_its_own_slices_and_uncertainty(viewer: AppTest) -> None:
    """The stack's encoded images, overlays and uncertainty maps are kept per volume: a second
    upload under the same page must not be drawn with the first one's."""
    volume, _ = _volume_and_truth()
    viewer.radio(key="mode").set_value(MODE_VOLUME).run()
    viewer.checkbox(key="layer_uncertainty").check()
    for depth in (4, 2):
        viewer.file_uploader(key="volume").set_value(
            (f"v{depth}.nii.gz", _nifti(volume[:, :, :depth]), "application/gzip"))
        viewer.run()
        assert not viewer.exception and not viewer.error, [e.value for e in viewer.error]
        for cache in ("_bases", "_overlays", "_uncertainty"):
            latest = list(viewer.session_state[cache].values())[-1]  # the last one used
            assert len(latest) == depth, cache


def test_hd95_follows_the_ground_truth_of_the_same_volume(
    viewer: AppTest, tiny_checkpoint: Path
) -> None:
    """The memoised HD95 is keyed by the truth too: the same volume with another truth mask
    (the same predictions) gets its own distance."""
    volume, truth = _volume_and_truth()
    expected = Predictor.from_checkpoint(tiny_checkpoint).predict_volume(volume).masks
    viewer.radio(key="mode").set_value(MODE_VOLUME).run()
    viewer.file_uploader(key="volume").set_value(("v.nii.gz", _nifti(volume), "application/gzip"))
    for mask in (truth, np.roll(truth, 9, axis=1)):
        viewer.file_uploader(key="volume_mask").set_value(
            ("v_mask.nii.gz", _nifti(mask), "application/gzip"))
        viewer.run()
        assert not viewer.exception and not viewer.error, [e.value for e in viewer.error]
        distance = metrics.hd95(expected, mask, (1.0, 1.0, 1.0))
        assert _metric(viewer, "HD95 (mm)") == f"{distance:.1f} mm"
