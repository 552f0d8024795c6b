"""``python -m training.compare`` on the synthetic kaggle_3m folder, and its table maths."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from training.compare import epochs_to_reach, main, markdown_table, mean_std


def test_mean_std_and_threshold_epochs() -> None:
    assert mean_std([0.5, 0.7]) == "0.600 ± 0.141"
    assert mean_std([0.25, math.nan]) == "0.250"
    assert mean_std([math.nan]) == "n/a"
    assert mean_std([2.0, 3.0], 1) == "2.5 ± 0.7"
    curve = [{"epoch": 1.0, "val_mean_patient_dice": 0.2}, {"epoch": 2.0,
             "val_mean_patient_dice": 0.75}, {"epoch": 3.0, "val_mean_patient_dice": 0.9}]
    assert epochs_to_reach(curve, 0.7) == 2.0
    assert math.isnan(epochs_to_reach(curve, 0.95))


def test_markdown_table_groups_runs_by_optimizer() -> None:
    rows = [
        dict(optimizer="adam", seed=s, val_dice=d, val_iou=d - 0.1, test_dice=d, test_iou=d - 0.1,
             epochs_to_threshold=e, wall_time_s=120.0)
        for s, d, e in ((0, 0.6, 3.0), (1, 0.8, math.nan))
    ] + [dict(optimizer="znorm-adam", seed=0, val_dice=0.9, val_iou=0.8, test_dice=0.85,
              test_iou=0.75, epochs_to_threshold=2.0, wall_time_s=60.0)]
    table = markdown_table(rows, "resnet18 at 32x32, 2 epochs", 0.7, image_size=32)
    assert table.startswith("Budget (identical for every optimizer): resnet18 at 32x32")
    # One measure per name: the val columns are training.evaluate's, the "epochs to" column
    # names the in-training validation it counts; every ± is a labelled sample std.
    header = table.splitlines()[2]
    assert "| val Dice | val IoU | test Dice | test IoU |" in header
    assert "epochs to in-training val Dice (32x32) ≥ 0.7" in header
    assert "± sample std (n-1)" in table and "`training.evaluate`" in table
    adam = next(line for line in table.splitlines() if line.startswith("| adam |"))
    assert "| 2 | 0.700 ± 0.141 |" in adam and "3.0 (1/2 reached)" in adam
    assert adam.endswith("| 2.0 ± 0.0 |")
    znorm = next(line for line in table.splitlines() if line.startswith("| znorm-adam |"))
    assert "| 1 | 0.900 | 0.800 | 0.850 | 0.750 |" in znorm


def test_unknown_optimizer_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["--optimizers", "adam,lamb", "--data-dir", str(tmp_path), "--out",
                 str(tmp_path / "out")])
    assert code == 2
    assert "lamb" in capsys.readouterr().err


def test_a_data_folder_is_required(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["--optimizers", "adam", "--out", str(tmp_path / "out")]) == 2
    assert "no data folder: pass --data-dir" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_compare_two_optimizers_end_to_end(synthetic_lgg: Path, tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    argv = [
        "--optimizers", "adam,znorm-adam", "--seeds", "1", "--data-dir", str(synthetic_lgg),
        "--out", str(out), "--epochs", "2", "--set", "preprocessing.image_size=32",
        "--set", "training.batch_size=4", "--set", "model.backbone=resnet18",
        "--set", "training.device=cpu", "--set", "optimizer.lr=0.003",
        "--set", "data.num_workers=0", "--set", "training.warmup_epochs=0.5",
        "--set", "training.early_stopping_patience=0", "--set", "training.val_batch_size=8",
    ]
    assert main(argv) == 0
    with (out / "comparison.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["optimizer"] for r in rows] == ["adam", "znorm-adam"]
    for row in rows:
        assert 0.0 <= float(row["test_dice"]) <= 1.0
        assert int(row["epochs_run"]) == 2
    # Identical split and budget, different optimizer: the split files are the same.
    split_a = (out / "runs/adam/seed0/split.json").read_text()
    assert split_a == (out / "runs/znorm-adam/seed0/split.json").read_text()
    assert "2 epochs" in (out / "comparison.md").read_text()
    assert (out / "learning_curves.png").stat().st_size > 1000
    # A second invocation reuses the finished runs and writes the same table.
    before = (out / "comparison.csv").read_text()
    assert main(argv) == 0
    assert (out / "comparison.csv").read_text() == before
