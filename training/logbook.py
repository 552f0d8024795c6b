"""Per-epoch metrics to ``RUN_DIR/metrics.csv`` and TensorBoard (``RUN_DIR/tb``); rank 0 only."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

COLUMNS = (
    "epoch",
    "step",
    "lr",
    "train_loss",
    "train_images_per_s",
    "val_loss",
    "val_mean_patient_dice",
    "val_median_patient_dice",
    "epoch_time_s",
)


class Logbook:
    """Appends one row per epoch; on resume, rows after the resumed epoch are dropped."""

    def __init__(self, run_dir: Path, resume_epoch: int = 0, resume_step: int = 0) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.csv_path = run_dir / "metrics.csv"
        self._truncate(resume_epoch)
        # purge_step drops TensorBoard events of a killed epoch that is about to be redone.
        self.tb = SummaryWriter(
            log_dir=str(run_dir / "tb"), purge_step=resume_step if resume_step else None
        )

    def _truncate(self, keep_until_epoch: int) -> None:
        rows: list[dict[str, str]] = []
        if keep_until_epoch and self.csv_path.is_file():
            with self.csv_path.open(newline="") as fh:
                rows = [r for r in csv.DictReader(fh) if int(r["epoch"]) <= keep_until_epoch]
        with self.csv_path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)

    def log_step(self, step: int, loss: float, lr: float) -> None:
        self.tb.add_scalar("train/step_loss", loss, step)
        self.tb.add_scalar("train/lr", lr, step)

    def log_epoch(self, row: dict[str, Any]) -> None:
        with self.csv_path.open("a", newline="") as fh:
            csv.DictWriter(fh, fieldnames=COLUMNS).writerow(
                {k: _fmt(row.get(k)) for k in COLUMNS}
            )
        for key, value in row.items():
            if key not in ("epoch", "step") and isinstance(value, float) and math.isfinite(value):
                group = "val" if key.startswith("val_") else "train"
                self.tb.add_scalar(f"{group}/{key.removeprefix(group + '_')}", value, row["step"])
        self.tb.flush()

    def close(self) -> None:
        self.tb.close()


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def read_metrics(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))
