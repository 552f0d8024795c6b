"""One training epoch and one validation pass; the loop in ``training.train`` calls these."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from monai.losses import DiceCELoss
from torch.utils.data import DataLoader
from tqdm import tqdm

from inference.metrics import dice_from_counts
from training.distributed import all_reduce_sum
from training.logbook import Logbook
from training.runtime import Runtime

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class NonFiniteError(RuntimeError):
    """Training produced NaN or infinite values; the run must stop."""


class NonFiniteLossError(NonFiniteError):
    """The training loss became NaN or infinite."""

    def __init__(self, epoch: int, step: int, value: float, lr: float) -> None:
        self.epoch, self.step, self.value, self.lr = epoch, step, value, lr
        super().__init__(
            f"non-finite training loss ({value}) in epoch {epoch} at optimizer step {step} "
            f"(lr {lr:.3g}); stopping. {ADVICE}"
        )


ADVICE = (
    "Lower the learning rate (--set optimizer.lr=...), lengthen the warm-up "
    "(--set training.warmup_epochs=...) or train in fp32 (--set training.amp=fp32), then start "
    "again or --resume from the last good epoch."
)


def check_finite_weights(model: torch.nn.Module, epoch: int) -> None:
    """Raise NonFiniteError if any parameter or buffer is NaN/Inf (never checkpoint those)."""
    bad = [name for name, t in model.state_dict().items()
           if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise NonFiniteError(
            f"non-finite weights after epoch {epoch} ({len(bad)} tensors, first: {bad[0]}); "
            f"stopping without saving them. {ADVICE}"
        )


def build_loss() -> LossFn:
    """Dice + binary cross-entropy on logits (MONAI DiceCELoss, sigmoid, batch Dice).

    Batch Dice (one Dice over the whole batch) keeps the loss defined and stable for batches
    that are mostly tumour-free slices.
    """
    return DiceCELoss(sigmoid=True, batch=True)


@dataclass
class EpochResult:
    loss: float
    images: int
    seconds: float
    step: int  # optimizer steps done in the whole run after this epoch

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else math.nan


def train_one_epoch(
    model: torch.nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    loss_fn: LossFn,
    runtime: Runtime,
    *,
    epoch: int,
    step: int,
    grad_accumulation: int = 1,
    logbook: Logbook | None = None,
) -> EpochResult:
    """Train over ``loader`` once; one optimizer step per ``grad_accumulation`` batches.

    Raises NonFiniteLossError (before the optimizer step) when any rank's loss is NaN/Inf.
    """
    model.train()
    n_batches = len(loader)
    loss_sum, images, start = 0.0, 0, time.perf_counter()
    bar = tqdm(loader, desc=f"epoch {epoch} train", unit="batch", disable=not runtime.is_main,
               leave=False, dynamic_ncols=True)
    optimizer.zero_grad(set_to_none=True)
    for i, batch in enumerate(bar):
        group_start = (i // grad_accumulation) * grad_accumulation
        group_size = min(grad_accumulation, n_batches - group_start)
        last_in_group = i == group_start + group_size - 1
        inputs = runtime.to_input(batch["image"])
        targets = batch["mask"].to(runtime.device, non_blocking=True)

        sync = contextlib.nullcontext()
        if runtime.distributed and not last_in_group:
            sync = model.no_sync()  # type: ignore[operator]  # DDP: reduce once per group
        with sync:
            with runtime.autocast():
                logits = model(inputs)
            loss = loss_fn(logits.float(), targets)
            value = _mean_over_ranks(runtime, loss.detach())
            if not math.isfinite(value):
                raise NonFiniteLossError(epoch, step, value, optimizer.param_groups[0]["lr"])
            (loss / group_size).backward()

        if last_in_group:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            step += 1
        loss_sum += value
        images += inputs.shape[0] * runtime.world_size
        seconds = time.perf_counter() - start
        if runtime.is_main:
            bar.set_postfix(loss=f"{value:.4f}", img_s=f"{images / seconds:.1f}")
            if logbook is not None and last_in_group:
                logbook.log_step(step, value, optimizer.param_groups[0]["lr"])
    bar.close()
    return EpochResult(loss_sum / max(1, n_batches), images, time.perf_counter() - start, step)


def _mean_over_ranks(runtime: Runtime, loss: torch.Tensor) -> float:
    if not runtime.distributed:
        return float(loss.item())
    total = all_reduce_sum(runtime, loss.float().reshape(1).clone())
    return float(total.item()) / runtime.world_size


@dataclass
class ValidationResult:
    loss: float
    patient_dice: dict[str, float]

    @property
    def mean_dice(self) -> float:
        return float(np.mean(list(self.patient_dice.values())))

    @property
    def median_dice(self) -> float:
        return float(np.median(list(self.patient_dice.values())))


@torch.no_grad()
def validate(
    model: torch.nn.Module,
    loader: DataLoader,
    loss_fn: LossFn,
    runtime: Runtime,
    patients: Sequence[str],
    *,
    epoch: int,
) -> ValidationResult:
    """Per-patient (volumetric) Dice at the model's resolution, threshold sigmoid > 0.5.

    Each rank predicts its shard of the slices; per-patient TP/FP/FN voxel counts and the loss
    are summed over ranks, so every rank returns the same result. Dice follows
    ``inference.metrics`` (tumour-free patient predicted empty -> 1.0).
    """
    model.eval()
    index = {pid: i for i, pid in enumerate(patients)}
    counts = torch.zeros(len(patients), 3, dtype=torch.float64, device=runtime.device)
    loss_total = torch.zeros(2, dtype=torch.float64, device=runtime.device)  # sum, batches
    bar = tqdm(loader, desc=f"epoch {epoch} val", unit="batch", disable=not runtime.is_main,
               leave=False, dynamic_ncols=True)
    for batch in bar:
        inputs = runtime.to_input(batch["image"])
        targets = batch["mask"].to(runtime.device, non_blocking=True)
        with runtime.autocast():
            logits = model(inputs)
        logits = logits.float()
        loss_total += torch.stack([loss_fn(logits, targets).double(), loss_total.new_ones(())])
        pred = logits > 0  # sigmoid(x) > 0.5
        truth = targets > 0.5
        per_slice = torch.stack(
            [
                (pred & truth).sum(dim=(1, 2, 3)),
                (pred & ~truth).sum(dim=(1, 2, 3)),
                (~pred & truth).sum(dim=(1, 2, 3)),
            ],
            dim=1,
        ).double()
        rows = torch.tensor([index[p] for p in batch["patient_id"]], device=runtime.device)
        counts.index_add_(0, rows, per_slice)
    bar.close()
    all_reduce_sum(runtime, counts)
    all_reduce_sum(runtime, loss_total)
    dice = {pid: dice_from_counts(*counts[i].tolist()) for pid, i in index.items()}
    loss = float(loss_total[0] / loss_total[1]) if loss_total[1] > 0 else math.nan
    return ValidationResult(loss, dice)
