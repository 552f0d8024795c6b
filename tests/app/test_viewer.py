"""The viewer page driven by ``streamlit.testing.v1.AppTest``: what a user sees after each step."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image
from streamlit.testing.v1 import AppTest

from data import kaggle3m
from inference import metrics
from inference.predictor import Predictor

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


@pytest.fixture
def viewer(monkeypatch: pytest.MonkeyPatch, tiny_checkpoint: Path) -> AppTest:
    monkeypatch.setenv("LGGSEG_CHECKPOINT", str(tiny_checkpoint))
    monkeypatch.delenv("LGGSEG_API_URL", raising=False)
    monkeypatch.delenv("LGGSEG_DATA_DIR", raising=False)
    at = AppTest.from_file(VIEWER, default_timeout=TIMEOUT)
    at.run()
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
    monkeypatch.setenv("LGGSEG_CHECKPOINT", str(tiny_checkpoint))
    monkeypatch.setenv("LGGSEG_DATA_DIR", str(lgg_dir))
    monkeypatch.delenv("LGGSEG_API_URL", raising=False)
    at = AppTest.from_file(VIEWER, default_timeout=TIMEOUT)
    at.run()
    at.radio(key="mode").set_value("Browse a dataset folder").run()
    assert not at.exception and not at.error, [e.value for e in at.error]

    patients = kaggle3m.scan_dataset(lgg_dir)
    patient = next(p for p in patients if p.patient_id == at.selectbox(key="patient").value)
    areas = kaggle3m.tumour_pixels(patient)
    slider = at.slider(key=f"slice-patient-{patient.patient_id}")
    assert slider.value == int(np.argmax(areas)) + 1
    assert slider.max == len(patient.slices)
    assert _metric(at, "Ground-truth tumour").startswith(f"{int(areas.sum()):,} px")
    assert float(_metric(at, "Volumetric Dice")) >= 0.0
    gt_now = int(areas[slider.value - 1])
    assert _metric(at, "Ground-truth tumour area").startswith(f"{gt_now:,} px")
    labels = [b.proto.label for b in at.get("download_button")]
    assert "Download the predicted mask volume (NIfTI)" in labels

    other = next(p for p in patients if p.patient_id != patient.patient_id
                 and kaggle3m.tumour_pixels(p).any())
    at.selectbox(key="patient").set_value(other.patient_id).run()
    assert at.slider(key=f"slice-patient-{other.patient_id}").value == int(
        np.argmax(kaggle3m.tumour_pixels(other))) + 1
