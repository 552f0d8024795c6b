"""Per-epoch metrics to ``RUN_DIR/metrics.csv``, TensorBoard (``RUN_DIR/tb``) and a learning-curve
picture (``RUN_DIR/learning_curves.png``, redrawn after every epoch); rank 0 only."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from data.atomic import atomic_write_bytes

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
        self.plot_path = run_dir / "learning_curves.png"
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
        plot_learning_curves(read_metrics(self.csv_path), self.plot_path)

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


def _series(rows: list[dict[str, str]], key: str) -> tuple[list[int], list[float]]:
    points = [(int(r["epoch"]), float(r[key])) for r in rows if r.get(key)]
    return [e for e, _ in points], [v for _, v in points]


def plot_learning_curves(rows: list[dict[str, str]], path: Path) -> None:
    """Loss (train, val) and validation Dice per epoch, side by side, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (loss_ax, dice_ax) = plt.subplots(1, 2, figsize=(10, 3.6), dpi=100)
    for key, label, colour in (("train_loss", "train", "#0072B2"), ("val_loss", "validation",
                                                                     "#D55E00")):
        epochs, values = _series(rows, key)
        loss_ax.plot(epochs, values, marker="o", ms=3, label=label, color=colour)
    loss_ax.set(xlabel="epoch", ylabel="Dice + BCE loss", title="Loss")
    loss_ax.legend()
    for key, label, colour in (("val_mean_patient_dice", "mean", "#009E73"),
                               ("val_median_patient_dice", "median", "#CC79A7")):
        epochs, values = _series(rows, key)
        dice_ax.plot(epochs, values, marker="o", ms=3, label=label, color=colour)
    dice_ax.set(xlabel="epoch", ylabel="per-patient Dice", ylim=(0, 1),
                title="Validation Dice (in training, model resolution)")
    dice_ax.legend(loc="lower right")
    for ax in (loss_ax, dice_ax):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
