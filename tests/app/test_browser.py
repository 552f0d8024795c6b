"""The viewer in a real browser: ``streamlit run`` as a subprocess, driven by headless Chromium.

Uploads a real kaggle_3m slice and its mask through the page's file input (so Streamlit's
upload path, XSRF protection on, is exercised end to end), waits for the overlay and checks the
Dice shown. A screenshot is saved to ``artifacts/browser/viewer.png`` (git-ignored: it shows
patient data). Skips when Chromium, Playwright or the real data is missing (``make browser``
installs Chromium).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from app.servers import ServerError, free_port, start_server
from data import kaggle3m
from inference import metrics
from inference.predictor import Predictor
from models import BUNDLED_CHECKPOINT

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


@pytest.fixture
def viewer_url(checkpoint: Path, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LGGSEG_")}
    env.update(LGGSEG_CHECKPOINT=str(checkpoint), PYTHONUNBUFFERED="1")
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
