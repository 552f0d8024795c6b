"""``python -m training.evaluate``: per-patient (volumetric) scores of a checkpoint.

The model and its preprocessing are rebuilt from the checkpoint's card alone. Every slice of the
chosen patients is predicted (sigmoid > threshold after resizing the probabilities back to the
slice's own size, as the inference service does), the slices are stacked into one volume per
patient, and Dice, IoU, precision, recall and HD95 are computed on that volume with
``monai.metrics`` (optionally after keeping the largest 3-D connected component).

Conventions for empty masks (see ``training.metrics``):
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
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from data.dataset import SliceDataset
from data.kaggle3m import DatasetError, PatientRecord, read_mask, scan_dataset
from data.preprocessing import PreprocessingConfig, restore_size
from data.split import PARTS, Split
from models.checkpoint import CheckpointError, atomic_write_json, load_checkpoint
from training.metrics import METRICS, summarize, volume_metrics
from training.runtime import resolve_amp, resolve_device

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
    parser.add_argument("--split", choices=[*PARTS, "all"], default="test",
                        help="which patients to score (default test; all = train+val+test)")
    parser.add_argument("--split-file", type=Path, metavar="SPLIT.json",
                        help="patient split (default: the split stored in the checkpoint card)")
    parser.add_argument("--largest-component", action="store_true",
                        help="keep only the largest 3-D connected component of each prediction")
    parser.add_argument("--threshold", type=float, default=0.5,
                        help="probability threshold for tumour (default 0.5)")
    parser.add_argument("--batch-size", type=int, default=16, help="slices per forward pass")
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="where to run the model (auto: CUDA when available)")
    parser.add_argument("--amp", choices=["bf16", "fp32", "auto"], default="auto",
                        help="bf16 autocast, fp32, or auto (bf16 where the device supports it)")
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
            largest_component=args.largest_component,
            threshold=args.threshold,
            batch_size=args.batch_size,
            num_workers=args.num_workers,
            device=args.device,
            amp=args.amp,
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
    largest_component: bool = False,
    threshold: float = 0.5,
    batch_size: int = 16,
    num_workers: int = 0,
    device: str = "auto",
    amp: str = "auto",
) -> dict[str, Any]:
    """Score ``checkpoint`` on one part of the split; writes OUT/ and returns the summary."""
    dev = resolve_device(device)
    model, card = load_checkpoint(checkpoint, dev)
    model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    preprocessing = PreprocessingConfig.model_validate(card["preprocessing"])
    split = _load_split(card, split_file)
    patients = scan_dataset(data_dir)
    chosen = _choose(split, patients, split_name)
    amp_dtype = resolve_amp(amp, dev)
    logger.info("scoring %d %s patients on %s (%s)", len(chosen), split_name, dev,
                "bf16" if amp_dtype else "fp32")

    rows = []
    for patient in tqdm(chosen, desc="patients", unit="patient"):
        probabilities = predict_probabilities(model, patient, preprocessing, dev, amp_dtype,
                                              batch_size, num_workers)
        truth = np.stack([read_mask(s.mask_path) for s in patient.slices])
        prediction = binarize(probabilities, truth, threshold)
        if largest_component:
            prediction = keep_largest_component(prediction)
        rows.append({
            "patient_id": patient.patient_id,
            "slices": len(patient.slices),
            "true_voxels": int(truth.sum()),
            "predicted_voxels": int(prediction.sum()),
            **volume_metrics(prediction, truth),
        })

    summary = _summary(rows, checkpoint, split_name, largest_component, threshold, card)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "per_patient.csv", rows)
    atomic_write_json(out / "summary.json", summary)
    plot_dice(out / "per_patient_dice.png", rows, summary["mean_patient_dice"], split_name)
    print(format_table(rows, summary))
    return summary


def _load_split(card: dict[str, Any], split_file: Path | None) -> Split:
    if split_file is not None:
        return Split.from_json(split_file)
    if "split" not in card:
        raise ValueError("the checkpoint card has no split; pass --split-file RUN_DIR/split.json")
    return Split.from_dict(card["split"])


def _choose(split: Split, patients: list[PatientRecord], name: str) -> list[PatientRecord]:
    if name == "all":
        return [p for part in PARTS for p in split.select(patients, part)]
    chosen = split.select(patients, name)
    if not chosen:
        raise ValueError(f"the {name} part of the split is empty")
    return chosen


@torch.no_grad()
def predict_probabilities(
    model: torch.nn.Module,
    patient: PatientRecord,
    preprocessing: PreprocessingConfig,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    batch_size: int,
    num_workers: int = 0,
) -> np.ndarray:
    """Tumour probabilities of every slice at the model's resolution (``D x S x S`` float32)."""
    loader = DataLoader(SliceDataset([patient], preprocessing), batch_size=batch_size,
                        num_workers=num_workers)
    probabilities = []
    for batch in loader:
        inputs = batch["image"].to(device).contiguous(memory_format=torch.channels_last)
        if amp_dtype is None:
            logits = model(inputs)
        else:
            with torch.autocast(device_type=device.type, dtype=amp_dtype):
                logits = model(inputs)
        probabilities.append(torch.sigmoid(logits.float())[:, 0].cpu().numpy())
    return np.concatenate(probabilities)


def binarize(probabilities: np.ndarray, truth: np.ndarray, threshold: float) -> np.ndarray:
    """Resize each ``S x S`` map back to its slice's size, then threshold (uint8 ``D x H x W``)."""
    height, width = truth.shape[1:]
    return np.stack(
        [restore_size(p, height, width) > threshold for p in probabilities]
    ).astype(np.uint8)


def keep_largest_component(volume: np.ndarray) -> np.ndarray:
    """Keep the largest 3-D connected component (26-connectivity) of a binary volume."""
    from monai.transforms import KeepLargestConnectedComponent

    if not volume.any():
        return volume
    keep = KeepLargestConnectedComponent(applied_labels=[1], is_onehot=False, connectivity=3)
    result = keep(torch.as_tensor(volume[None].astype(np.uint8)))
    return np.asarray(result[0], dtype=np.uint8)


def _summary(
    rows: list[dict[str, Any]],
    checkpoint: Path,
    split_name: str,
    largest_component: bool,
    threshold: float,
    card: dict[str, Any],
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
        "checkpoint_sha256": card.get("weights_sha256"),
        "model": card.get("name"),
        "largest_component": largest_component,
        "threshold": threshold,
        "convention": CONVENTION,
        "statistics": stats,
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
