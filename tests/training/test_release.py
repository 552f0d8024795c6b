"""``python -m training.release`` on a seconds-long synthetic run."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from models.checkpoint import INTENDED_USE, load_checkpoint
from training.release import main as release_main
from training.train import main as train_main

from .conftest import tiny_args


def test_release_packages_the_best_checkpoint_with_test_metrics(
    synthetic_lgg: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    assert train_main(tiny_args(synthetic_lgg, run, "--epochs", "1")) == 0
    out = tmp_path / "weights" / "release.safetensors"
    code = release_main(["--run", str(run), "--data-dir", str(synthetic_lgg), "--out", str(out),
                         "--version", "9.9.9", "--device", "cpu", "--note", "tiny budget"])
    assert code == 0
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["version"] == "9.9.9" and card["intended_use"] == INTENDED_USE
    assert card["note"] == "tiny budget" and "Buda" in card["citation"][0]
    summary = json.loads((run / "eval-test" / "summary.json").read_text())
    assert card["metrics"]["test_mean_patient_dice"] == summary["mean_patient_dice"]
    assert card["split"]["test"] == json.loads((run / "split.json").read_text())["test"]
    assert {t.dtype for t in load_file(str(out)).values() if t.is_floating_point()} == {
        torch.float16
    }
    model, loaded = load_checkpoint(out)
    assert loaded["weights_sha256"] == card["weights_sha256"]
    assert next(model.parameters()).dtype == torch.float32
