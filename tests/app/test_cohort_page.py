"""The viewer's cohort report page (``app/pages/cohort_report.py``) driven by AppTest."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from analysis.stats import AGREEMENT_COLUMNS, ASSOCIATION_COLUMNS

PAGE = str(Path(__file__).resolve().parents[2] / "app" / "pages" / "cohort_report.py")
PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00"
       b"\x00\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\xff\xff?\x00\x05\xfe\x02\xfe\xa7"
       b"5\x81\x84\x00\x00\x00\x00IEND\xaeB`\x82")


def _report(folder: Path, dice: float) -> Path:
    """A small report folder with the files analysis.cohort writes (synthetic numbers)."""
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps(
        {"patients": 2, "median_dice": dice, "largest_component": True, "model": "m-1",
         "significant_bonferroni_0.05": 1}))
    pd.DataFrame({"patient": ["A", "B"], "truth_voxels": [10, 20], "pred_voxels": [11, 19],
                  "dice": [dice, dice]}).to_csv(folder / "features.csv", index=False)
    pd.DataFrame([dict.fromkeys(AGREEMENT_COLUMNS, 0.5) | {"feature": "bevr"}]).to_csv(
        folder / "agreement.csv", index=False)
    rows = [dict.fromkeys(ASSOCIATION_COLUMNS, 0.01) | {"feature": "bevr", "source": s,
            "variable": "RNASeqCluster", "test": "fisher", "note": ""} for s in ("pred", "truth")]
    pd.DataFrame(rows).to_csv(folder / "associations.csv", index=False)
    (folder / "figures").mkdir()
    (folder / "figures" / "bland_altman.png").write_bytes(PNG)
    (folder / "report.html").write_text("<html></html>")
    return folder


def _page(monkeypatch: pytest.MonkeyPatch, root: Path | None) -> AppTest:
    if root is None:
        monkeypatch.delenv("LGGSEG_REPORTS_DIR", raising=False)
    else:
        monkeypatch.setenv("LGGSEG_REPORTS_DIR", str(root))
    at = AppTest.from_file(PAGE, default_timeout=30)
    at.run()
    assert not at.exception, at.exception
    return at


def test_without_a_configured_folder_the_page_says_how_to_set_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    at = _page(monkeypatch, None)
    assert "LGGSEG_REPORTS_DIR" in at.info[0].value
    assert not at.selectbox


def test_lists_the_reports_and_shows_the_chosen_one(monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path) -> None:
    _report(tmp_path / "run-a", 0.81)
    _report(tmp_path / "run-b", 0.62)
    (tmp_path / "not-a-report").mkdir()
    at = _page(monkeypatch, tmp_path)
    assert at.selectbox[0].options == ["run-a", "run-b"]
    assert "not for diagnostic use" in at.warning[0].value
    assert [m.value for m in at.metric if m.label == "Median Dice"] == ["0.810"]
    at.selectbox[0].select("run-b").run()
    assert [m.value for m in at.metric if m.label == "Median Dice"] == ["0.620"]
    associations = at.dataframe[1].value
    assert set(associations["source"]) == {"pred"}
    at.radio[0].set_value("truth").run()
    assert set(at.dataframe[1].value["source"]) == {"truth"}
    assert [i.captions[0] for i in at.image] == ["bland altman"]
    labels = [b.proto.label for b in at.get("download_button")]
    assert labels == ["Download report.html (self-contained)"]


def test_a_folder_without_reports_says_what_a_report_is(monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    at = _page(monkeypatch, tmp_path)
    assert "summary.json" in at.info[0].value
