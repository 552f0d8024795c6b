"""``python -m training.evaluate``: per-patient (volumetric) scores of a checkpoint.

The model runs through ``inference.Predictor``, the same object (same preprocessing, precision
rule and threshold) that serves the API, the viewer and ``inference.predict``, so a score here
is a score of what users get. Every slice of the chosen patients is predicted at its own size,
the slices are stacked into one volume per patient, and Dice, IoU, precision, recall and HD95
are computed on that volume with ``monai.metrics`` (optionally after keeping the largest 3-D
connected component).

Which patients: ``--split test|val|train|all`` picks from the patient split stored in the card
(or ``--split-file``); ``--split folder`` scores every patient folder in ``--data-dir``, for an
external cohort, and warns about any patient the model was trained or tuned on.

Conventions for empty masks (see ``inference.metrics``):
  - Dice / IoU: truth and prediction both empty -> 1.0; exactly one empty -> 0.0.
  - precision is NaN when nothing is predicted; recall is NaN when the truth is empty.
  - HD95 (pixels; slice spacing taken as one pixel) is NaN when either volume is empty.
  - NaN values are left out of means/medians/stds; each statistic reports its count ``n``.

Outputs: OUT/per_patient.csv, OUT/summary.json (``mean_patient_dice``, ``median_patient_dice``,
``std_patient_dice``, ``mean_patient_iou``, ... and the full statistics), OUT/per_patient_dice.png,
and a table on stdout.
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from data.atomic import atomic_write_json
from data.kaggle3m import DatasetError, PatientRecord, read_image, read_mask, scan_dataset
from data.split import PARTS, Split
from inference.engines import ENGINES, PRECISIONS
from inference.metrics import METRICS, summarize, volume_metrics
from inference.postprocessing import PostProcessing
from inference.predictor import Predictor
from models.card import ModelCard
from models.checkpoint import CheckpointError
from training.runtime import cpu_model, resolve_device

logger = logging.getLogger("training.evaluate")

CONVENTION = (
    "Dice/IoU: both empty -> 1, one empty -> 0; precision NaN if nothing predicted; recall NaN "
    "if truth empty; HD95 (pixels) NaN if either empty; NaN excluded from statistics; std is "
    "the sample standard deviation over patients (n - 1)"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.evaluate",
        description=(
            "Per-patient volumetric Dice, IoU, precision, recall and HD95 of a checkpoint on a "
            "kaggle_3m folder. Empty-mask convention: " + CONVENTION + "."
        ),
        epilog="Exit codes: 0 success, 1 error (missing data, bad checkpoint or split).",
    )
    parser.add_argument("--checkpoint", type=Path, required=True, metavar="CKPT",
                        help="weights file (e.g. RUN_DIR/best.safetensors) with its .json card")
    parser.add_argument("--data-dir", type=Path, required=True, metavar="DIR",
                        help="kaggle_3m folder (TCGA_* patient folders)")
    parser.add_argument("--out", type=Path, required=True, metavar="OUT",
                        help="folder for per_patient.csv, summary.json, per_patient_dice.png")
    parser.add_argument("--split", choices=[*PARTS, "all", "folder"], default="test",
                        help="which patients to score: a part of the card's split (default "
                             "test; all = train+val+test), or folder = every patient folder in "
                             "--data-dir (an external cohort; warns about patients the model "
                             "was trained or tuned on)")
    parser.add_argument("--split-file", type=Path, metavar="SPLIT.json",
                        help="patient split (default: the split stored in the checkpoint card)")
    parser.add_argument("--largest-component", action="store_true",
                        help="keep only the largest 3-D connected component of each prediction")
    parser.add_argument("--min-component-voxels", type=int, default=0, metavar="N",
                        help="drop 3-D connected components under N voxels (default 0: keep all)")
    parser.add_argument("--core-probability", type=float, default=None, metavar="P",
                        help="drop 3-D components with no voxel of probability >= P")
    parser.add_argument("--threshold", type=float, default=0.5,
                        help="probability threshold for tumour (default 0.5)")
    parser.add_argument("--batch-size", type=int, default=16, help="slices per forward pass")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="where to run the model (auto: CUDA when available)")
    parser.add_argument("--engine", choices=list(ENGINES), default="auto",
                        help="what runs the network: auto (OpenVINO on CPU where installed, "
                             "torch on CUDA), torch (the reference) or openvino")
    parser.add_argument("--precision", choices=list(PRECISIONS), default="auto",
                        help="auto (int8 where a validated int8 model lies beside the weights, "
                             "bf16 where the hardware has it natively, else fp32), fp32, bf16, "
                             "or int8 (openvino engine, training.quantize's model)")
    parser.add_argument("--tta", action="store_true",
                        help="average with a horizontally flipped pass (twice the compute)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not 0.0 < args.threshold < 1.0 or args.batch_size < 1:
        print("error: --threshold must lie in (0, 1) and --batch-size be >= 1", file=sys.stderr)
        return 1
    try:
        summary = evaluate(
            args.checkpoint,
            args.data_dir,
            args.out,
            split_name=args.split,
            split_file=args.split_file,
            postprocessing=PostProcessing(args.largest_component, args.min_component_voxels,
                                          args.core_probability),
            threshold=args.threshold,
            batch_size=args.batch_size,
            device=args.device,
            precision=args.precision,
            tta=args.tta,
            engine=args.engine,
        )
    except (CheckpointError, DatasetError, ValueError, RuntimeError) as exc:
        logger.error("evaluation failed: %s", exc)
        return 1
    print(
        f"{summary['patients']} {args.split} patients: mean patient Dice "
        f"{summary['mean_patient_dice']:.4f} (median {summary['median_patient_dice']:.4f}, "
        f"sample std {_num(summary['std_patient_dice'])}); results in {args.out}"
    )
    return 0


def evaluate(
    checkpoint: Path,
    data_dir: Path,
    out: Path,
    *,
    split_name: str = "test",
    split_file: Path | None = None,
    postprocessing: PostProcessing | None = None,
    threshold: float = 0.5,
    batch_size: int = 16,
    device: str = "auto",
    precision: str = "auto",
    tta: bool = False,
    engine: str = "auto",
) -> dict[str, Any]:
    """Score ``checkpoint`` on some patients through the Predictor; writes OUT/, returns the
    summary."""
    post = postprocessing or PostProcessing()
    predictor = Predictor.from_checkpoint(
        checkpoint, resolve_device(device), precision=precision,  # type: ignore[arg-type]
        tta=tta, threshold=threshold, batch_size=batch_size, engine=engine,
    )
    patients = scan_dataset(data_dir)
    chosen = choose_patients(predictor.card, split_file, patients, split_name)
    logger.info("scoring %d %s patients with %s on %s (%s %s%s)", len(chosen), split_name,
                predictor.model_version, predictor.device, predictor.engine.name,
                predictor.precision,
                ", flip TTA" if tta else "")

    rows = []
    for patient in tqdm(chosen, desc="patients", unit="patient"):
        images = [read_image(s.image_path) for s in patient.slices]
        truth = np.stack([read_mask(s.mask_path) for s in patient.slices])
        # The Predictor answers H x W x Z; the metrics take the slice axis first.
        volume = predictor.predict_volume(images)
        prediction = post.apply(np.moveaxis(volume.masks, 2, 0),
                                np.moveaxis(volume.probabilities, 2, 0))
        rows.append({
            "patient_id": patient.patient_id,
            "slices": len(patient.slices),
            "true_voxels": int(truth.sum()),
            "predicted_voxels": int(prediction.sum()),
            **volume_metrics(prediction, truth),
        })

    summary = _summary(rows, checkpoint, split_name, post, predictor)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "per_patient.csv", rows)
    atomic_write_json(out / "summary.json", summary)
    plot_dice(out / "per_patient_dice.png", rows, summary["mean_patient_dice"], split_name)
    print(format_table(rows, summary))
    return summary


def choose_patients(
    card: ModelCard,
    split_file: Path | None,
    patients: list[PatientRecord],
    name: str,
) -> list[PatientRecord]:
    """The patients to score: a part of the split, all of it, or every folder (``folder``)."""
    if name == "folder":
        if not patients:
            raise ValueError("no patient folders to score")
        try:
            split = _load_split(card, split_file)
        except ValueError:
            logger.warning("the checkpoint card has no patient split: cannot tell whether any of "
                           "these patients were used in training")
            return list(patients)
        seen = set(split.part("train")) | set(split.part("val"))
        overlap = sorted(p.patient_id for p in patients if p.patient_id in seen)
        if overlap:
            logger.warning(
                "%d of the %d patients were used to train or tune this model (its train or "
                "validation split): their scores are optimistic, not external validation: %s",
                len(overlap), len(patients), ", ".join(overlap),
            )
        return list(patients)
    split = _load_split(card, split_file)
    if name == "all":
        return [p for part in PARTS for p in split.select(patients, part)]
    chosen = split.select(patients, name)
    if not chosen:
        raise ValueError(f"the {name} part of the split is empty")
    return chosen


def _load_split(card: ModelCard, split_file: Path | None) -> Split:
    if split_file is not None:
        return Split.from_json(split_file)
    if card.split is None:
        raise ValueError("the checkpoint card has no split; pass --split-file RUN_DIR/split.json "
                         "or --split folder")
    return card.split.to_split()


def _summary(
    rows: list[dict[str, Any]],
    checkpoint: Path,
    split_name: str,
    post: PostProcessing,
    predictor: Predictor,
) -> dict[str, Any]:
    stats = summarize(rows)
    flat: dict[str, Any] = {}
    for name in METRICS:
        for stat in ("mean", "median", "std"):
            flat[f"{stat}_patient_{name}"] = stats[name][stat]
    return {
        **flat,
        "patients": len(rows),
        "split": split_name,
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": predictor.card.weights_sha256,
        "model": predictor.model_version,
        "largest_component": post.largest_component,
        "postprocessing": post.describe(),
        "threshold": predictor.threshold,
        "tta": predictor.tta,
        "device": str(predictor.device),
        "precision": predictor.precision,
        "engine": predictor.engine.name,
        "cpu": cpu_model(),
        "runtime": predictor.runtime(),
        "convention": CONVENTION,
        "statistics": stats,
        "patient_dice": {row["patient_id"]: row["dice"] for row in rows},
    }


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    columns = ["patient_id", "slices", "true_voxels", "predicted_voxels", *METRICS]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(row[k]) for k in columns})


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    return value


def plot_dice(path: Path, rows: list[dict[str, Any]], mean: float | None, split: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ordered = sorted(rows, key=lambda r: r["dice"])
    fig, ax = plt.subplots(figsize=(max(6.0, 0.3 * len(rows) + 2), 4), dpi=100)
    ax.bar(range(len(ordered)), [r["dice"] for r in ordered], color="#0072B2")
    if mean is not None:
        ax.axhline(mean, color="#D55E00", linestyle="--", label=f"mean {mean:.3f}")
        ax.legend(loc="lower right")
    ax.set_xticks(range(len(ordered)))
    ax.set_xticklabels([r["patient_id"] for r in ordered], rotation=90, fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("volumetric Dice")
    ax.set_title(f"Per-patient Dice ({split}, {len(rows)} patients)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def format_table(rows: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    header = f"{'patient':<28} {'slices':>6} " + " ".join(f"{m:>9}" for m in METRICS)
    lines = [header, "-" * len(header)]
    for row in rows:
        values = " ".join(f"{row[m]:>9.4f}" for m in METRICS)
        lines.append(f"{row['patient_id']:<28} {row['slices']:>6} {values}")
    lines.append("-" * len(header))
    for stat in ("mean", "median", "std"):
        values = " ".join(
            f"{_num(summary[f'{stat}_patient_{m}']):>9}" for m in METRICS
        )
        label = "sample std (n-1)" if stat == "std" else stat
        lines.append(f"{label:<28} {'':>6} {values}")
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


if __name__ == "__main__":
    raise SystemExit(main())
