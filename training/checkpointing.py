"""What a run writes to keep its results and to continue after a crash.

- ``best.safetensors`` / ``last.safetensors`` (+ ``.json`` model card) through
  ``models.checkpoint.save_checkpoint``: the card alone rebuilds model and preprocessing.
- ``resume.pt``: model, optimizer, scheduler, epoch, step, RNG states, best metric and
  early-stopping counter. Only tensors, dicts, lists, numbers and strings, so it loads with
  ``torch.load(..., weights_only=True)``. It is written last, atomically: it is the commit point
  of an epoch, and ``--resume`` continues from the epoch it names.
"""

from __future__ import annotations

import io
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from data.atomic import atomic_write_bytes
from data.split import Split
from models.card import FORMAT, INTENDED_USE, ModelCard
from models.checkpoint import save_checkpoint
from training.config import TrainConfig
from training.provenance import hardware, library_versions
from training.runtime import Runtime

logger = logging.getLogger(__name__)

RESUME_FORMAT = "lggseg-resume/1"
# What the loop records in every epoch's card (validation at the model's resolution, training
# precision); a release keeps these apart from the scores of the released file.
IN_TRAINING_METRICS = ("train_loss", "val_loss", "val_mean_patient_dice", "val_median_patient_dice")
DATA_SOURCE = (
    "LGG MRI segmentation (kaggle_3m; Buda, Saha, Mazurowski 2019): FLAIR-abnormality masks of "
    "TCGA-LGG patients from The Cancer Imaging Archive, used under its data usage policy"
)


@dataclass
class Progress:
    """Where the run stands after a completed epoch (1-based; 0 = nothing done yet)."""

    epoch: int = 0
    step: int = 0
    best_dice: float = -1.0
    best_epoch: int = 0
    epochs_without_improvement: int = 0
    wall_time_s: float = 0.0
    schedule: dict[str, Any] = field(default_factory=dict)
    """The run's own LR schedule (``training.schedule.CosineSchedule.to_dict``); empty in
    resume files written before it was recorded."""
    warm_restarts: list[dict[str, Any]] = field(default_factory=list)
    """Schedules started later by ``--warm-restart``, oldest first; the last one is in force."""

    def record_validation(self, epoch: int, mean_dice: float) -> bool:
        """Count a validation for early stopping; True when it is the best so far."""
        if mean_dice > self.best_dice:
            self.best_dice, self.best_epoch = mean_dice, epoch
            self.epochs_without_improvement = 0
            return True
        self.epochs_without_improvement += 1
        return False


def build_card(
    cfg: TrainConfig,
    split: Split,
    runtime: Runtime,
    progress: Progress,
    epoch_metrics: dict[str, float],
    extra: dict[str, Any] | None = None,
) -> ModelCard:
    """The model card stored beside every checkpoint (MONAI bundle metadata style)."""
    return ModelCard.from_json({
        "format": FORMAT,
        "name": f"lggseg-{cfg.model.backbone}-unet-{cfg.optimizer.name}",
        "model": cfg.model,
        "preprocessing": cfg.preprocessing,
        "config": cfg.to_dict(),
        "split": split.to_dict(),
        "epoch": progress.epoch,
        "step": progress.step,
        "metrics": {
            "best_epoch": progress.best_epoch,
            "best_val_mean_patient_dice": progress.best_dice,
            **epoch_metrics,
        },
        "schedule": {**progress.schedule, "warm_restarts": progress.warm_restarts},
        "wall_time_s": round(progress.wall_time_s, 1),
        "versions": library_versions(),
        "hardware": hardware(runtime),
        "data_source": DATA_SOURCE,
        "input": "3 x S x S float32: pre-contrast, FLAIR, post-contrast after data.preprocessing",
        "output": "1 x S x S logits; sigmoid > 0.5 = FLAIR abnormality (tumour)",
        "intended_use": INTENDED_USE,
        **(extra or {}),
    })


def save_epoch(
    run_dir: Path,
    model: torch.nn.Module,
    card: ModelCard,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    progress: Progress,
    rng: dict[str, Any],
    *,
    best: bool,
) -> None:
    """Everything an epoch leaves behind, in crash-safe order: best, last, then resume.pt."""
    for name in ("best", "last") if best else ("last",):
        save_checkpoint(run_dir / f"{name}.safetensors", model, card)
    save_resume(run_dir / "resume.pt", model, optimizer, scheduler, progress, rng)


def save_resume(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    progress: Progress,
    rng: dict[str, Any],
) -> None:
    state = {
        "format": RESUME_FORMAT,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "progress": asdict(progress),
        "rng": rng,
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_resume(path: Path) -> dict[str, Any]:
    """Read ``resume.pt`` without unpickling code; raises RuntimeError with what to do."""
    if not path.is_file():
        raise RuntimeError(
            f"--resume: {path} not found; the run has not completed an epoch yet "
            "(start it again without --resume)"
        )
    if path.stat().st_size == 0:
        raise RuntimeError(
            f"--resume: cannot read {path}: the file is empty; restore it, or start the run "
            "again without --resume"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a bad or unsafe file
        reason = str(exc).strip() or type(exc).__name__
        raise RuntimeError(f"--resume: cannot read {path}: {reason}") from exc
    if not isinstance(state, dict) or state.get("format") != RESUME_FORMAT:
        raise RuntimeError(f"--resume: {path} is not a {RESUME_FORMAT} file")
    return state
