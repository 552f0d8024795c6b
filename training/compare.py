"""``python -m training.compare``: the paper's optimizer comparison, run on this project's data.

Every optimizer is trained with the same model, patient split, schedule, augmentation, budget
and seeds (only ``optimizer.name`` and ``training.seed`` vary). For each run the best checkpoint
(by validation Dice) is scored on the validation and test patients with ``training.evaluate``.
Writes to OUT:

    runs/<optimizer>/seed<k>/     the training runs (resumable: finished runs are skipped)
    comparison.csv                one row per run
    comparison.md                 mean +- sample std (n-1) over seeds per optimizer, with the
                                  budget stated
    learning_curves.png           in-training validation Dice per epoch (mean over seeds)

Two validation measures exist and are never mixed under one name: ``val_dice`` / ``val_iou``
(the table's "val" columns) come from ``training.evaluate``, per-patient volumetric at the masks'
own resolution, the same measure as ``test_dice``; the per-epoch validation inside training
(``metrics.csv``, at the model's input size) is the only one recorded every epoch, so the
"epochs to" column and the learning curves use it, and say so.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from data.atomic import atomic_write_json
from data.kaggle3m import DatasetError
from models.optimizers import OPTIMIZER_NAMES
from training.cli import add_config_arguments, overrides_from_args
from training.config import ConfigError, TrainConfig, load_config
from training.distributed import setup_runtime, teardown
from training.evaluate import evaluate
from training.train import train

logger = logging.getLogger(__name__)

DONE = "compare_done.json"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.compare",
        description=(
            "Train each optimizer with identical settings and seeds, score the best checkpoints "
            "on validation and test patients, and write a markdown table, a CSV and a "
            "learning-curve plot. Re-running with the same OUT skips finished runs and resumes "
            "unfinished ones."
        ),
        epilog="The base configuration comes from --config, LGGSEG_* environment variables, "
               "--data-dir, --epochs and --set KEY=VALUE, as for python -m training.train "
               "(whose --show-config lists the keys).",
    )
    parser.add_argument("--optimizers", default="adam,adamw,gc-adam,clip-adam,znorm-adam",
                        help="comma-separated registry names (default: the paper's five); "
                             f"choices: {', '.join(OPTIMIZER_NAMES)}")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per optimizer")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--dice-threshold", type=float, default=0.7,
                        help="report the first epoch whose in-training validation Dice (at "
                             "the model input size) reaches this")
    add_config_arguments(parser)  # the base configuration, the same for every run
    return parser


def run_config(base: dict[str, Any], config_file: Path | None, optimizer: str, seed: int
               ) -> TrainConfig:
    """The base configuration with only the optimizer name and the seed changed."""
    overrides = {section: dict(values) for section, values in base.items()}
    overrides.setdefault("optimizer", {})["name"] = optimizer
    overrides.setdefault("training", {})["seed"] = seed
    return load_config(config_file, overrides)


def read_curve(run_dir: Path) -> list[dict[str, float]]:
    with (run_dir / "metrics.csv").open() as fh:
        return [{k: float(v) if v not in ("", None) else math.nan for k, v in row.items()}
                for row in csv.DictReader(fh)]


def epochs_to_reach(curve: list[dict[str, float]], threshold: float) -> float:
    for row in curve:
        if row.get("val_mean_patient_dice", math.nan) >= threshold:
            return row["epoch"]
    return math.nan


def run_one(cfg: TrainConfig, run_dir: Path, data_dir: Path, threshold: float,
            device: str) -> dict[str, Any]:
    """Train (or resume, or skip when done) one run, then score its best checkpoint."""
    done = run_dir / DONE
    if done.is_file():
        return dict(json.loads(done.read_text()))
    runtime = setup_runtime(cfg.training.device, cfg.training.amp, cfg.training.channels_last)
    try:
        code = train(cfg, run_dir, runtime, resume=(run_dir / "resume.pt").is_file())
    finally:
        teardown(runtime)
    if code != 0:
        raise RuntimeError(f"training run {run_dir} failed with exit code {code}")
    start = time.monotonic()
    scores = {}
    for part in ("val", "test"):
        summary = evaluate(run_dir / "best.safetensors", data_dir, run_dir / f"eval-{part}",
                           split_name=part, split_file=run_dir / "split.json", device=device)
        scores[f"{part}_dice"] = summary["mean_patient_dice"]
        scores[f"{part}_iou"] = summary["mean_patient_iou"]
    curve = read_curve(run_dir)
    card = json.loads((run_dir / "best.json").read_text())
    last = json.loads((run_dir / "last.json").read_text())
    row = {
        "optimizer": cfg.optimizer.name,
        "seed": cfg.training.seed,
        **scores,
        "best_epoch": card["metrics"]["best_epoch"],
        "epochs_run": len(curve),
        "epochs_to_threshold": epochs_to_reach(curve, threshold),
        "wall_time_s": last["wall_time_s"],
        "scoring_time_s": time.monotonic() - start,
    }
    atomic_write_json(done, row)
    return row


def mean_std(values: Sequence[float], digits: int = 3) -> str:
    """``mean ± sample std (n-1)`` of the finite values; one value alone has no spread."""
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return "n/a"
    if len(finite) == 1:
        return f"{finite[0]:.{digits}f}"
    return f"{statistics.mean(finite):.{digits}f} ± {statistics.stdev(finite):.{digits}f}"


def markdown_table(
    rows: list[dict[str, Any]], budget: str, threshold: float, image_size: int | None = None
) -> str:
    """The comparison table: mean ± sample std (n-1) over seeds per optimizer."""
    size = f"{image_size}x{image_size}" if image_size else "model input size"
    lines = [
        f"Budget (identical for every optimizer): {budget}",
        "",
        f"| optimizer | runs | val Dice | val IoU | test Dice | test IoU | "
        f"epochs to in-training val Dice ({size}) ≥ {threshold:g} | wall time (min) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in dict.fromkeys(r["optimizer"] for r in rows):
        runs = [r for r in rows if r["optimizer"] == name]
        reached = [r["epochs_to_threshold"] for r in runs]
        n_reached = sum(not math.isnan(v) for v in reached)
        lines.append(
            f"| {name} | {len(runs)} | "
            + " | ".join(mean_std([r[k] for r in runs])
                         for k in ("val_dice", "val_iou", "test_dice", "test_iou"))
            + f" | {mean_std(reached, 1)} ({n_reached}/{len(runs)} reached) | "
            + f"{mean_std([r['wall_time_s'] / 60 for r in runs], 1)} |"
        )
    total_min = sum(r["wall_time_s"] + r.get("scoring_time_s", 0.0) for r in rows) / 60
    lines += [
        "",
        "Each cell: mean over seeds ± sample std (n-1) over seeds. val and test Dice and IoU: "
        "`training.evaluate` on the best checkpoint, the per-patient volumetric mean at the "
        "masks' own resolution, the same measure on both splits. Epochs to in-training val "
        f"Dice: the validation run inside training after each epoch (per-patient volumetric at "
        f"the model input size, {size}; the best checkpoint is chosen by it), a different "
        "measure from the val Dice column and the only one recorded every epoch. Wall time: "
        f"training of one run. Whole comparison ({len(rows)} runs, training + scoring): "
        f"{total_min:.1f} min.",
    ]
    return "\n".join(lines) + "\n"


def plot_curves(path: Path, curves: dict[str, list[list[dict[str, float]]]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, runs in curves.items():
        epochs = sorted({int(r["epoch"]) for run in runs for r in run})
        means = []
        for epoch in epochs:
            values = [r["val_mean_patient_dice"] for run in runs for r in run
                      if int(r["epoch"]) == epoch and not math.isnan(r["val_mean_patient_dice"])]
            means.append(statistics.mean(values) if values else math.nan)
        ax.plot(epochs, means, marker="o", label=name)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("in-training validation mean patient Dice\n(model input size, mean over seeds)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    names = [n.strip().lower() for n in args.optimizers.split(",") if n.strip()]
    unknown = [n for n in names if n not in OPTIMIZER_NAMES]
    if unknown or not names:
        print(f"error: unknown optimizer(s) {unknown}; choose from {', '.join(OPTIMIZER_NAMES)}",
              file=sys.stderr)
        return 2
    if args.seeds < 1:
        print("error: --seeds must be >= 1", file=sys.stderr)
        return 2
    try:
        base = overrides_from_args(args)
        # Seeds outer: a comparison stopped part-way has every optimizer for the seeds it did.
        configs = {(n, s): run_config(base, args.config, n, s)
                   for s in range(args.seeds) for n in names}
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    first = next(iter(configs.values()))
    if first.data.data_dir is None:
        print("error: no data folder: pass --data-dir (the runs are trained and scored on its "
              "patients)", file=sys.stderr)
        return 2
    budget = (f"{first.model.backbone} at {first.preprocessing.image_size}x"
              f"{first.preprocessing.image_size}, {first.training.epochs} epochs, batch "
              f"{first.training.batch_size}, lr {first.optimizer.lr:g}, "
              f"{first.data.limit_patients or 'all'} patients, seeds 0-{args.seeds - 1}")
    rows: list[dict[str, Any]] = []
    curves: dict[str, list[list[dict[str, float]]]] = {name: [] for name in names}
    try:
        for (name, seed), cfg in configs.items():
            run_dir = args.out / "runs" / name / f"seed{seed}"
            logger.info("run %s seed %d -> %s", name, seed, run_dir)
            rows.append(run_one(cfg, run_dir, first.data.data_dir, args.dice_threshold,
                                first.training.device))
            curves[name].append(read_curve(run_dir))
    except ConfigError as exc:  # e.g. a changed schedule for runs already started in OUT
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (DatasetError, RuntimeError, ValueError) as exc:
        logger.error("comparison stopped: %s (re-run the same command to resume)", exc)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "comparison.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    table = markdown_table(rows, budget, args.dice_threshold, first.preprocessing.image_size)
    (args.out / "comparison.md").write_text(table)
    plot_curves(args.out / "learning_curves.png", curves)
    print(table)
    print(f"{len(rows)} runs; results in {args.out} (comparison.md, comparison.csv, "
          "learning_curves.png)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
