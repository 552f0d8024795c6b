"""A short real training run on the LGG data: checkpoints reload and evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data.split import Split
from models.checkpoint import load_checkpoint
from training.evaluate import main as evaluate_main
from training.logbook import read_metrics
from training.train import main as train_main

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.realdata
def test_short_real_run_trains_checkpoints_and_evaluates(lgg_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    code = train_main([
        "--config", str(REPO / "configs" / "smoke.yaml"),
        "--data-dir", str(lgg_dir), "--out", str(run),
        "--epochs", "2", "--set", "data.limit_patients=4", "--set", "preprocessing.image_size=64",
        "--set", "model.backbone=resnet18", "--set", "data.num_workers=0",
        "--set", "training.device=cpu",
    ])
    assert code == 0
    split = Split.from_json(run / "split.json")
    assert len(split.train) + len(split.val) + len(split.test) == 4
    assert not set(split.train) & (set(split.val) | set(split.test))  # patient-level split

    rows = read_metrics(run / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert all(0.0 <= float(r["val_mean_patient_dice"]) <= 1.0 for r in rows)
    assert float(rows[1]["train_loss"]) < float(rows[0]["train_loss"])  # it learns something

    for name in ("best", "last"):
        model, card = load_checkpoint(run / f"{name}.safetensors")
        assert card.model.backbone == "resnet18"
        assert card.preprocessing.image_size == 64
        assert card.split is not None and card.split.test == split.test
    assert card.epoch == 2

    out = tmp_path / "eval"
    code = evaluate_main(["--checkpoint", str(run / "best.safetensors"),
                          "--data-dir", str(lgg_dir), "--out", str(out), "--split", "val",
                          "--device", "cpu"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert 0.0 <= summary["mean_patient_dice"] <= 1.0
    assert summary["patients"] == len(split.val)
