"""The viewer in a real browser: ``streamlit run`` as a subprocess, driven by headless Chromium.

Uploads a real kaggle_3m slice and its mask through the page's file input (so Streamlit's
upload path, XSRF protection on, is exercised end to end), waits for the overlay and checks the
Dice shown. A screenshot is saved to ``artifacts/browser/viewer.png`` (git-ignored: it shows
patient data). Skips when Chromium, Playwright or the real data is missing (``make browser``
installs Chromium).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import nibabel as nib
import numpy as np
import pytest

from app.servers import ServerError, free_port, start_server
from data import kaggle3m
from inference import metrics
from inference.predictor import Predictor
from models import BUNDLED_CHECKPOINT
from tests.dicom_study import write_study

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "artifacts" / "browser"
SCREENSHOT = SCREENSHOTS / "viewer.png"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
pytestmark = [pytest.mark.slow, pytest.mark.realdata]


@pytest.fixture
def checkpoint(tiny_checkpoint: Path) -> Path:
    """The bundled model when the repository has it, else the tiny random test model."""
    return BUNDLED_CHECKPOINT if BUNDLED_CHECKPOINT.is_file() else tiny_checkpoint


@contextlib.contextmanager
def _viewer(checkpoint: Path, tmp_path: Path, data_dir: Path | None = None) -> Iterator[str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LGGSEG_")}
    env.update(LGGSEG_CHECKPOINT=str(checkpoint), PYTHONUNBUFFERED="1")
    if data_dir is not None:
        env["LGGSEG_DATA_DIR"] = str(data_dir)
    try:
        server = start_server(
            [sys.executable, "-m", "streamlit", "run", str(REPO / "app" / "viewer.py"),
             "--server.headless", "true", "--server.port", str(port),
             "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
             "--server.fileWatcherType", "none"],
            f"http://127.0.0.1:{port}/_stcore/health", timeout=60, cwd=REPO, env=env,
            log=tmp_path / "streamlit.log", name="streamlit",
        )  # fmt: skip
    except ServerError as exc:
        pytest.fail(str(exc))
    with server:
        yield server.url


@pytest.fixture
def viewer_url(checkpoint: Path, tmp_path: Path) -> Iterator[str]:
    with _viewer(checkpoint, tmp_path) as url:
        yield url


@pytest.fixture
def dataset_viewer_url(checkpoint: Path, tmp_path: Path, lgg_dir: Path) -> Iterator[str]:
    with _viewer(checkpoint, tmp_path, lgg_dir) as url:
        yield url


def _largest_tumour_slice(lgg_dir: Path) -> kaggle3m.SliceRecord:
    patient = kaggle3m.scan_dataset(lgg_dir)[0]
    return patient.slices[int(np.argmax(kaggle3m.tumour_pixels(patient)))]


def test_upload_slice_and_mask_in_chromium(
    lgg_dir: Path, checkpoint: Path, viewer_url: str
) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium not installed (run `make browser`)")
    sync_api = pytest.importorskip("playwright.sync_api")

    record = _largest_tumour_slice(lgg_dir)
    predicted = Predictor.from_checkpoint(checkpoint).predict_slice(
        kaggle3m.read_image(record.image_path)).mask
    expected_dice = metrics.dice(predicted, kaggle3m.read_mask(record.mask_path))

    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1500})
            page.goto(viewer_url, wait_until="domcontentloaded")
            page.get_by_text("not for diagnostic use").wait_for(timeout=60_000)
            uploader = page.locator("[data-testid='stFileUploader']").first
            uploader.locator("input[type='file']").set_input_files(
                [str(record.image_path), str(record.mask_path)])
            page.locator("[data-testid='stImage'] img").first.wait_for(timeout=90_000)
            dice = page.locator("[data-testid='stMetric']").filter(
                has=page.get_by_text("Dice", exact=True))
            dice.first.wait_for(timeout=30_000)
            shown = dice.first.locator("[data-testid='stMetricValue']").inner_text().strip()
            # The viewer's Predictor runs in another process (other batch and thread layout), so
            # a bf16 pixel or two may flip: the shown 3-decimal Dice agrees within 0.002.
            assert float(shown) == pytest.approx(expected_dice, abs=0.002)
            assert page.locator("[data-testid='stException']").count() == 0
            assert page.locator("[data-testid='stAlertContentError']").count() == 0
            page.wait_for_timeout(500)  # let the image finish painting
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)

            page.get_by_text("Agreement (TP / FP / FN)", exact=True).click()
            page.get_by_text("false negative (missed ground truth)").wait_for(timeout=30_000)
            page.locator("[data-testid='stImage'] img").first.wait_for(timeout=30_000)
            page.wait_for_timeout(500)
            page.screenshot(path=str(SCREENSHOTS / "viewer-agreement.png"), full_page=True)
        finally:
            browser.close()
    assert SCREENSHOT.stat().st_size > 10_000
    # XSRF protection is on: an upload without the page's token is refused.
    refused = httpx.put(f"{viewer_url}/_stcore/upload_file/session/file",
                        files={"file": ("x.png", b"\x89PNG", "image/png")})
    assert refused.status_code == 403 and "XSRF" in refused.text


# ------------------------------------------------- the slice stack, a patient, the table

STACK = "iframe[title*='slice_stack']"


@contextlib.contextmanager
def _page(width: int = 1440, height: int = 900) -> Iterator[Any]:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium not installed (run `make browser`)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()


def _status(page: Any) -> dict[str, int]:
    """The stack's own state, as its status line's data attributes."""
    status = page.frame_locator(STACK).locator("#status")
    data = status.evaluate("e => Object.assign({}, e.dataset)")
    return {"slice": int(data["slice"]), "window": int(data["window"]),
            "level": int(data["level"]), "zoom": round(float(data["zoom"]) * 100)}


def _slider_value(page: Any) -> int:
    thumb = page.locator("[data-testid='stSlider']").filter(
        has=page.get_by_text("Slice", exact=True)).locator("input[type='range']")
    return int(thumb.input_value())


def _wait_until(check: Any, what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


def _shot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.wait_for_timeout(400)
    page.screenshot(path=str(SCREENSHOTS / name))


def _canvas_sum(page: Any) -> int:
    """Sum of the canvas' red channel (what window/level and the layers change)."""
    return int(page.frame_locator(STACK).locator("#view").evaluate(
        "c => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        " let s = 0; for (let i = 0; i < d.length; i += 4) s += d[i]; return s; }"))


def _idle(page: Any) -> None:
    """Wait until Streamlit has finished its run (no 'Running...' status widget)."""
    page.wait_for_timeout(300)
    page.locator("[data-testid='stStatusWidget']").wait_for(state="detached", timeout=120_000)


def test_patient_stack_in_chromium(lgg_dir: Path, dataset_viewer_url: str) -> None:
    with _page() as page:
        page.goto(dataset_viewer_url, wait_until="domcontentloaded")
        page.get_by_role("button", name="Try an example patient").click(timeout=60_000)
        frame = page.locator(STACK)
        frame.wait_for(timeout=180_000)
        _idle(page)
        _wait_until(lambda: page.frame_locator(STACK).locator("#status").inner_text() != "",
                    "the stack's first slice")
        header = page.get_by_text(" · slice ", exact=False).first.inner_text()
        patient_id = header.split(" · ")[0].strip()
        patient = next(p for p in kaggle3m.scan_dataset(lgg_dir) if p.patient_id == patient_id)
        count = len(patient.slices)
        start = int(np.argmax(kaggle3m.tumour_pixels(patient))) + 1
        assert _status(page)["slice"] == start == _slider_value(page)
        _shot(page, "patient.png")

        # Above the fold at 1440 x 900: the whole image and its slice slider.
        box = frame.bounding_box()
        slider = page.locator("[data-testid='stSlider']").filter(
            has=page.get_by_text("Slice", exact=True)).bounding_box()
        assert box is not None and slider is not None
        assert box["y"] >= 0 and box["y"] + box["height"] <= 900, box
        assert slider["y"] + slider["height"] <= 900, slider

        # Wheel and keys scroll; the chosen slice goes back to Python (slider, metrics).
        canvas = page.frame_locator(STACK).locator("#view")
        canvas.hover()
        page.mouse.wheel(0, 120)
        _wait_until(lambda: _status(page)["slice"] == start + 1, "the wheel")
        _wait_until(lambda: _slider_value(page) == start + 1, "the slider to follow the wheel")
        page.get_by_text(f"slice {start + 1} of {count}", exact=False).wait_for(timeout=30_000)
        canvas.press("Home")
        assert _status(page)["slice"] == 1
        canvas.press("End")
        assert _status(page)["slice"] == count
        canvas.press("ArrowUp")
        assert _status(page)["slice"] == count - 1
        canvas.press("PageUp")
        assert _status(page)["slice"] == count - 1 - max(1, round(count / 10))
        _wait_until(lambda: _slider_value(page) == _status(page)["slice"], "the key report")
        _idle(page)

        # Window/level: a drag changes the image's pixels, not the overlay's layout.
        canvas.hover()
        before, pixels = _status(page), _canvas_sum(page)
        bbox = canvas.bounding_box()
        cx, cy = bbox["x"] + bbox["width"] / 2, bbox["y"] + bbox["height"] / 2
        page.mouse.move(cx, cy)
        page.mouse.down()
        page.mouse.move(cx - 120, cy + 40, steps=5)
        page.mouse.up()
        after = _status(page)
        assert after["window"] == before["window"] - 120
        assert after["level"] == before["level"] + 20
        assert _canvas_sum(page) < pixels  # a higher level (low end 80 of 255): darker tissue
        _shot(page, "patient-window-level.png")

        # Zoom: the + button and Ctrl+wheel.
        page.frame_locator(STACK).locator("#zoomin").click()
        assert _status(page)["zoom"] == 125
        canvas.hover()
        page.keyboard.down("Control")
        page.mouse.wheel(0, -120)
        page.keyboard.up("Control")
        assert _status(page)["zoom"] == round(125 * 1.15)
        _shot(page, "patient-zoom.png")
        page.frame_locator(STACK).locator("#fit").click()

        # The area chart: a click near its left end shows one of the first slices.
        chart = page.locator("[data-testid='stVegaLiteChart']").first
        chart.scroll_into_view_if_needed()
        cbox = chart.bounding_box()
        page.mouse.click(cbox["x"] + 100, cbox["y"] + cbox["height"] * 0.6)
        _wait_until(lambda: _slider_value(page) <= 3, "the chart click to move the slider")
        _wait_until(lambda: _status(page)["slice"] == _slider_value(page),
                    "the stack to follow the chart")
        _idle(page)
        _shot(page, "patient-chart-click.png")

        # Layers: the prediction outline, then the mirrored-pass uncertainty.
        page.evaluate("window.scrollTo(0, 0)")
        def overlay_id() -> str:
            return str(page.frame_locator(STACK).locator("#view").evaluate(
                "() => window.lggStack.overlayId"))

        canvas.press("Home")
        for _ in range(start - 1):  # back to the largest tumour, with the keyboard
            canvas.press("ArrowDown")
        _wait_until(lambda: _slider_value(page) == start, "the slider at the largest tumour")
        _idle(page)
        first_overlay, first_pixels = overlay_id(), _canvas_sum(page)
        page.locator("[data-testid='stSidebar']").get_by_text("Prediction", exact=True).click()
        _wait_until(lambda: overlay_id() != first_overlay, "the prediction layer")
        page.locator("[data-testid='stMain'] [data-testid='stMarkdownContainer']").get_by_text(
            "prediction", exact=True).wait_for(timeout=30_000)
        page.wait_for_timeout(500)
        assert _canvas_sum(page) != first_pixels
        page.locator("[data-testid='stSidebar']").get_by_text("Uncertainty", exact=True).click()
        page.get_by_text("uncertain (mirror disagrees)").wait_for(timeout=180_000)
        _idle(page)
        _shot(page, "patient-layers.png")
        page.locator("[data-testid='stSidebar']").get_by_text("Agreement", exact=True).click()
        _wait_until(lambda: page.get_by_text("both (TP)").count() == 0, "the agreement off")
        _idle(page)

        # The table: a click on another patient's row opens it; while it is segmented, none
        # of the first patient's metrics stay on screen.
        table = page.locator("[data-testid='stDataFrame']").first
        table.scroll_into_view_if_needed()
        tbox = table.bounding_box()
        page.mouse.click(tbox["x"] + 15, tbox["y"] + 35 * 2.5)  # the second row's select box
        notice = page.get_by_text("Segmenting patient", exact=False).first
        notice.wait_for(timeout=60_000)
        assert page.locator("[data-testid='stMain'] [data-testid='stMetric']").count() == 0
        _shot(page, "patient-computing.png")
        _idle(page)
        header = page.get_by_text(" · slice ", exact=False).first.inner_text()
        assert header.split(" · ")[0].strip() != patient_id
        assert page.locator("[data-testid='stException']").count() == 0
        page.evaluate("window.scrollTo(0, 0)")
        _shot(page, "patient-next.png")


def _sequence_case(lgg_dir: Path, folder: Path) -> tuple[list[Path], np.ndarray]:
    """A real patient as nnU-Net sequence files (1 x 1 x 3 mm, invented: kaggle_3m has none)
    and its mask; returns the files and the H x W x Z x 3 volume."""
    patient = kaggle3m.scan_dataset(lgg_dir)[1]
    volume = np.stack([kaggle3m.read_image(s.image_path) for s in patient.slices], axis=2)
    truth = np.stack([kaggle3m.read_mask(s.mask_path) for s in patient.slices], axis=2)
    affine = np.diag([1.0, 1.0, 3.0, 1.0])
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for channel in range(3):
        path = folder / f"case1_000{channel}.nii.gz"
        nib.save(nib.Nifti1Image(volume[..., channel].astype(np.float32), affine), path)
        files.append(path)
    nib.save(nib.Nifti1Image(truth, affine), folder / "case1_mask.nii.gz")
    return files + [folder / "case1_mask.nii.gz"], volume


def _metric_value(page: Any, label: str) -> str:
    metric = page.locator("[data-testid='stMetric']").filter(
        has=page.get_by_text(label, exact=True)).first
    metric.wait_for(timeout=180_000)
    return str(metric.locator("[data-testid='stMetricValue']").inner_text()).strip()


def test_sequence_files_and_dicom_uploads_in_chromium(
    lgg_dir: Path, viewer_url: str, tmp_path: Path
) -> None:
    files, volume = _sequence_case(lgg_dir, tmp_path / "sequences")
    study = write_study(tmp_path / "dicom", [
        ("T1 pre", volume[..., 0].astype(np.uint16)), ("FLAIR", volume[..., 1].astype(np.uint16)),
        ("T1 post gd", volume[..., 2].astype(np.uint16))])  # fmt: skip
    sidebar = "[data-testid='stSidebar']"
    with _page() as page:
        page.goto(viewer_url, wait_until="domcontentloaded")
        page.get_by_text("not for diagnostic use").wait_for(timeout=60_000)
        page.locator(sidebar).get_by_text("Upload a volume", exact=False).click()
        page.locator(sidebar).get_by_text("Three sequence files (NIfTI)").click()
        page.locator(f"{sidebar} [data-testid='stFileUploader']").filter(has_text="_0001 (FLAIR)") \
            .locator("input[type='file']").set_input_files([str(p) for p in files])
        page.locator(STACK).wait_for(timeout=180_000)
        assert _metric_value(page, "Slices") == str(volume.shape[2])
        assert _metric_value(page, "Ground-truth tumour volume").endswith(" ml")
        assert _metric_value(page, "HD95 (mm)").endswith(" mm")
        assert _metric_value(page, "Ground-truth tumour area").endswith(" mm²")
        _idle(page)
        assert page.locator("[data-testid='stAlertContentError']").count() == 0
        _shot(page, "upload-sequences.png")

        page.locator(sidebar).get_by_text("DICOM study", exact=True).click()
        page.locator(f"{sidebar} [data-testid='stFileUploader']").filter(has_text="DICOM files") \
            .locator("input[type='file']").set_input_files(
                [str(p) for p in sorted(study.folder.iterdir())])
        page.get_by_text("SYN001", exact=False).first.wait_for(timeout=180_000)
        assert _metric_value(page, "Slices") == str(volume.shape[2])
        assert _metric_value(page, "Predicted tumour volume").endswith(" ml")
        _idle(page)
        assert page.locator("[data-testid='stAlertContentError']").count() == 0
        _shot(page, "upload-dicom.png")
