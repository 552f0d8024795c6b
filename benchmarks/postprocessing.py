"""3-D post-processing and flip TTA chosen on the validation patients: one table.

    python benchmarks/postprocessing.py --data-dir ../shared/data/lgg/kaggle_3m \\
        [--checkpoint CKPT] [--split val] [--min-voxels 100,500,2000] [--cores 0.9,0.99]

Runs the Predictor once per patient without and once with flip TTA, keeps the probabilities,
then applies every ``inference.postprocessing.PostProcessing`` combination (the ones
``training.evaluate`` takes as flags) to the same predictions
and prints per-patient volumetric Dice (mean, median, worst) for each combination. Patients come
from the checkpoint card's split, so choosing on ``val`` leaves ``test`` untouched.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data.kaggle3m import read_image, read_mask, scan_dataset  # noqa: E402
from inference.metrics import dice  # noqa: E402
from inference.postprocessing import PostProcessing  # noqa: E402
from inference.predictor import Predictor  # noqa: E402
from models import BUNDLED_CHECKPOINT  # noqa: E402
from models.precision import cpu_supports_bf16  # noqa: E402


def rules(min_voxels: list[int], cores: list[float]) -> list[PostProcessing]:
    """Every combination to try, each one ``training.evaluate`` can apply by its flags."""
    table = [PostProcessing(), PostProcessing(largest_component=True)]
    table += [PostProcessing(min_component_voxels=n) for n in min_voxels]
    for c in cores:
        table.append(PostProcessing(core_probability=c))
        table += [PostProcessing(min_component_voxels=n, core_probability=c) for n in min_voxels]
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
    if plain.card.split is None:
        raise SystemExit(f"{args.checkpoint.name}'s card has no patient split")
    split = plain.card.split.to_split()
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
            for rule in table:
                scores.setdefault((label, rule.describe()), []).append(
                    dice(rule.apply(masks, probabilities), truth))
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
