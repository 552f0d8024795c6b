"""``python -m analysis.cohort``: shape features of every patient, from the model's and the
expert's masks, and their association with the genomic subtypes and clinical data of data.csv.

The study of Buda, Saha & Mazurowski (Comput. Biol. Med. 109, 2019) on any kaggle_3m cohort:

1. every patient folder is segmented by the model through ``inference.Predictor`` (one patient in
   memory at a time), by default keeping only the largest 3-D connected component, the
   release's post-processing (``inference.postprocessing``): the shape features describe one
   tumour, and a stray false-positive blob would inflate the predicted BEVR's ellipsoid.
   ``--no-largest-component`` keeps the raw masks. Expert masks are never post-processed;
2. the features of ``analysis.shape`` (voxels, BEVR, ASD, MF, extent, solidity, eccentricity)
   are computed on the predicted and on the expert volume, with the volumetric Dice;
3. automatic vs expert agreement, and every feature x every data.csv variable
   (``analysis.stats``: Fisher/Freeman-Halton on a median split, Kruskal-Wallis, Spearman for
   numeric variables; Bonferroni and Benjamini-Hochberg corrections);
4. ``OUT/report.html`` (self-contained) and its figures.

Resumable: each patient's raw predicted masks (``OUT/patients/<id>.npz``) and features
(``OUT/patients/<id>.json``) are kept; a rerun reuses them when the checkpoint, threshold and
slice files are unchanged (predictions) and the post-processing, spacing and feature version too
(features), so an interrupted run continues where it stopped and a rerun with other options
recomputes only what they change.

``features.csv``'s ``model_split`` says which patients the checkpoint's own card lists as
training, validation or test patients: on the first two its masks are optimistic.

Outputs in OUT: ``features.csv`` (one row per patient), ``agreement.csv``,
``associations.csv``, ``summary.json``, ``figures/*.png``, ``report.html``. The figures and the
report show patient images: keep OUT with the data, never in a code repository.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from analysis import report
from analysis.clinical import ClinicalError, Join, join, read_clinical
from analysis.shape import FEATURES, largest_slice, shape_features
from analysis.stats import AGREEMENT_COLUMNS, agreement, associations
from data.atomic import atomic_write_bytes, atomic_write_json
from data.kaggle3m import DatasetError, PatientRecord, read_image, read_mask, scan_dataset
from data.split import PARTS
from inference.metrics import dice
from inference.postprocessing import keep_largest_component
from inference.predictor import Predictor
from models import BUNDLED_CHECKPOINT
from models.card import ModelCard
from models.checkpoint import CheckpointError

logger = logging.getLogger("analysis.cohort")

FEATURES_VERSION = "1"
"""Bumped whenever a feature's definition changes, so cached features are recomputed."""


@dataclass(frozen=True)
class Options:
    """What a cached result depends on."""

    model: str
    threshold: float
    largest_component: bool
    spacing_mm: tuple[float, float, float] | None

    def prediction_key(self, patient: PatientRecord) -> dict[str, Any]:
        names = [s.image_path.name for s in patient.slices]
        files = hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]
        return {"model": self.model, "threshold": self.threshold, "slices": files}

    def features_key(self) -> dict[str, Any]:
        spacing = None if self.spacing_mm is None else list(self.spacing_mm)
        return {"largest_component": self.largest_component, "spacing_mm": spacing,
                "features_version": FEATURES_VERSION}


def model_splits(card: ModelCard) -> dict[str, str]:
    """Patient id -> the part of the model's own split (train/val/test) it was in, if any."""
    if card.split is None:
        return {}
    try:
        split = card.split.to_split()
    except ValueError:
        return {}
    return {pid: part for part in PARTS for pid in split.part(part)}


def feature_columns(with_ml: bool) -> list[str]:
    names = ["voxels", *(["ml"] if with_ml else []), *FEATURES[1:]]
    return [f"{source}_{name}" for name in names for source in ("truth", "pred")]


# ---------------------------------------------------------------------------- one patient


def _pack(masks: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, bits=np.packbits(masks.astype(bool)), shape=masks.shape)
    return buffer.getvalue()


def _unpack(path: Path) -> np.ndarray:
    with np.load(path) as stored:
        shape = tuple(int(n) for n in stored["shape"])
        count = int(np.prod(shape))
        return np.unpackbits(stored["bits"], count=count).reshape(shape).astype(np.uint8)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        loaded = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return loaded if isinstance(loaded, dict) else None


def predicted_volume(
    patient: PatientRecord, predictor: Predictor, cache: Path, key: dict[str, Any],
    cached: dict[str, Any] | None,
) -> tuple[np.ndarray, bool]:
    """The raw predicted masks ``H x W x Z``, from the cache when its key matches; and whether
    the model ran."""
    if cached is not None and cached.get("prediction") == key and cache.is_file():
        try:
            return _unpack(cache), False
        except (OSError, ValueError, KeyError):
            logger.warning("unreadable cached prediction %s: predicting again", cache)
    images = [read_image(s.image_path) for s in patient.slices]
    masks = predictor.predict_volume(images).masks
    atomic_write_bytes(cache, _pack(masks))
    return masks, True


def patient_row(
    patient: PatientRecord, subject: str, truth: np.ndarray, pred: np.ndarray, options: Options
) -> dict[str, Any]:
    """The features.csv row of one patient (expert and post-processed predicted volumes)."""
    row: dict[str, Any] = {"patient": patient.patient_id, "subject": subject,
                           "slices": len(patient.slices)}
    found = {"truth": shape_features(truth, options.spacing_mm),
             "pred": shape_features(pred, options.spacing_mm)}
    for column in feature_columns(options.spacing_mm is not None):
        source, name = column.split("_", 1)
        row[column] = found[source][name]
    row["dice"] = dice(pred, truth)
    return row


def process_patient(
    patient: PatientRecord, subject: str, predictor: Predictor, out: Path, options: Options
) -> tuple[dict[str, Any], str]:
    """Features of one patient, computed or reused; returns the record and what was done
    (``cached``, ``features`` (recomputed from cached predictions) or ``predicted``)."""
    folder = out / "patients"
    record_path = folder / f"{patient.patient_id}.json"
    cached = _read_json(record_path)
    prediction_key = options.prediction_key(patient)
    features_key = options.features_key()
    if (cached is not None and cached.get("prediction") == prediction_key
            and cached.get("features") == features_key and isinstance(cached.get("row"), dict)):
        return cached, "cached"
    raw, ran = predicted_volume(patient, predictor, folder / f"{patient.patient_id}.npz",
                                prediction_key, cached)
    pred = keep_largest_component(raw) if options.largest_component else raw
    truth = np.stack([read_mask(s.mask_path) for s in patient.slices], axis=2)
    if truth.shape != pred.shape:
        raise DatasetError(f"{patient.patient_id}: masks are {truth.shape}, the cached "
                           f"prediction {pred.shape}; delete {folder} and run again")
    record = {
        "patient": patient.patient_id,
        "prediction": prediction_key,
        "features": features_key,
        "row": patient_row(patient, subject, truth, pred, options),
        "overlay_slice": largest_slice(truth) if truth.any() else largest_slice(pred),
    }
    atomic_write_json(record_path, _json_safe(record))
    return record, "predicted" if ran else "features"


def _json_safe(value: Any) -> Any:
    """NaN/inf as null (strict JSON), numpy scalars as Python numbers."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ---------------------------------------------------------------------------- the cohort


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m analysis.cohort",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Research use only; not for diagnostic use.",
    )
    parser.add_argument("--data-dir", type=Path, required=True, metavar="DIR",
                        help="a kaggle_3m folder (TCGA_<inst>_<patient>_<date>/ patient folders)")
    parser.add_argument("--clinical", type=Path, default=None, metavar="CSV",
                        help="the clinical/genomic table, one row per patient keyed by "
                        "'Patient' (default: DIR/data.csv)")
    parser.add_argument("--out", type=Path, required=True, metavar="OUT",
                        help="output folder (created; rerunning with the same OUT resumes)")
    parser.add_argument("--checkpoint", type=Path, default=BUNDLED_CHECKPOINT, metavar="CKPT",
                        help="model weights (.safetensors with its .json card beside it); "
                        "default: the bundled release model")
    parser.add_argument("--largest-component", action=argparse.BooleanOptionalAction,
                        default=True,
                        help="keep only the largest 3-D connected component of each predicted "
                        "volume (default: on; --no-largest-component keeps the raw masks)")
    parser.add_argument("--variables", default=None, metavar="A,B,...",
                        help="comma-separated data.csv columns to test (default: all but "
                        "Patient)")
    parser.add_argument("--spacing-mm", type=float, nargs=3, default=None,
                        metavar=("ROW", "COL", "SLICE"),
                        help="voxel size in mm shared by every patient, to add volumes in ml "
                        "(kaggle_3m TIFFs carry no spacing: without it, volumes are in voxels)")
    parser.add_argument("--device", default="cpu",
                        help="torch device for the model: cpu (default), cuda, cuda:1, ...")
    parser.add_argument("--batch-size", type=int, default=8, metavar="B",
                        help="slices per forward pass (default 8)")
    parser.add_argument("--gallery", type=int, default=6, metavar="N",
                        help="patients with the lowest Dice shown as overlays (default 6)")
    parser.add_argument("--top", type=int, default=6, metavar="N",
                        help="strongest associations drawn as box plots (default 6)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _load_predictor(args: argparse.Namespace) -> Predictor:
    if not args.checkpoint.is_file():
        raise CheckpointError(f"checkpoint not found: {args.checkpoint}")
    return Predictor.from_checkpoint(args.checkpoint, args.device, batch_size=args.batch_size)


def _variables(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [v.strip() for v in text.split(",") if v.strip()]
    if not names:
        raise ClinicalError("--variables names no column")
    return names


def run(args: argparse.Namespace) -> int:
    """The whole study; returns the exit code."""
    patients = scan_dataset(args.data_dir)
    clinical_path = args.clinical or args.data_dir / "data.csv"
    joined = join(patients, read_clinical(clinical_path, _variables(args.variables)))
    predictor = _load_predictor(args)
    options = Options(
        model=predictor.card.weights_sha256 or predictor.model_version,
        threshold=predictor.threshold,
        largest_component=args.largest_component,
        spacing_mm=None if args.spacing_mm is None else tuple(args.spacing_mm),
    )
    args.out.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    done = {"cached": 0, "features": 0, "predicted": 0}
    failures: list[str] = []
    with tqdm(patients, unit="patient", desc="cohort", disable=args.quiet) as bar:
        for patient in bar:
            bar.set_postfix_str(patient.patient_id)
            try:
                record, how = process_patient(patient, joined.subjects[patient.patient_id],
                                              predictor, args.out, options)
            except (DatasetError, OSError, ValueError) as exc:
                failures.append(f"{patient.patient_id}: {exc}")
                logger.error("patient %s failed: %s", patient.patient_id, exc)
                continue
            records.append(record)
            done[how] += 1
    if not records:
        print("error: no patient could be processed", file=sys.stderr)
        for failure in failures:
            print(f"error: {failure}", file=sys.stderr)
        return 1
    summary = write_outputs(args, patients, records, joined, predictor, options, failures)
    strongest = summary["strongest"]
    line = (f"cohort: {len(records)} patients ({done['predicted']} segmented, "
            f"{done['features']} re-measured, {done['cached']} from cache, {len(failures)} "
            f"failed); median Dice {summary['median_dice']:.3f}; ")
    if strongest:
        line += (f"strongest association (predicted masks): {strongest['feature']} x "
                 f"{strongest['variable']} ({strongest['test']}) p={strongest['p_value']:.2g}, "
                 f"Bonferroni {strongest['p_bonferroni']:.2g}; ")
    print(line + f"report in {args.out / 'report.html'}")
    for failure in failures:
        print(f"error: {failure}", file=sys.stderr)
    return 1 if failures else 0


def write_outputs(
    args: argparse.Namespace, patients: Sequence[PatientRecord],
    records: Sequence[dict[str, Any]], joined: Join, predictor: Predictor, options: Options,
    failures: Sequence[str],
) -> dict[str, Any]:
    """features.csv, agreement.csv, associations.csv, summary.json, figures and report.html."""
    out: Path = args.out
    columns = ["patient", "subject", "slices", "model_split",
               *feature_columns(options.spacing_mm is not None), "dice"]
    splits = model_splits(predictor.card)
    features = pd.DataFrame([{**r["row"], "model_split": splits.get(r["patient"], "")}
                             for r in records], columns=columns)
    for column in columns[4:]:
        features[column] = pd.to_numeric(features[column], errors="coerce")
    features.to_csv(out / "features.csv", index=False)
    names = [n for n in ("voxels", "ml", *FEATURES[1:]) if f"pred_{n}" in features.columns]
    agree = pd.DataFrame(
        [{"feature": n, **agreement(features[f"pred_{n}"], features[f"truth_{n}"])}
         for n in names], columns=AGREEMENT_COLUMNS)
    agree.to_csv(out / "agreement.csv", index=False)
    indexed = features.set_index("patient")
    tests = associations(indexed, joined.table, names)
    tests.to_csv(out / "associations.csv", index=False)
    pred_tests = tests[(tests["source"] == "pred") & tests["p_value"].notna()
                       & (tests["test"] != "spearman")]
    strongest = (pred_tests.sort_values("p_value").iloc[0].to_dict()
                 if len(pred_tests) else None)
    summary = {
        "patients": len(records),
        "failed": list(failures),
        "data_dir": str(args.data_dir),
        "model": predictor.model_version,
        "largest_component": options.largest_component,
        "spacing_mm": None if options.spacing_mm is None else list(options.spacing_mm),
        "median_dice": float(features["dice"].median()),
        "seen_by_model": {part: int((features["model_split"] == part).sum())
                          for part in ("train", "val")},
        "median_dice_unseen": float(features.loc[features["model_split"].isin(["", "test"]),
                                                 "dice"].median()),
        "mean_dice": float(features["dice"].mean()),
        "without_clinical_row": joined.without_row,
        "clinical_rows_without_folder": joined.without_folder,
        "variables": list(joined.table.columns),
        "significant_bonferroni_0.05": int((tests["p_bonferroni"] < 0.05).sum()),
        "strongest": strongest,
    }
    overlays = report.gallery_items(records, {p.patient_id: p for p in patients}, out,
                                    options.largest_component, args.gallery)
    report.write_report(out, features, agree, tests, joined, summary, overlays, args.top)
    atomic_write_json(out / "summary.json", _json_safe(summary))
    return summary


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.batch_size < 1 or args.gallery < 0 or args.top < 0:
        print("error: --batch-size must be >= 1, --gallery and --top >= 0", file=sys.stderr)
        return 2
    try:
        return run(args)
    except (DatasetError, ClinicalError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
