"""``python -m training.train``: train the LGG segmentation model (see ``--help``).

The loop below reads top to bottom: resolve the configuration, find the patients and their
split, build data, model, optimizer and schedule, optionally restore ``resume.pt``, then per epoch
train -> validate -> log -> checkpoint -> maybe stop early. Under torchrun every rank runs it;
only rank 0 writes files, logs and progress bars.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from data.kaggle3m import DatasetError, scan_dataset
from models.checkpoint import CheckpointError
from models.network import build_model
from models.optimizers import build_optimizer
from training import checkpointing as ckpt
from training.cli import build_parser, overrides_from_args
from training.config import (
    ConfigError,
    ScheduleChangeError,
    TrainConfig,
    config_yaml,
    resolve_config,
    resumed_schedule,
    write_config,
)
from training.data_loading import build_data, load_or_make_split, select_patients
from training.distributed import (
    barrier,
    replica_check,
    setup_runtime,
    sync_buffers,
    teardown,
)
from training.engine import (
    NonFiniteError,
    build_loss,
    check_finite_weights,
    train_one_epoch,
    validate,
)
from training.logbook import Logbook
from training.rng import rng_state, seed_everything, set_rng_state
from training.runtime import Runtime
from training.schedule import CosineSchedule

logger = logging.getLogger("training.train")

EXIT_ERROR, EXIT_CONFIG, EXIT_NONFINITE = 1, 2, 3


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.out is None and (args.resume or not args.show_config):
        parser.error("--out RUN_DIR is required (except with --show-config)")
    try:
        cfg = resolve_config(args.out, args.config, overrides_from_args(args), resume=args.resume,
                             warm_restart=args.warm_restart)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.show_config:
        print(config_yaml(cfg), end="")
        return 0
    if cfg.data.data_dir is None:
        print("error: no data folder: pass --data-dir, set data.data_dir in the YAML or "
              "LGGSEG_DATA__DATA_DIR", file=sys.stderr)
        return EXIT_CONFIG
    if args.stop_after_epochs is not None and args.stop_after_epochs < 1:
        print("error: --stop-after-epochs must be >= 1", file=sys.stderr)
        return EXIT_CONFIG
    runtime = setup_runtime(cfg.training.device, cfg.training.amp, cfg.training.channels_last)
    logging.basicConfig(
        level=logging.INFO if runtime.is_main else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return train(cfg, args.out, runtime, resume=args.resume, warm_restart=args.warm_restart,
                     stop_after_epochs=args.stop_after_epochs)
    except ScheduleChangeError as exc:  # found once resume.pt is read
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except NonFiniteError as exc:
        logger.error("%s Last good checkpoint: %s", exc, _last_good(args.out))
        return EXIT_NONFINITE
    except (DatasetError, CheckpointError, ConfigError, ValueError, RuntimeError) as exc:
        logger.error("training failed: %s", exc)
        return EXIT_ERROR
    finally:
        teardown(runtime)


def _last_good(run_dir: Path) -> str:
    last = run_dir / "last.safetensors"
    return str(last) if last.is_file() else "none (no epoch completed)"


def train(
    cfg: TrainConfig,
    run_dir: Path,
    runtime: Runtime,
    *,
    resume: bool = False,
    warm_restart: bool = False,
    stop_after_epochs: int | None = None,
) -> int:
    t = cfg.training
    if t.num_threads is not None:
        torch.set_num_threads(t.num_threads)
    seed_everything(t.seed)
    if runtime.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not resume:  # a resumed run rewrites it only once resume.pt has loaded (below)
            write_config(cfg, run_dir / "config.yaml")
    barrier(runtime)

    assert cfg.data.data_dir is not None  # checked in main
    patients = select_patients(
        scan_dataset(cfg.data.data_dir, skip_bad=cfg.data.skip_bad), cfg.data.limit_patients
    )
    split = load_or_make_split(run_dir / "split.json", patients, cfg, runtime)
    data = build_data(cfg, split, patients, runtime)

    model = build_model(cfg.model).to(runtime.device)
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    optimizer = build_optimizer(cfg.optimizer.name, model.parameters(),
                                **cfg.optimizer.build_kwargs())
    steps_per_epoch = -(-len(data.train_loader) // t.grad_accumulation)
    if resume:
        progress, scheduler = restore(run_dir / "resume.pt", cfg, model, optimizer,
                                      steps_per_epoch, warm_restart=warm_restart)
        if runtime.is_main:
            write_config(cfg, run_dir / "config.yaml")
    else:
        schedule = CosineSchedule.from_config(cfg)
        progress = ckpt.Progress(schedule=schedule.to_dict())
        scheduler = schedule.scheduler(optimizer, steps_per_epoch, step=0)

    net: torch.nn.Module = model
    if runtime.distributed:
        device_ids = [runtime.device.index] if runtime.device.type == "cuda" else None
        net = DistributedDataParallel(model, device_ids=device_ids)
    logbook = Logbook(run_dir, progress.epoch, progress.step) if runtime.is_main else None
    loss_fn = build_loss()
    if cfg.data.train_on_val:
        logger.warning("final fit: the validation patients are trained on, so their Dice is "
                       "in-sample; release the last epoch (training.release --run does)")
    logger.info("training %s on %s (%s, %d process(es)), %d steps per epoch",
                cfg.model.backbone, runtime.device, runtime.precision, runtime.world_size,
                steps_per_epoch)

    started, wall_before, epochs_run = time.perf_counter(), progress.wall_time_s, 0
    stop_reason = "finished"
    patience = t.early_stopping_patience
    first_epoch = progress.epoch + 1
    if patience and progress.epochs_without_improvement >= patience:
        stop_reason, first_epoch = "already stopped early", t.epochs + 1
    for epoch in range(first_epoch, t.epochs + 1):
        epoch_start = time.perf_counter()
        data.start_epoch(epoch)
        result = train_one_epoch(
            net, data.train_loader, optimizer, scheduler, loss_fn, runtime,
            epoch=epoch, step=progress.step, grad_accumulation=t.grad_accumulation,
            logbook=logbook,
        )
        sync_buffers(runtime, model)
        check_finite_weights(model, epoch)
        progress.epoch, progress.step = epoch, result.step
        row: dict[str, Any] = {
            "epoch": epoch,
            "step": result.step,
            "lr": optimizer.param_groups[0]["lr"],
            "train_loss": result.loss,
            "train_images_per_s": result.images_per_s,
        }

        improved = False
        if epoch % t.val_every == 0 or epoch == t.epochs:
            val = validate(model, data.val_loader, loss_fn, runtime, data.val_patients,
                           epoch=epoch)
            row.update(val_loss=val.loss, val_mean_patient_dice=val.mean_dice,
                       val_median_patient_dice=val.median_dice)
            improved = progress.record_validation(epoch, val.mean_dice)
        row["epoch_time_s"] = time.perf_counter() - epoch_start
        progress.wall_time_s = wall_before + time.perf_counter() - started

        extra = replica_check(runtime, model)
        if runtime.is_main:
            assert logbook is not None
            logbook.log_epoch(row)
            card = ckpt.build_card(cfg, split, runtime, progress, _card_metrics(row), extra)
            ckpt.save_epoch(run_dir, model, card, optimizer, scheduler, progress, rng_state(),
                            best=improved)
        barrier(runtime)
        logger.info(
            "epoch %d/%d: train loss %.4f, %.1f img/s, val mean patient Dice %s (best %.4f @ %d)",
            epoch, t.epochs, result.loss, result.images_per_s,
            _fmt(row.get("val_mean_patient_dice")), progress.best_dice, progress.best_epoch,
        )
        epochs_run += 1
        if patience and progress.epochs_without_improvement >= patience:
            stop_reason = f"early stop (no better val Dice in {patience} validations)"
            break
        if stop_after_epochs is not None and epochs_run >= stop_after_epochs and epoch < t.epochs:
            stop_reason = f"paused after {epochs_run} epoch(s); continue with --resume"
            break

    if logbook is not None:
        logbook.close()
    if runtime.is_main:
        print(
            f"{stop_reason}: epoch {progress.epoch}/{t.epochs}, "
            f"best val mean patient Dice {progress.best_dice:.4f} at epoch {progress.best_epoch}, "
            f"{progress.wall_time_s:.0f} s; checkpoints in {run_dir} "
            "(best.safetensors, last.safetensors)"
        )
    return 0


def restore(
    path: Path,
    cfg: TrainConfig,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    steps_per_epoch: int,
    *,
    warm_restart: bool,
) -> tuple[ckpt.Progress, torch.optim.lr_scheduler.LRScheduler]:
    """Load ``resume.pt`` into model, optimizer and the global RNGs; returns the run's progress
    and its scheduler, positioned at the last completed step (a new one for a warm restart)."""
    state = ckpt.load_resume(path)
    progress = ckpt.Progress(**state["progress"])
    schedule = resumed_schedule(cfg, progress, warm_restart=warm_restart)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler = schedule.scheduler(optimizer, steps_per_epoch, step=progress.step)
    if not warm_restart:
        scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    logger.info("resuming after epoch %d (step %d)", progress.epoch, progress.step)
    return progress, scheduler


def _card_metrics(row: dict[str, Any]) -> dict[str, float]:
    return {k: float(row[k]) for k in ckpt.IN_TRAINING_METRICS if k in row}


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


if __name__ == "__main__":
    raise SystemExit(main())
