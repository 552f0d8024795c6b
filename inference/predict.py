"""Segment slices, patient folders and NIfTI volumes from the command line.

    python -m inference.predict INPUT... [--checkpoint CKPT] --out DIR [--tta] [--device cpu]

Inputs (the format of a file is sniffed from its bytes, not its name):

- a slice image (TIFF, PNG, JPEG) -> ``DIR/<name>_mask.png`` (0 background, 255 tumour);
- a kaggle_3m patient folder (``TCGA_<inst>_<patient>_<date>/``) ->
  ``DIR/<patient>/<slice>_mask.png`` for each slice; where the folder has ground-truth
  masks, areas.csv also gets Dice per slice;
- a kaggle_3m root (a folder of patient folders) -> every patient, as above;
- a NIfTI (``.nii`` / ``.nii.gz``, a slice or a volume) -> ``DIR/<name>_mask.nii.gz``
  (uint8 0/1 on the input's voxel grid, with the input's affine).

``DIR/areas.csv`` lists the tumour area of every slice (pixels, fraction, mm² when the NIfTI
header gives the pixel spacing, maximum probability, and Dice against a ground truth if any).
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from data.kaggle3m import PATIENT_DIR, SLICE_FILE, DatasetError, read_image, read_mask
from inference.decode import DecodeProblem, decode_nifti, decode_slice, sniff
from inference.metrics import dice
from inference.outputs import mask_to_nifti, mask_to_png, nifti_to_gz_bytes
from inference.predictor import Predictor, SlicePrediction
from models import BUNDLED_CHECKPOINT
from models.checkpoint import CheckpointError, atomic_write_bytes

log = logging.getLogger(__name__)

CSV_COLUMNS = [
    "input", "slice", "height", "width", "tumour_pixels", "tumour_fraction", "tumour_mm2",
    "max_probability", "true_pixels", "dice",
]  # fmt: skip


class InputError(ValueError):
    """An input path that cannot be used; the message says why."""


@dataclass
class SliceFile:
    path: Path


@dataclass
class PatientFolder:
    path: Path
    slices: list[tuple[int, Path, Path | None]] = field(default_factory=list)


@dataclass
class NiftiFile:
    path: Path


Job = SliceFile | PatientFolder | NiftiFile


def _patient_slices(folder: Path) -> list[tuple[int, Path, Path | None]]:
    """(index, image, mask or None) of a kaggle_3m patient folder, in numeric slice order."""
    slices = []
    for path in folder.iterdir():
        match = SLICE_FILE.match(path.name)
        if match and not match["mask"] and path.is_file():
            mask = path.with_name(f"{match['case']}_{match['index']}_mask{path.suffix}")
            slices.append((int(match["index"]), path, mask if mask.is_file() else None))
    return sorted(slices, key=lambda s: s[0])


def collect_jobs(inputs: Sequence[Path]) -> list[Job]:
    """Classify every input; raises InputError for a path that is none of the kinds above."""
    jobs: list[Job] = []
    for path in inputs:
        if path.is_file():
            with path.open("rb") as fh:
                head = fh.read(512)
            try:
                fmt = sniff(head)
            except DecodeProblem as exc:
                raise InputError(f"{path}: {exc}") from exc
            if fmt in ("nifti", "gzip"):
                jobs.append(NiftiFile(path))
            elif fmt == "zip":
                raise InputError(f"{path}: unzip it first and pass the patient folder")
            else:
                jobs.append(SliceFile(path))
        elif path.is_dir():
            slices = _patient_slices(path)
            if slices:
                jobs.append(PatientFolder(path, slices))
                continue
            patients = sorted(d for d in path.iterdir() if d.is_dir() and PATIENT_DIR.match(d.name))
            found = [PatientFolder(d, _patient_slices(d)) for d in patients]
            found = [p for p in found if p.slices]
            if not found:
                raise InputError(
                    f"{path}: neither a kaggle_3m patient folder (TCGA_..._<n>.tif files) nor a "
                    "folder of patient folders"
                )
            jobs.extend(found)
        else:
            raise InputError(f"{path}: no such file or folder")
    return jobs


def _slice_count(job: Job) -> int:
    return len(job.slices) if isinstance(job, PatientFolder) else 1


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii", ".tiff", ".tif", ".png", ".jpeg", ".jpg"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


class Writer:
    """Writes masks under ``out`` (never overwriting one written in this run) and the CSV rows."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.rows: list[dict[str, Any]] = []
        self._used: set[Path] = set()

    def target(self, relative: str) -> Path:
        path = self.out / relative
        base, n = path, 2
        while path in self._used:
            path = base.with_name(base.name.replace("_mask.", f"_{n}_mask.", 1))
            n += 1
        self._used.add(path)
        return path

    def row(
        self,
        source: Path,
        index: int | str,
        pred: SlicePrediction,
        pixel_mm2: float | None = None,
        truth: np.ndarray | None = None,
    ) -> None:
        self.rows.append(
            {
                "input": str(source),
                "slice": index,
                "height": pred.mask.shape[0],
                "width": pred.mask.shape[1],
                "tumour_pixels": pred.tumour_pixels,
                "tumour_fraction": f"{pred.tumour_fraction:.6f}",
                "tumour_mm2": "" if pixel_mm2 is None else f"{pred.tumour_pixels * pixel_mm2:.3f}",
                "max_probability": f"{pred.max_probability:.6f}",
                "true_pixels": "" if truth is None else int(np.count_nonzero(truth)),
                "dice": "" if truth is None else f"{dice(pred.mask, truth):.6f}",
            }
        )

    def write_csv(self) -> Path:
        path = self.out / "areas.csv"
        with path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
            writer.writeheader()
            writer.writerows(self.rows)
        return path


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def run_slices(
    jobs: list[SliceFile], predictor: Predictor, writer: Writer, bar: tqdm, batch_size: int
) -> list[str]:
    """Segment single slice files in batches; returns the files that could not be decoded."""
    failures = []
    for chunk in _chunks(jobs, batch_size):
        decoded = []
        for job in chunk:
            try:
                decoded.append((job, decode_slice(job.path.read_bytes())))
            except (DecodeProblem, OSError) as exc:
                failures.append(f"{job.path}: {exc}")
        preds = predictor.predict_batch([image for _, image in decoded])
        for (job, _), pred in zip(decoded, preds, strict=True):
            atomic_write_bytes(writer.target(f"{_stem(job.path)}_mask.png"), mask_to_png(pred.mask))
            writer.row(job.path, "", pred)
        bar.update(len(chunk))
    return failures


def run_patient(
    job: PatientFolder, predictor: Predictor, writer: Writer, bar: tqdm, batch_size: int
) -> None:
    for chunk in _chunks(job.slices, batch_size):
        images = [read_image(image) for _, image, _ in chunk]
        for (index, image, mask), pred in zip(chunk, predictor.predict_batch(images), strict=True):
            name = f"{job.path.name}/{_stem(image)}_mask.png"
            atomic_write_bytes(writer.target(name), mask_to_png(pred.mask))
            truth = read_mask(mask) if mask is not None else None
            writer.row(job.path, index, pred, truth=truth)
        bar.update(len(chunk))


def run_nifti(
    job: NiftiFile, predictor: Predictor, writer: Writer, bar: tqdm, batch_size: int
) -> None:
    volume = decode_nifti(job.path.read_bytes())
    depth = volume.data.shape[2]
    bar.total += depth - 1
    bar.refresh()
    slices = [volume.data[:, :, k] for k in range(depth)]
    pixel_mm2 = volume.zooms[0] * volume.zooms[1]
    preds: list[SlicePrediction] = []
    for chunk in _chunks(slices, batch_size):
        preds += predictor.predict_batch(chunk)
        bar.update(len(chunk))
    masks = np.stack([p.mask for p in preds], axis=2)
    image = mask_to_nifti(masks, volume.affine, volume.header)
    atomic_write_bytes(writer.target(f"{_stem(job.path)}_mask.nii.gz"), nifti_to_gz_bytes(image))
    for k, pred in enumerate(preds):
        writer.row(job.path, k, pred, pixel_mm2=pixel_mm2)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m inference.predict",
        description=__doc__,
        epilog=(
            "Outputs: DIR/<name>_mask.png per slice (0/255), DIR/<patient>/<slice>_mask.png per "
            "patient slice, DIR/<name>_mask.nii.gz per NIfTI (the input's affine), and "
            "DIR/areas.csv with the tumour area of every slice. Research use only."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "inputs",
        nargs="+",
        type=Path,
        metavar="INPUT",
        help="slice images (tif/png/jpg), kaggle_3m patient folders or their "
        "root, NIfTI volumes (.nii/.nii.gz)",
    )
    parser.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="output folder (created if missing)"
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=BUNDLED_CHECKPOINT,
        metavar="CKPT",
        help="model weights (.safetensors with its .json card beside it); "
        "default: the bundled release model",
    )
    parser.add_argument(
        "--device", default="cpu", help="torch device: cpu (default), cuda, cuda:1, ..."
    )
    parser.add_argument(
        "--precision",
        choices=["auto", "bf16", "fp32"],
        default="auto",
        help="auto (default): bf16 where the hardware runs it natively, else fp32",
    )
    parser.add_argument(
        "--tta",
        action="store_true",
        help="average with a horizontally flipped pass (twice the compute)",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=0.5,
        help="probability above which a pixel is tumour (default 0.5)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=8, metavar="B", help="slices per forward pass (default 8)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _load(args: argparse.Namespace) -> Predictor:
    if not args.checkpoint.is_file():
        if args.checkpoint == BUNDLED_CHECKPOINT:
            raise CheckpointError(
                f"the bundled model {BUNDLED_CHECKPOINT} is not there (it ships with releases). "
                "Train one with `python -m training.train --out runs/my-run` and pass "
                "--checkpoint runs/my-run/best.safetensors"
            )
        raise CheckpointError(f"checkpoint not found: {args.checkpoint}")
    return Predictor.from_checkpoint(
        args.checkpoint, args.device, precision=args.precision, tta=args.tta,
        threshold=args.threshold, batch_size=args.batch_size,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.batch_size < 1 or not 0 < args.threshold < 1:
        print("error: --batch-size must be >= 1 and --threshold in (0, 1)", file=sys.stderr)
        return 2
    try:
        jobs = collect_jobs(args.inputs)
        predictor = _load(args)
    except (InputError, CheckpointError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    writer = Writer(args.out)
    failures: list[str] = []
    total = sum(_slice_count(job) for job in jobs)
    with tqdm(total=total, unit="slice", desc="segmenting", disable=args.quiet) as bar:
        slice_jobs = [job for job in jobs if isinstance(job, SliceFile)]
        groups: list[tuple[str, list[Any]]] = [("slices", slice_jobs)] if slice_jobs else []
        groups += [(str(job.path), [job]) for job in jobs if not isinstance(job, SliceFile)]
        for label, group in groups:
            try:
                if isinstance(group[0], SliceFile):
                    failures += run_slices(group, predictor, writer, bar, args.batch_size)
                elif isinstance(group[0], PatientFolder):
                    run_patient(group[0], predictor, writer, bar, args.batch_size)
                else:
                    run_nifti(group[0], predictor, writer, bar, args.batch_size)
            except (DecodeProblem, DatasetError, OSError) as exc:
                failures.append(f"{label}: {exc}")
    csv_path = writer.write_csv()
    with_tumour = sum(1 for row in writer.rows if row["tumour_pixels"] > 0)
    print(
        f"segmented {len(writer.rows)} slices from {len(args.inputs)} input(s) with "
        f"{predictor.model_version} ({predictor.precision}); {with_tumour} with tumour; "
        f"masks and {csv_path.name} in {args.out}"
    )
    for failure in failures:
        print(f"error: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
