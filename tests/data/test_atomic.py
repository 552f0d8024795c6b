"""data.atomic: whole files or none, readable by others, and no torch or models behind it."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from data import atomic

REPO = Path(__file__).resolve().parents[2]


def test_writes_replace_the_file_whole_and_leave_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "new" / "card.json"
    atomic.atomic_write_json(path, {"b": 1, "a": [0.5]})
    assert path.read_text() == '{\n  "b": 1,\n  "a": [\n    0.5\n  ]\n}\n'  # key order kept
    atomic.atomic_write_bytes(path, b"second")
    assert path.read_bytes() == b"second"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # other users (containers) can read it
    assert os.listdir(path.parent) == ["card.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "split.json"
    atomic.atomic_write_json(path, {"old": True})

    def disk_full(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", disk_full)
    with pytest.raises(OSError, match="No space left"):
        atomic.atomic_write_json(path, {"old": False})
    assert json.loads(path.read_text()) == {"old": True}
    assert os.listdir(tmp_path) == ["split.json"]


def test_the_split_writes_without_importing_torch_or_models() -> None:
    code = ("import sys, data.split; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'models'}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
