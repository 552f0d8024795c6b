"""``python -m training.quantize``: an int8 OpenVINO model of a checkpoint, validated.

1. Convert the checkpoint to OpenVINO IR (fp32; the engine's cache) and quantize it with NNCF
   post-training quantization, calibrated on slices of the card's *training* patients, evenly
   spread over them (a few hundred: ``--calibration-slices``).
2. Write ``<weights stem>.int8.xml/.bin`` beside the weights and ``<stem>.int8.json``, a manifest
   naming the fp32 weights' SHA-256 (the engine uses the int8 model only for those weights).
3. Score the validation patients with the int8 model and with the reference (torch fp32) through
   ``training.evaluate`` and record both mean patient Dice, their difference and the gate (0.005)
   in the manifest. ``--engine auto`` uses int8 only when the gate holds.

Needs the ``quantize`` extra: ``pip install -c constraints.txt -e '.[quantize]'``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from data.atomic import atomic_write_json
from data.kaggle3m import DatasetError, read_image, scan_dataset
from models.card import ModelCard
from models.checkpoint import CheckpointError, load_checkpoint

logger = logging.getLogger("training.quantize")

GATE = 0.005
"""Largest |mean patient Dice(int8) - Dice(torch fp32)| on validation for ``auto`` to use int8."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.quantize",
        description="Quantize a checkpoint to int8 (OpenVINO + NNCF post-training "
        "quantization on training slices), write it beside the weights and record its "
        "validation Dice against torch fp32.",
    )
    parser.add_argument("--checkpoint", type=Path, required=True, metavar="CKPT",
                        help="the fp32/bf16 weights (.safetensors, card beside)")
    parser.add_argument("--data-dir", type=Path, required=True, metavar="DIR",
                        help="kaggle_3m folder holding the card's patients")
    parser.add_argument("--calibration-slices", type=int, default=300, metavar="N",
                        help="training slices for calibration, evenly spread (default 300)")
    parser.add_argument("--reference-engine", choices=["torch", "openvino"], default="torch",
                        help="the fp32 reference scored beside int8 (default torch; openvino "
                             "f32 agrees with it to ~1e-8 in probability and is 3x faster)")
    parser.add_argument("--skip-validation", action="store_true",
                        help="write the int8 model without scoring it (auto will not use it)")
    parser.add_argument("--batch-size", type=int, default=8, help="slices per forward pass")
    return parser


def calibration_slices(card: ModelCard, data_dir: Path, count: int) -> list[Path]:
    """``count`` slice files of the card's training patients, evenly spread over all of them."""
    from training.evaluate import choose_patients

    patients = choose_patients(card, None, scan_dataset(data_dir), "train")
    files = [s.image_path for patient in patients for s in patient.slices]
    if not files:
        raise ValueError("the card's training patients have no slices in this folder")
    picks = np.unique(np.linspace(0, len(files) - 1, num=min(count, len(files))).round())
    return [files[int(k)] for k in picks]


def quantize(checkpoint: Path, data_dir: Path, count: int) -> tuple[Any, dict[str, Any]]:
    """The int8 ``openvino.Model`` and a description of its calibration."""
    import nncf

    from data.preprocessing import preprocess_image
    from inference.engines.openvino_engine import cached_ir

    model, card = load_checkpoint(checkpoint)
    config = card.preprocessing
    files = calibration_slices(card, data_dir, count)
    inputs = [preprocess_image(read_image(f), config)[None] for f in files]
    ir = cached_ir(str(card.weights_sha256), model, config.image_size)
    started = time.perf_counter()
    quantized = nncf.quantize(ir, nncf.Dataset(inputs), subset_size=len(inputs))
    calibration = {
        "method": "NNCF post-training quantization (default preset), OpenVINO IR",
        "slices": len(inputs),
        "patients": len({f.parent.name for f in files}),
        "source": "the card's training patients, evenly spread",
        "nncf": nncf.__version__,
        "seconds": round(time.perf_counter() - started, 1),
    }
    return quantized, calibration


def save_int8(quantized: Any, weights: Path) -> Path:
    """Write the IR beside ``weights``: .bin first, then .xml, each moved into place whole."""
    import openvino as ov

    from inference.engines.openvino_engine import int8_paths

    xml, _ = int8_paths(weights)
    with tempfile.TemporaryDirectory(dir=xml.parent, prefix=".int8-") as tmp:
        staged = Path(tmp) / "model.xml"
        ov.save_model(quantized, staged, compress_to_fp16=False)
        os.replace(staged.with_suffix(".bin"), xml.with_suffix(".bin"))
        os.replace(staged, xml)
    return xml


def validate(checkpoint: Path, data_dir: Path, reference: str, batch_size: int) -> dict[str, Any]:
    """Mean validation patient Dice of int8 and of the fp32 reference, and the difference."""
    from training.evaluate import evaluate

    scores = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, engine, precision in (("int8", "openvino", "int8"),
                                        ("fp32", reference, "fp32")):  # fmt: skip
            summary = evaluate(checkpoint, data_dir, Path(tmp) / name, split_name="val",
                               device="cpu", engine=engine, precision=precision,
                               batch_size=batch_size)
            scores[name] = summary
    delta = scores["int8"]["mean_patient_dice"] - scores["fp32"]["mean_patient_dice"]
    reference = scores["fp32"]["patient_dice"]
    per_patient = [abs(d - reference[p]) for p, d in scores["int8"]["patient_dice"].items()]
    return {
        "split": "val",
        "patients": scores["int8"]["patients"],
        "reference": f"{reference} fp32",
        "reference_mean_patient_dice": scores["fp32"]["mean_patient_dice"],
        "int8_mean_patient_dice": scores["int8"]["mean_patient_dice"],
        "delta_mean_patient_dice": delta,
        "max_abs_delta_patient_dice": max(per_patient),
        "gate": GATE,
        "cpu": scores["int8"]["cpu"],
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from inference.engines.openvino_engine import int8_paths, openvino_version

    try:
        _, card = load_checkpoint(args.checkpoint)
        quantized, calibration = quantize(args.checkpoint, args.data_dir,
                                          args.calibration_slices)
        xml = save_int8(quantized, args.checkpoint)
        _, manifest_path = int8_paths(args.checkpoint)
        manifest: dict[str, Any] = {
            "weights": args.checkpoint.name,
            "weights_sha256": card.weights_sha256,
            "image_size": card.preprocessing.image_size,
            "openvino": openvino_version(),
            "calibration": calibration,
            "validation": None,
        }
        atomic_write_json(manifest_path, manifest)  # the engine needs it to score int8
        if not args.skip_validation:
            manifest["validation"] = validate(args.checkpoint, args.data_dir,
                                              args.reference_engine, args.batch_size)
            atomic_write_json(manifest_path, manifest)
    except ImportError as exc:
        logger.error("%s: install the quantize extra (pip install -e '.[quantize]')", exc)
        return 1
    except (CheckpointError, DatasetError, ValueError, RuntimeError, OSError) as exc:
        logger.error("quantization failed: %s", exc)
        return 1
    validation = manifest["validation"]
    if validation is None:
        print(f"wrote {xml} and {manifest_path.name} (not validated: auto will not use it)")
        return 0
    verdict = "within" if abs(validation["delta_mean_patient_dice"]) <= GATE else "OUTSIDE"
    print(
        f"wrote {xml}: validation mean patient Dice int8 {validation['int8_mean_patient_dice']:.4f}"
        f" vs {validation['reference']} {validation['reference_mean_patient_dice']:.4f} "
        f"(delta {validation['delta_mean_patient_dice']:+.4f}, {verdict} the {GATE} gate)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
