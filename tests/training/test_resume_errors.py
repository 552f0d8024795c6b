"""A failed ``--resume`` says why and leaves the run folder as it was (issue 12)."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.checkpointing import load_resume
from training.config import load_config, write_config
from training.train import main

REPO = Path(__file__).resolve().parents[2]


def test_an_empty_resume_file_is_named_as_empty(tmp_path: Path) -> None:
    (tmp_path / "resume.pt").write_bytes(b"")
    with pytest.raises(RuntimeError, match="cannot read .*resume.pt: the file is empty"):
        load_resume(tmp_path / "resume.pt")
    (tmp_path / "resume.pt").write_bytes(b"not a torch file")
    with pytest.raises(RuntimeError, match=r"cannot read .*resume.pt: \S"):
        load_resume(tmp_path / "resume.pt")


def test_a_failed_resume_does_not_rewrite_the_config(
    synthetic_lgg: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    cfg = load_config(None, {"data": {"data_dir": str(synthetic_lgg)}})
    write_config(cfg, out / "config.yaml")
    before = (out / "config.yaml").read_bytes()
    (out / "resume.pt").write_bytes(b"")  # the run's resume state is unusable
    assert main(["--out", str(out), "--resume", "--epochs", "7"]) != 0
    assert (out / "config.yaml").read_bytes() == before
