"""3-D post-processing and flip TTA chosen on the validation patients: one table.

    python benchmarks/postprocessing.py --data-dir ../shared/data/lgg/kaggle_3m \\
        [--checkpoint CKPT] [--split val] [--min-voxels 100,500,2000] [--cores 0.9,0.99]

Runs the Predictor once per patient without and once with flip TTA, keeps the probabilities,
then applies every post-processing rule of ``inference.postprocessing`` to the same predictions
and prints per-patient volumetric Dice (mean, median, worst) for each combination. Patients come
from the checkpoint card's split, so choosing on ``val`` leaves ``test`` untouched.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data.kaggle3m import read_image, read_mask, scan_dataset  # noqa: E402
from data.split import Split  # noqa: E402
from inference.metrics import dice  # noqa: E402
from inference.postprocessing import (  # noqa: E402
    drop_small_components,
    keep_confident_components,
    keep_largest_component,
)
from inference.predictor import Predictor  # noqa: E402
from models import BUNDLED_CHECKPOINT  # noqa: E402
from models.precision import cpu_supports_bf16  # noqa: E402

Rule = Callable[[np.ndarray, np.ndarray], np.ndarray]


def rules(min_voxels: list[int], cores: list[float]) -> dict[str, Rule]:
    table: dict[str, Rule] = {
        "none": lambda m, p: m,
        "largest component": lambda m, p: keep_largest_component(m),
    }
    for n in min_voxels:
        table[f"drop < {n} voxels"] = lambda m, p, n=n: drop_small_components(m, n)
    for c in cores:
        table[f"core >= {c}"] = lambda m, p, c=c: keep_confident_components(m, p, c)
        for n in min_voxels:
            table[f"drop < {n} voxels, core >= {c}"] = (
                lambda m, p, n=n, c=c: keep_confident_components(drop_small_components(m, n), p, c)
            )
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--checkpoint", type=Path, default=BUNDLED_CHECKPOINT)
    parser.add_argument("--split", default="val", choices=["train", "val", "test"])
    parser.add_argument("--min-voxels", default="100,500,2000",
                        help="comma-separated component sizes to try")
    parser.add_argument("--cores", default="0.9,0.99",
                        help="comma-separated core probabilities to try")
    args = parser.parse_args(argv)
    min_voxels = [int(v) for v in args.min_voxels.split(",") if v]
    cores = [float(v) for v in args.cores.split(",") if v]

    plain = Predictor.from_checkpoint(args.checkpoint)
    tta = Predictor.from_checkpoint(args.checkpoint, tta=True)
    split = Split.from_dict(plain.card["split"])
    patients = split.select(scan_dataset(args.data_dir), args.split)
    print(f"{plain.model_version}, {plain.precision}; {len(patients)} {args.split} patients; "
          f"CPU bf16 native: {cpu_supports_bf16()}", flush=True)
    table = rules(min_voxels, cores)
    scores: dict[tuple[str, str], list[float]] = {}
    started = time.perf_counter()
    for patient in patients:
        images = [read_image(s.image_path) for s in patient.slices]
        truth = np.stack([read_mask(s.mask_path) for s in patient.slices])
        for label, predictor in (("plain", plain), ("flip TTA", tta)):
            volume = predictor.predict_volume(images)
            masks = np.moveaxis(volume.masks, 2, 0)
            probabilities = np.moveaxis(volume.probabilities, 2, 0)
            for name, rule in table.items():
                scores.setdefault((label, name), []).append(dice(rule(masks, probabilities),
                                                                 truth))
        print(f"  {patient.patient_id}: {time.perf_counter() - started:.0f} s", flush=True)

    print(f"\n{args.split} patients (n = {len(patients)}), volumetric Dice per patient\n")
    print("| inference | post-processing | mean | median | worst |")
    print("|---|---|---:|---:|---:|")
    for (label, name), values in scores.items():
        v = np.asarray(values)
        print(f"| {label} | {name} | {v.mean():.4f} | {np.median(v):.4f} | {v.min():.4f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
