"""``python -m data.download`` and ``python -m data.summary`` without network: the verify path
on real and synthetic folders, and clear errors when the Kaggle client is missing or not set up."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import data.summary
from data import download
from data.kaggle3m import PatientRecord
from tests.data.conftest import Listing, SyntheticWriter, tumour_slices


@pytest.fixture
def cached_tumour(monkeypatch: pytest.MonkeyPatch, lgg_tumour: dict[str, np.ndarray]) -> None:
    """Reuse the session's one decode of the real masks instead of decoding them again."""
    monkeypatch.setattr(data.summary, "tumour_pixels", lambda p: lgg_tumour[p.patient_id])


@pytest.mark.realdata
def test_verify_only_real_data(
    lgg_dir: Path, cached_tumour: None, lgg_listing: Listing, lgg_tumour: dict[str, np.ndarray],
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert download.main(["--verify-only", str(lgg_dir.parent)]) == 0  # finds kaggle_3m inside
    out = capsys.readouterr().out
    n, total, tumour = lgg_listing.patients, lgg_listing.total_slices, tumour_slices(lgg_tumour)
    assert f"verified {lgg_dir}: {n} patients, {total} slices, {tumour} with tumour" in out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[1:-1]}
    du = [p for p in lgg_listing.slices if p.startswith("TCGA_DU_")]
    assert rows["DU"][:3] == [str(len(du)), str(sum(lgg_listing.slices[p] for p in du)),
                              str(tumour_slices(lgg_tumour, du))]
    assert rows["all"][:3] == [str(n), str(total), str(tumour)]
    assert sum(int(r[0]) for k, r in rows.items() if k != "all") == n


@pytest.mark.realdata
def test_summary_cli_real_data(
    lgg_dir: Path, cached_tumour: None, lgg_listing: Listing, lgg_tumour: dict[str, np.ndarray],
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert data.summary.main([str(lgg_dir)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1].endswith(
        f"{lgg_listing.patients} patients, {lgg_listing.total_slices} slices, "
        f"{tumour_slices(lgg_tumour)} with tumour"
    )
    assert "EZ" in out and "HT" in out


def test_verify_only_synthetic_good_and_bad(
    make_kaggle3m: SyntheticWriter, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_kaggle3m(["TCGA_AA_0001_2000", "TCGA_BB_0002_2000"], slices=4)
    assert download.main(["--verify-only", str(root)]) == 0
    assert "2 patients, 8 slices, 4 with tumour" in capsys.readouterr().out
    (root / "TCGA_BB_0002_2000" / "TCGA_BB_0002_2000_3_mask.tif").unlink()
    assert download.main(["--verify-only", str(root)]) == 1
    err = capsys.readouterr().err
    assert "TCGA_BB_0002_2000_3.tif: image without its mask" in err
    with pytest.warns(UserWarning, match="skipped 1 bad file"):
        assert download.main(["--verify-only", str(root), "--skip-bad"]) == 0
    assert "2 patients, 7 slices" in capsys.readouterr().out


def test_help_explains_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        download.main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--dest", "--verify-only", "--force", "--skip-bad"):
        assert flag in out
    with pytest.raises(SystemExit):
        download.main([])  # one of --dest / --verify-only is required


# ---------------------------------------------------------------------------- Kaggle client


def _fake_kaggle(monkeypatch: pytest.MonkeyPatch, api_class: Any = None, **attrs: Any) -> None:
    """Install a stand-in ``kaggle`` package in sys.modules (restored after the test)."""
    extended = types.ModuleType("kaggle.api.kaggle_api_extended")
    if api_class is not None:
        extended.KaggleApi = api_class  # type: ignore[attr-defined]
    for name, value in attrs.items():
        setattr(extended, name, value)
    monkeypatch.setitem(sys.modules, "kaggle", types.ModuleType("kaggle"))
    monkeypatch.setitem(sys.modules, "kaggle.api", types.ModuleType("kaggle.api"))
    monkeypatch.setitem(sys.modules, "kaggle.api.kaggle_api_extended", extended)


def test_missing_kaggle_client_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "kaggle", None)  # what an uninstalled package looks like
    assert download.main(["--dest", str(tmp_path / "dl")]) == 1
    err = capsys.readouterr().err
    assert "Kaggle client is not installed" in err
    assert "pip install -c constraints.txt -e '.[download]'" in err


def test_broken_kaggle_install_names_the_missing_module(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def missing(name: str) -> Any:  # kaggle 2.2.5 imports six without declaring it
        raise ModuleNotFoundError("No module named 'six'", name="six")

    _fake_kaggle(monkeypatch, __getattr__=missing)
    assert download.main(["--dest", str(tmp_path / "dl")]) == 1
    err = capsys.readouterr().err
    assert "installed but cannot be imported (No module named 'six')" in err


def test_unconfigured_kaggle_client_says_how_to_set_it_up(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    class NoTokenApi:
        def authenticate(self) -> None:  # what the real client does without a token
            print("Could not find kaggle.json ...")
            sys.exit(1)

    _fake_kaggle(monkeypatch, NoTokenApi)
    assert download.main(["--dest", str(tmp_path / "dl")]) == 1
    captured = capsys.readouterr()
    assert "~/.kaggle/kaggle.json" in captured.err and "KAGGLE_USERNAME" in captured.err
    assert "Could not find" not in captured.out  # the client's own noise is kept quiet
    assert not (tmp_path / "dl").exists()  # nothing created before the client is usable


def test_download_locates_and_verifies_the_unzipped_folder(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    make_kaggle3m: SyntheticWriter,
    capsys: pytest.CaptureFixture[str],
) -> None:
    calls: list[dict[str, Any]] = []

    class OfflineApi:
        """Stands in for the network: 'unzips' a small dataset the way the real zip is laid out."""

        def authenticate(self) -> None:
            pass

        def dataset_download_files(self, dataset: str, **kwargs: Any) -> None:
            calls.append({"dataset": dataset, **kwargs})
            nested = Path(kwargs["path"]) / "lgg-mri-segmentation" / "kaggle_3m"
            make_kaggle3m(["TCGA_AA_0001_2000"], slices=3, root=nested)

    _fake_kaggle(monkeypatch, OfflineApi)
    dest = tmp_path / "dl"
    assert download.main(["--dest", str(dest)]) == 0
    assert calls == [
        {
            "dataset": "mateuszbuda/lgg-mri-segmentation",
            "path": str(dest),
            "unzip": True,
            "quiet": False,
        }
    ]
    out = capsys.readouterr().out
    assert f"verified {dest / 'lgg-mri-segmentation' / 'kaggle_3m'}: 1 patients, 3 slices" in out
    # a second run finds the folder and does not download again
    assert download.main(["--dest", str(dest)]) == 0
    assert len(calls) == 1 and "already exists" in capsys.readouterr().out


def test_summarize_counts_per_institution(make_kaggle3m: SyntheticWriter) -> None:
    from data.kaggle3m import scan_dataset

    root = make_kaggle3m({"TCGA_AA_0001_2000": 4, "TCGA_AA_0002_2000": 3, "TCGA_BB_0003_2000": 2})
    patients: list[PatientRecord] = scan_dataset(root)
    rows = {r.institution: r for r in data.summary.summarize(patients)}
    assert (rows["AA"].patients, rows["AA"].slices, rows["AA"].tumour_slices) == (2, 7, 3)
    assert (rows["BB"].patients, rows["BB"].slices, rows["BB"].tumour_slices) == (1, 2, 1)
    assert rows["all"].tumour_pixels == 4 * 24
