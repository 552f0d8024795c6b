"""``python -m training.release``: package a checkpoint as the bundled release model, and score
the file it wrote.

1. Read the source checkpoint (a run's ``best.safetensors``, or any checkpoint with a card that
   holds its patient split).
2. Optionally repair it: ``--recalibrate-batchnorm N`` re-estimates the running statistics of
   BatchNorm layers whose stored statistics are not finite, from N training slices of the
   card's split (releases 0.1.0 and 0.2.0 were cast to fp16, which turned a running variance of
   1e6-1e7 into infinity). Without the flag, non-finite tensors are refused.
3. Write the release: parameters in ``--dtype`` (bfloat16 by default), buffers in float32, a
   model card in the MONAI-bundle spirit (version, data source and citation, split, config,
   preprocessing, versions, hardware, wall time, intended use).
4. Score **the file just written** through ``inference.Predictor`` (``training.evaluate``, the
   same path as the API and the viewer) on the validation and test patients, and put those
   figures in the card. The weights are not touched after scoring, so the card describes the
   exact bytes users get.

    python -m training.release --run runs/release --data-dir ../shared/data/lgg/kaggle_3m \\
        --version 0.3.0
    python -m training.release --checkpoint old.safetensors --recalibrate-batchnorm 256 \\
        --data-dir ../shared/data/lgg/kaggle_3m --version 0.2.1
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from data.dataset import SliceDataset
from data.kaggle3m import DatasetError, PatientRecord, scan_dataset
from data.preprocessing import PreprocessingConfig
from inference.engines import ENGINES, PRECISIONS
from models import BUNDLED_CHECKPOINT
from models.card import INTENDED_USE, ModelCard
from models.checkpoint import (
    CheckpointError,
    build_from_card,
    load_card,
    nonfinite_tensors,
    read_checkpoint,
    save_checkpoint,
    write_card,
)
from training.checkpointing import DATA_SOURCE, IN_TRAINING_METRICS
from training.evaluate import evaluate

logger = logging.getLogger("training.release")

CITATION = [
    "M. Buda, A. Saha, M. A. Mazurowski, Association of genomic subtypes of lower-grade gliomas "
    "with shape features automatically extracted by a deep learning algorithm, Computers in "
    "Biology and Medicine 109 (2019)",
    "M. A. Mazurowski et al., J. Neuro-Oncology (2017)",
    "J. Yun, ZNorm: Z-Score Gradient Normalization Accelerating Skip-Connected Network Training "
    "without Architectural Modification, arXiv:2408.01215",
]
SCORED_PARTS = ("val", "test")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.release", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", type=Path, metavar="RUN_DIR",
                        help="training run folder: releases RUN_DIR/best.safetensors, or "
                             "last.safetensors after a final fit (data.train_on_val)")
    source.add_argument("--checkpoint", type=Path, metavar="CKPT",
                        help="any checkpoint whose card holds its patient split")
    source.add_argument("--rescore", type=Path, metavar="RELEASED",
                        help="only re-score an already released file with the Predictor's "
                             "default settings and rewrite its card's metrics")
    parser.add_argument("--data-dir", type=Path, required=True, help="kaggle_3m folder")
    parser.add_argument("--out", type=Path, default=BUNDLED_CHECKPOINT,
                        help=f"where to write the weights (default: {BUNDLED_CHECKPOINT.name})")
    parser.add_argument("--version", help="release version for the card (required to release)")
    parser.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16",
                        help="parameters' precision on disk (default bfloat16, half the size; "
                             "buffers always float32)")
    parser.add_argument("--recalibrate-batchnorm", type=int, default=0, metavar="N",
                        help="re-estimate non-finite BatchNorm statistics from N training slices "
                             "(default 0: refuse such a checkpoint)")
    parser.add_argument("--reports", type=Path, metavar="DIR",
                        help="where the evaluation reports go (default runs/release-VERSION)")
    parser.add_argument("--device", default="auto", help="device for the scoring")
    parser.add_argument("--engine", choices=list(ENGINES), default="auto",
                        help="engine for the scoring (default auto: what the API, the viewer "
                             "and the CLI run by default on this machine)")
    parser.add_argument("--precision", choices=list(PRECISIONS), default="auto",
                        help="precision for the scoring (default auto, as those entry points)")
    parser.add_argument("--note", default=None, help="a sentence for the card, e.g. the budget")
    return parser


def run_checkpoint(run_dir: Path) -> Path:
    """The checkpoint of ``run_dir`` to release: the epoch with the best validation Dice, or the
    last epoch of a final fit, whose validation patients were trained on (in-sample Dice
    cannot choose an epoch)."""
    last = run_dir / "last.safetensors"
    if last.is_file() and load_card(last).trained_on_val:
        return last
    return run_dir / "best.safetensors"


def release_card(card: ModelCard, version: str, note: str | None) -> ModelCard:
    """The release model card: the source's provenance plus data source, citation, use."""
    keys = ("format", "model", "preprocessing", "config", "split", "epoch", "step", "versions",
            "hardware", "wall_time_s", "input", "output", "schedule", "repairs")
    source = card.to_json()
    out = {k: source[k] for k in keys if k in source}
    # The loop's own figures: kept apart from ``metrics``, which only holds the released file's.
    recorded = card.metrics.model_dump(mode="json") if card.metrics else {}
    training = {k: v for k, v in recorded.items() if k in IN_TRAINING_METRICS}
    out.update(name="lgg-resnet50-unet-znorm", version=version, data_source=DATA_SOURCE,
               citation=CITATION, intended_use=INTENDED_USE, metrics={}, training_metrics=training)
    if note:
        out["note"] = note
    return ModelCard.from_json(out)


def scored_metrics(
    summaries: dict[str, dict[str, Any]], val_in_sample: bool = False
) -> dict[str, Any]:
    """The card's ``metrics`` from ``training.evaluate`` summaries of the released file;
    ``val_in_sample`` marks validation figures of a model trained on those patients."""
    metrics: dict[str, Any] = {}
    for part, summary in summaries.items():
        for key, value in summary.items():
            if key.endswith(("_patient_dice", "_patient_iou")):
                metrics[f"{part}_{key}"] = value
        metrics[f"{part}_patients"] = summary["patients"]
        metrics[f"{part}_patient_dice"] = summary["patient_dice"]
    first = next(iter(summaries.values()))
    if "val" in summaries and val_in_sample:
        metrics["val_in_sample"] = True
    metrics.update(
        convention=first["convention"],
        std="sample standard deviation over patients",
        scored_with={k: first[k] for k in ("model", "engine", "precision", "tta", "threshold",
                                           "cpu") if k in first},
    )
    return metrics


def rescore(
    weights: Path, data_dir: Path, reports: Path, device: str = "auto", *,
    engine: str = "auto", precision: str = "auto",
) -> dict[str, Any]:
    """Score a released file on its card's validation and test patients through the Predictor
    with its default settings (what the API, the viewer and the CLI run on this machine), and
    make those its card's ``metrics``; the weights are not touched."""
    summaries = {part: evaluate(weights, data_dir, reports / f"eval-{part}", split_name=part,
                                device=device, engine=engine, precision=precision)
                 for part in SCORED_PARTS}
    card = load_card(weights)
    metrics = scored_metrics(summaries, card.trained_on_val)
    write_card(weights, card.with_updates(metrics=metrics))
    return metrics


def calibration_batches(
    patients: list[PatientRecord], preprocessing: PreprocessingConfig, count: int,
    batch_size: int = 16,
) -> list[torch.Tensor]:
    """``count`` training slices, evenly spaced over the patients' slices, preprocessed."""
    dataset = SliceDataset(patients, preprocessing)
    picks = np.unique(np.linspace(0, len(dataset) - 1, min(count, len(dataset))).round())
    images = [dataset[int(i)]["image"] for i in picks]
    return [torch.stack(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]


@torch.no_grad()
def recalibrate_batchnorm(
    model: torch.nn.Module, names: Sequence[str], batches: Sequence[torch.Tensor]
) -> None:
    """Re-estimate the running mean and variance of the named BatchNorm modules.

    Only those modules run in training mode, with a cumulative average (momentum None) over
    ``batches``; every other layer keeps its trained statistics. Float32 throughout.
    """
    modules = [model.get_submodule(name) for name in names]
    if not all(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in modules):
        raise ValueError("only BatchNorm statistics can be re-estimated")
    model.eval()
    momenta = []
    for module in modules:
        module.reset_running_stats()
        momenta.append(module.momentum)
        module.momentum = None
        module.train()
    for batch in batches:
        model(batch.float())
    for module, momentum in zip(modules, momenta, strict=True):
        module.momentum = momentum
        module.eval()


def repair(
    model: torch.nn.Module, bad: list[str], card: ModelCard, data_dir: Path, slices: int
) -> dict[str, Any]:
    """Re-estimate the BatchNorm statistics named in ``bad``; returns the card's record of it."""
    buffers = ("running_mean", "running_var")
    modules = sorted({name.rsplit(".", 1)[0] for name in bad})
    if not all(name.endswith(buffers) for name in bad):
        raise CheckpointError(f"non-finite values outside BatchNorm statistics: {bad}; "
                              "this checkpoint cannot be repaired")
    if card.split is None:
        raise CheckpointError("the card has no patient split: no training slices to re-estimate "
                              "BatchNorm statistics from")
    split = card.split.to_split()
    train = split.select(scan_dataset(data_dir), "train")
    if not train:
        raise CheckpointError(f"none of the card's training patients is in {data_dir}")
    batches = calibration_batches(train, card.preprocessing, slices)
    recalibrate_batchnorm(model, modules, batches)
    used = sum(len(b) for b in batches)
    logger.info("re-estimated %s from %d training slices", ", ".join(modules), used)
    return {"batchnorm_recalibrated": modules, "from_training_slices": used,
            "reason": "non-finite running statistics in the source checkpoint"}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.rescore is not None:
        return _rescore_only(args)
    if not args.version:
        print("error: --version is required to release", file=sys.stderr)
        return 2
    source = args.checkpoint or run_checkpoint(args.run)
    reports = args.reports or Path("runs") / f"release-{args.version}"
    try:
        state, card = read_checkpoint(source)
        if card.split is None:
            raise CheckpointError(f"{source.name}'s card has no patient split: cannot tell "
                                  "which patients are held out for scoring")
        model = build_from_card(card, state, source.name)
        bad = nonfinite_tensors(state)
        repairs: list[dict[str, Any]] = list(card.repairs or [])
        if bad and args.recalibrate_batchnorm < 1:
            raise CheckpointError(f"{source.name} holds non-finite values in {bad}; "
                                  "pass --recalibrate-batchnorm N to re-estimate them")
        if bad:
            repairs.append({"from": source.name, "source_sha256": card.weights_sha256,
                            **repair(model, bad, card, args.data_dir, args.recalibrate_batchnorm)})
        new_card = release_card(card.with_updates(repairs=repairs) if repairs else card,
                                args.version, args.note)
        save_checkpoint(args.out, model, new_card, dtype=getattr(torch, args.dtype))
        scores = rescore(args.out, args.data_dir, reports, args.device, engine=args.engine,
                         precision=args.precision)
    except (CheckpointError, DatasetError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    sha = str(load_card(args.out).weights_sha256)[:12]
    print(f"released {args.out} (parameters {args.dtype}, sha256 {sha}); scored through the "
          f"Predictor: test mean patient Dice {scores['test_mean_patient_dice']:.4f} over "
          f"{scores['test_patients']} patients, val {scores['val_mean_patient_dice']:.4f}"
          f"{' (in-sample: final fit)' if scores.get('val_in_sample') else ''}; "
          f"reports in {reports}")
    return 0


def _rescore_only(args: argparse.Namespace) -> int:
    reports = args.reports or Path("runs") / f"rescore-{args.rescore.stem}"
    try:
        scores = rescore(args.rescore, args.data_dir, reports, args.device,
                         engine=args.engine, precision=args.precision)
    except (CheckpointError, DatasetError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    used = scores["scored_with"]
    print(f"re-scored {args.rescore} ({used.get('engine', 'torch')} {used['precision']}): test "
          f"mean patient Dice {scores['test_mean_patient_dice']:.4f}, val "
          f"{scores['val_mean_patient_dice']:.4f}"
          f"{' (in-sample: final fit)' if scores.get('val_in_sample') else ''}; "
          f"card updated, reports in {reports}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
