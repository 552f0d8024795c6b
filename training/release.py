"""``python -m training.release``: package a run's best checkpoint as the bundled release model.

Scores the run's best checkpoint on its held-out test patients with ``training.evaluate``, then
writes the weights (fp16 by default) and a model card in the MONAI-bundle spirit: version, data
source and citation, the split manifest, config, preprocessing, library versions, hardware,
wall time, test metrics and the intended use.

    python -m training.release --run runs/release --data-dir ../shared/data/lgg/kaggle_3m \\
        --out models/weights/lgg-resnet50-unet-znorm.safetensors --version 0.2.0
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from models import BUNDLED_CHECKPOINT
from models.checkpoint import INTENDED_USE, CheckpointError, load_checkpoint, save_checkpoint
from training.checkpointing import DATA_SOURCE
from training.evaluate import evaluate

CITATION = [
    "M. Buda, A. Saha, M. A. Mazurowski, Association of genomic subtypes of lower-grade gliomas "
    "with shape features automatically extracted by a deep learning algorithm, Computers in "
    "Biology and Medicine 109 (2019)",
    "M. A. Mazurowski et al., J. Neuro-Oncology (2017)",
    "J. Yun, ZNorm: Z-Score Gradient Normalization Accelerating Skip-Connected Network Training "
    "without Architectural Modification, arXiv:2408.01215",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.release", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True,
                        help="training run folder (with best.safetensors and split.json)")
    parser.add_argument("--data-dir", type=Path, required=True, help="kaggle_3m folder")
    parser.add_argument("--out", type=Path, default=BUNDLED_CHECKPOINT,
                        help=f"where to write the weights (default: {BUNDLED_CHECKPOINT.name})")
    parser.add_argument("--version", default="0.1.0", help="release version for the card")
    parser.add_argument("--dtype", choices=["float16", "float32"], default="float16",
                        help="weights precision on disk (default float16; loaded as float32)")
    parser.add_argument("--device", default="auto", help="device for the test evaluation")
    parser.add_argument("--note", default=None, help="a sentence for the card, e.g. the budget")
    return parser


def release_card(card: dict[str, Any], test: dict[str, Any], version: str,
                 note: str | None) -> dict[str, Any]:
    """The release model card: the run's card plus test metrics, provenance and intended use."""
    keys = ("model", "preprocessing", "config", "split", "epoch", "step", "versions",
            "hardware", "wall_time_s", "input", "output")
    out = {k: card[k] for k in keys if k in card}
    out.update(
        name="lgg-resnet50-unet-znorm",
        version=version,
        data_source=DATA_SOURCE,
        citation=CITATION,
        intended_use=INTENDED_USE,
        metrics={
            **card.get("metrics", {}),
            **{f"test_{k}": v for k, v in test.items() if k.endswith("_patient_dice")
               or k.endswith("_patient_iou")},
            "test_patients": test["patients"],
            "test_convention": test["convention"],
        },
    )
    if note:
        out["note"] = note
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    best = args.run / "best.safetensors"
    try:
        model, card = load_checkpoint(best)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    test = evaluate(best, args.data_dir, args.run / "eval-test", split_name="test",
                    split_file=args.run / "split.json", device=args.device)
    full = save_checkpoint(args.out, model, release_card(card, test, args.version, args.note),
                           dtype=getattr(torch, args.dtype))
    print(f"released {args.out} ({args.dtype}); test mean patient Dice "
          f"{full['metrics']['test_mean_patient_dice']:.4f} over {test['patients']} patients")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
