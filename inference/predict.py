"""Segment slices, patient folders and NIfTI volumes from the command line.

    python -m inference.predict INPUT... [--checkpoint CKPT] --out DIR [--tta] [--overwrite]

Inputs (the format of a file is sniffed from its bytes, not its name):

- a slice image (TIFF, PNG, JPEG) -> ``DIR/<name>_pred.png`` (0 background, 255 tumour);
- a kaggle_3m patient folder (``TCGA_<inst>_<patient>_<date>/``) ->
  ``DIR/<patient>/<slice>_pred.png`` for each slice;
- a kaggle_3m root (a folder of patient folders) -> every patient, as above;
- a NIfTI (``.nii`` / ``.nii.gz``, a slice or a volume) -> ``DIR/<name>_pred.nii.gz``
  (uint8 0/1 on the input's voxel grid, with the input's affine).

Ground truth: a file named ``<name>_mask.<ext>`` beside ``<name>.<ext>`` (given among the
inputs, or in a patient folder) is the expert mask of that image: it is never segmented, and
it adds Dice to the outputs. Predictions are always named ``*_pred.*``, and an existing file is
never replaced unless ``--overwrite`` is given, so inputs and ground truth are safe even with
``--out`` set to the input folder.

``DIR/areas.csv`` lists the tumour area of every slice (pixels, fraction, mm² when the NIfTI
header gives the pixel spacing, maximum probability, Dice against the ground truth if any);
``DIR/summary.csv`` has one row per case (a slice file, a patient folder or a NIfTI): slices,
tumour voxels, volume in ml when the spacing is known, and volumetric Dice when there is truth.
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
from data.masks import MaskError, binary_mask, binary_volume
from data.naming import is_prediction_name, pair_by_name, prediction_name, stem
from data.preprocessing import check_channels
from inference.decode import (
    DecodeProblem,
    decode_nifti,
    decode_slice,
    lossy_warning,
    sniff,
    voxel_volume_mm3,
)
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
SUMMARY_COLUMNS = [
    "case", "slices", "slices_with_tumour", "tumour_voxels", "tumour_volume_ml", "true_voxels",
    "dice",
]  # fmt: skip


class InputError(ValueError):
    """An input path that cannot be used; the message says why."""


class OutputExists(OSError):
    """A prediction would replace an existing file and ``--overwrite`` was not given."""


@dataclass
class SliceFile:
    path: Path
    mask: Path | None = None


@dataclass
class PatientFolder:
    path: Path
    slices: list[tuple[int, Path, Path | None]] = field(default_factory=list)


@dataclass
class NiftiFile:
    path: Path
    mask: Path | None = None


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


def _file_kind(path: Path) -> str:
    with path.open("rb") as fh:
        head = fh.read(512)
    try:
        fmt = sniff(head)
    except DecodeProblem as exc:
        raise InputError(f"{path}: {exc}") from exc
    if fmt == "zip":
        raise InputError(f"{path}: unzip it first and pass the patient folder")
    return "nifti" if fmt in ("nifti", "gzip") else "slice"


def _file_jobs(files: Sequence[Path]) -> list[Job]:
    """Image files paired with their ``_mask`` files; predictions of earlier runs skipped."""
    jobs: list[Job] = []
    skipped = [f for f in files if is_prediction_name(f.name)]
    if skipped:
        log.warning("skipping %d earlier prediction(s) (*_pred.*) among the inputs", len(skipped))
    files = [f for f in files if not is_prediction_name(f.name)]
    by_folder: dict[Path, list[Path]] = {}
    for path in files:
        by_folder.setdefault(path.parent, []).append(path)
    for folder_files in by_folder.values():
        pairs, orphans, duplicates = pair_by_name(folder_files, lambda p: p.name)
        if orphans:
            raise InputError(f"{orphans[0]}: a ground-truth mask (named *_mask) without its "
                             "image; pass the image too, or leave the mask out")
        if duplicates:
            raise InputError(f"{duplicates[0]}: a second file for the same case")
        for image, named in pairs:
            # The mask may sit beside the image without being named on the command line.
            mask = named or next((m for m in image.parent.glob(f"{stem(image.name)}_mask.*")
                                  if m.is_file()), None)
            kind = _file_kind(image)
            jobs.append(NiftiFile(image, mask) if kind == "nifti" else SliceFile(image, mask))
    return jobs


def collect_jobs(inputs: Sequence[Path]) -> list[Job]:
    """Classify every input; raises InputError for a path that is none of the kinds above."""
    files: list[Path] = []
    folders: list[Job] = []
    for path in inputs:
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            slices = _patient_slices(path)
            if slices:
                folders.append(PatientFolder(path, slices))
                continue
            patients = sorted(d for d in path.iterdir() if d.is_dir() and PATIENT_DIR.match(d.name))
            found = [PatientFolder(d, _patient_slices(d)) for d in patients]
            found = [p for p in found if p.slices]
            if not found:
                raise InputError(
                    f"{path}: neither a kaggle_3m patient folder (TCGA_..._<n>.tif files) nor a "
                    "folder of patient folders"
                )
            folders.extend(found)
        else:
            raise InputError(f"{path}: no such file or folder")
    return [*_file_jobs(files), *folders]


def _slice_count(job: Job) -> int:
    return len(job.slices) if isinstance(job, PatientFolder) else 1


@dataclass
class CaseSummary:
    """One row of summary.csv: a slice file, a patient folder or a NIfTI volume."""

    case: str
    masks: list[np.ndarray]
    truths: list[np.ndarray] | None
    voxel_ml: float | None = None

    def row(self) -> dict[str, Any]:
        voxels = int(sum(int(m.sum()) for m in self.masks))
        row: dict[str, Any] = {
            "case": self.case,
            "slices": len(self.masks),
            "slices_with_tumour": sum(bool(m.any()) for m in self.masks),
            "tumour_voxels": voxels,
            "tumour_volume_ml": "" if self.voxel_ml is None else f"{voxels * self.voxel_ml:.3f}",
            "true_voxels": "",
            "dice": "",
        }
        if self.truths is not None:
            row["true_voxels"] = int(sum(int(t.sum()) for t in self.truths))
            row["dice"] = f"{dice(np.stack(self.masks), np.stack(self.truths)):.4f}"
        return row


class Writer:
    """Writes predictions under ``out`` and collects the CSV rows.

    A target that exists already is refused (``OutputExists``) unless ``overwrite``; two inputs
    of this run that would share a name get ``_2``, ``_3``... .
    """

    def __init__(self, out: Path, *, overwrite: bool = False) -> None:
        self.out = out
        self.overwrite = overwrite
        self.rows: list[dict[str, Any]] = []
        self.cases: list[CaseSummary] = []
        self._used: set[Path] = set()

    def target(self, relative: str) -> Path:
        path = self.out / relative
        base, n = path, 2
        while path in self._used:
            path = base.with_name(base.name.replace("_pred.", f"_pred_{n}.", 1))
            n += 1
        if path.exists() and not self.overwrite:
            raise OutputExists(f"{path} exists; pass --overwrite to replace it, or choose "
                               "another --out")
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

    def write_csvs(self) -> tuple[Path, Path]:
        areas, summary = self.out / "areas.csv", self.out / "summary.csv"
        for path, columns, rows in ((areas, CSV_COLUMNS, self.rows),
                                    (summary, SUMMARY_COLUMNS, [c.row() for c in self.cases])):
            with path.open("w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=columns)
                writer.writeheader()
                writer.writerows(rows)
        return areas, summary


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _truth(mask: Path | None, shape: tuple[int, ...]) -> np.ndarray | None:
    """The ground truth in ``mask`` (decoded with the one mask rule), checked against ``shape``."""
    if mask is None:
        return None
    truth = binary_mask(decode_slice(mask.read_bytes()))
    if truth.shape != shape:
        raise MaskError(f"{mask.name} is {truth.shape[0]}x{truth.shape[1]} but its image is "
                        f"{shape[0]}x{shape[1]}")
    return truth


def run_slices(
    jobs: list[SliceFile], predictor: Predictor, writer: Writer, bar: tqdm, batch_size: int
) -> list[str]:
    """Segment single slice files in batches; returns the files that could not be used."""
    failures = []
    for chunk in _chunks(jobs, batch_size):
        decoded = []
        for job in chunk:
            try:
                data = job.path.read_bytes()
                image = decode_slice(data)
                check_channels(image)
                truth = _truth(job.mask, image.shape[:2])
                target = writer.target(prediction_name(job.path.name, ".png"))
            except (DecodeProblem, OSError, ValueError) as exc:
                failures.append(f"{job.path}: {exc}")
                continue
            warning = lossy_warning(data)
            if warning:
                print(f"warning: {job.path}: {warning}", file=sys.stderr)
            decoded.append((job, image, truth, target))
        preds = predictor.predict_batch([image for _, image, _, _ in decoded])
        for (job, _, truth, target), pred in zip(decoded, preds, strict=True):
            atomic_write_bytes(target, mask_to_png(pred.mask))
            writer.row(job.path, "", pred, truth=truth)
            writer.cases.append(CaseSummary(job.path.name, [pred.mask],
                                            None if truth is None else [truth]))
        bar.update(len(chunk))
    return failures


def run_patient(
    job: PatientFolder, predictor: Predictor, writer: Writer, bar: tqdm, batch_size: int
) -> None:
    masks: list[np.ndarray] = []
    truths: list[np.ndarray] = []
    targets = [writer.target(f"{job.path.name}/{prediction_name(image.name, '.png')}")
               for _, image, _ in job.slices]
    for chunk, chunk_targets in zip(_chunks(job.slices, batch_size),
                                    _chunks(targets, batch_size), strict=True):
        images = [read_image(image) for _, image, _ in chunk]
        preds = predictor.predict_batch(images)
        for (index, _, mask), pred, target in zip(chunk, preds, chunk_targets, strict=True):
            atomic_write_bytes(target, mask_to_png(pred.mask))
            truth = read_mask(mask) if mask is not None else None
            writer.row(job.path, index, pred, truth=truth)
            masks.append(pred.mask)
            if truth is not None:
                truths.append(truth)
        bar.update(len(chunk))
    complete = len(truths) == len(masks)
    writer.cases.append(CaseSummary(job.path.name, masks, truths if complete else None))


def run_nifti(
    job: NiftiFile, predictor: Predictor, writer: Writer, bar: tqdm, batch_size: int
) -> None:
    volume = decode_nifti(job.path.read_bytes())
    depth = volume.data.shape[2]
    truth = None
    if job.mask is not None:
        truth = binary_volume(decode_nifti(job.mask.read_bytes()).data)
        if truth.shape != volume.data.shape[:3]:
            raise MaskError(f"{job.mask.name} has shape {truth.shape} but its volume "
                            f"{volume.data.shape[:3]}")
    target = writer.target(prediction_name(job.path.name, ".nii.gz"))
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
    atomic_write_bytes(target, nifti_to_gz_bytes(image))
    for k, pred in enumerate(preds):
        writer.row(job.path, k + 1, pred, pixel_mm2=pixel_mm2,
                   truth=None if truth is None else truth[:, :, k])
    voxel_mm3, _ = voxel_volume_mm3(volume)  # None (voxels only) for an unusable spacing
    writer.cases.append(CaseSummary(
        job.path.name, [p.mask for p in preds],
        None if truth is None else [truth[:, :, k] for k in range(depth)],
        None if voxel_mm3 is None else voxel_mm3 / 1000.0,
    ))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m inference.predict",
        description=__doc__,
        epilog=(
            "Outputs: DIR/<name>_pred.png per slice (0/255), DIR/<patient>/<slice>_pred.png per "
            "patient slice, DIR/<name>_pred.nii.gz per NIfTI (the input's affine), "
            "DIR/areas.csv (every slice) and DIR/summary.csv (every case). Research use only."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "inputs",
        nargs="+",
        type=Path,
        metavar="INPUT",
        help="slice images (tif/png/jpg) with optional <name>_mask files, kaggle_3m patient "
        "folders or their root, NIfTI volumes (.nii/.nii.gz)",
    )
    parser.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="output folder (created if missing)"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace predictions (*_pred.*) that exist in DIR (default: refuse)",
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


def format_summary(rows: list[dict[str, Any]]) -> str:
    """The per-case table printed at the end."""
    header = f"{'case':<40} {'slices':>6} {'tumour':>6} {'voxels':>8} {'ml':>8} {'Dice':>6}"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(f"{r['case'][:40]:<40} {r['slices']:>6} {r['slices_with_tumour']:>6} "
                     f"{r['tumour_voxels']:>8} {r['tumour_volume_ml'] or '-':>8} "
                     f"{r['dice'] or '-':>6}")
    return "\n".join(lines)


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
    writer = Writer(args.out, overwrite=args.overwrite)
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
            except (DecodeProblem, DatasetError, OSError, ValueError) as exc:
                failures.append(f"{label}: {exc}")
    areas, summary = writer.write_csvs()
    if writer.cases:
        print(format_summary([case.row() for case in writer.cases]))
    with_tumour = sum(1 for row in writer.rows if row["tumour_pixels"] > 0)
    print(
        f"segmented {len(writer.rows)} slices from {len(args.inputs)} input(s) with "
        f"{predictor.model_version} ({predictor.precision}); {with_tumour} with tumour; "
        f"predictions, {areas.name} and {summary.name} in {args.out}"
    )
    for failure in failures:
        print(f"error: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
