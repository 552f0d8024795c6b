"""Segment slices, patient folders, NIfTI volumes, sequence files and DICOM studies.

    python -m inference.predict INPUT... --out DIR [--checkpoint CKPT] [--tta] [--overwrite]
    python -m inference.predict --pre T1.nii.gz --flair FLAIR.nii.gz --post T1C.nii.gz --out DIR

Inputs (the format of a file is sniffed from its bytes; the kind of a folder from its files):

- a slice image (TIFF, PNG, JPEG) holding the three sequences as its channels ->
  ``DIR/<name>_pred.png`` (0 background, 255 tumour);
- a kaggle_3m patient folder (``TCGA_<inst>_<patient>_<date>/``) ->
  ``DIR/<patient>/<slice>_pred.png`` for each slice; a kaggle_3m root -> every patient;
- a NIfTI (``.nii`` / ``.nii.gz``, a slice or a volume, the 3 sequences on a 4th axis) ->
  ``DIR/<name>_pred.nii.gz`` (uint8 0/1 on the input's voxel grid, with its affine);
- three sequence files per case, named as nnU-Net names them: ``<case>_0000.nii.gz``
  (pre-contrast), ``<case>_0001.nii.gz`` (FLAIR), ``<case>_0002.nii.gz`` (post-contrast),
  given as files or as a folder of them (``imagesTs/``) -> ``DIR/<case>_pred.nii.gz``; or one
  case under any names with ``--pre/--flair/--post`` (``--case`` names it). The three must lie
  on one voxel grid (shape and affine): otherwise the error names the files and what differs;
- a DICOM study folder (any layout below it), one MR series per sequence, chosen with
  ``--pre-series/--flair-series/--post-series`` (SeriesDescription or SeriesInstanceUID) or
  else by SeriesDescription (FLAIR: "flair"; post-contrast: "post", "+c", "gd", "contrast"...;
  pre-contrast: "pre" or a T1 without those; see ``data/dicom.py``); an ambiguous study is an
  error that lists its series -> ``DIR/<study>_pred.nii.gz`` and a DICOM SEG
  ``DIR/<study>_pred.dcm`` that references the three series (FLAIR frame by frame).

Ground truth (optional; it adds Dice and HD95): ``<name>_mask.<ext>`` beside ``<name>.<ext>``
(given among the inputs or lying beside them), never segmented; for sequence cases
``<case>.nii.gz`` in ``--labels DIR`` (nnU-Net's ``labelsTs``) or ``<case>_mask.nii.gz`` beside
the sequences; ``--truth FILE`` for the one ``--pre/--flair/--post`` case or DICOM study (a
NIfTI on the case's grid). Predictions are always named ``*_pred.*``, and an existing file is
never replaced unless ``--overwrite`` is given, so inputs and ground truth are safe even with
``--out`` set to the input folder.

Units: areas in mm², volumes in ml and HD95 in mm wherever the voxel spacing is known (a NIfTI
header, DICOM); the TIFF/PNG slices carry none, so there they are in pixels (``hd95_px``).
Slices are numbered from 1. ``DIR/areas.csv`` lists every slice (tumour pixels, fraction, mm²,
maximum probability, Dice against the truth); ``DIR/summary.csv`` one row per case (slices,
slices with tumour, tumour voxels, ml, voxel spacing, and with truth: true voxels, volumetric
Dice, ``hd95_mm`` or ``hd95_px``); ``DIR/qc/<case>.png`` a montage of the tumour slices with the
prediction (red) over the FLAIR and the truth outlined (green).

Examples:

    python -m inference.predict TCGA_CS_4941_19960909/ --out preds/
    python -m inference.predict imagesTs/ --labels labelsTs/ --out preds/
    python -m inference.predict BraTS_001_0000.nii.gz BraTS_001_0001.nii.gz \\
        BraTS_001_0002.nii.gz --out preds/
    python -m inference.predict --pre t1.nii.gz --flair flair.nii.gz --post t1c.nii.gz \\
        --truth tumour.nii.gz --case patient7 --out preds/
    python -m inference.predict dicom/study1/ --flair-series "AX FLAIR" --out preds/
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from data.atomic import atomic_write_bytes
from data.dicom import DicomError
from data.kaggle3m import PATIENT_DIR, SLICE_FILE, DatasetError, read_image, read_mask
from data.masks import MaskError, binary_mask, binary_volume
from data.naming import (
    case_prediction_name,
    is_prediction_name,
    pair_by_name,
    prediction_name,
    sequence_file,
    stem,
)
from data.preprocessing import check_channels
from inference.decode import (
    MM3_PER_ML,
    DecodeProblem,
    decode_nifti,
    decode_slice,
    lossy_warning,
    sniff,
    voxel_spacing_mm,
)
from inference.dicom_seg import dicom_bytes, mask_to_dicom_seg
from inference.engines import ENGINES, PRECISIONS
from inference.metrics import dice, hd95, hd95_key
from inference.outputs import mask_to_nifti, mask_to_png, nifti_to_gz_bytes
from inference.predictor import Predictor, SlicePrediction
from inference.qc import qc_montage
from inference.sources import (
    LOCAL_LIMITS,
    DicomStudy,
    InputError,
    SequenceFiles,
    SeriesChoice,
    VolumeCase,
    folder_sequence_cases,
    is_dicom_folder,
    load_dicom,
    load_sequences,
    split_sequence_files,
)
from models import BUNDLED_CHECKPOINT
from models.checkpoint import CheckpointError

log = logging.getLogger(__name__)

CSV_COLUMNS = [
    "input", "slice", "height", "width", "tumour_pixels", "tumour_fraction", "tumour_mm2",
    "max_probability", "true_pixels", "dice",
]  # fmt: skip
SUMMARY_COLUMNS = [
    "case", "slices", "slices_with_tumour", "tumour_voxels", "tumour_volume_ml",
    "voxel_spacing_mm", "true_voxels", "dice", "hd95_mm", "hd95_px",
]  # fmt: skip


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


Job = SliceFile | PatientFolder | NiftiFile | SequenceFiles | DicomStudy


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


def _file_jobs(files: Sequence[Path], labels: Path | None = None) -> list[Job]:
    """Sequence files grouped by case; other images paired with their ``_mask`` files;
    predictions of earlier runs skipped."""
    jobs: list[Job] = []
    skipped = [f for f in files if is_prediction_name(f.name)]
    if skipped:
        log.warning("skipping %d earlier prediction(s) (*_pred.*) among the inputs", len(skipped))
    files = [f for f in files if not is_prediction_name(f.name)]
    sequence_cases, files = split_sequence_files(files, labels)
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
    return [*jobs, *sequence_cases]


def _folder_jobs(path: Path, labels: Path | None) -> list[Job]:
    """A kaggle_3m patient folder or root, a folder of sequence files, or a DICOM study."""
    slices = _patient_slices(path)
    if slices:
        return [PatientFolder(path, slices)]
    patients = sorted(d for d in path.iterdir() if d.is_dir() and PATIENT_DIR.match(d.name))
    found = [PatientFolder(d, _patient_slices(d)) for d in patients]
    if any(p.slices for p in found):
        return [p for p in found if p.slices]
    sequences = folder_sequence_cases(path, labels)
    if sequences:
        return list(sequences)
    if is_dicom_folder(path):
        return [DicomStudy(path)]
    raise InputError(
        f"{path}: none of the folders this tool reads: a kaggle_3m patient folder "
        "(TCGA_..._<n>.tif files) or a folder of them, a folder of sequence files "
        "(<case>_0000/_0001/_0002.nii.gz), or a DICOM study"
    )


def collect_jobs(inputs: Sequence[Path], labels: Path | None = None) -> list[Job]:
    """Classify every input; raises InputError for a path that is none of the kinds above."""
    files: list[Path] = []
    folders: list[Job] = []
    for path in inputs:
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            folders.extend(_folder_jobs(path, labels))
        else:
            raise InputError(f"{path}: no such file or folder")
    return [*_file_jobs(files, labels), *folders]


def _slice_count(job: Job) -> int:
    return len(job.slices) if isinstance(job, PatientFolder) else 1


def _number(value: float, digits: int) -> str:
    return "" if not math.isfinite(value) else f"{value:.{digits}f}"


@dataclass
class CaseSummary:
    """One row of summary.csv: a slice file, a patient folder or a volume.

    ``masks`` (and ``truths``) are the case's slices in order; ``spacing_mm`` the voxel spacing
    along (rows, columns, slices) when known (``inference.decode.voxel_spacing_mm``).
    """

    case: str
    masks: list[np.ndarray]
    truths: list[np.ndarray] | None
    spacing_mm: tuple[float, float, float] | None = None

    def row(self) -> dict[str, Any]:
        voxels = int(sum(int(m.sum()) for m in self.masks))
        spacing = self.spacing_mm
        row: dict[str, Any] = {
            "case": self.case,
            "slices": len(self.masks),
            "slices_with_tumour": sum(bool(m.any()) for m in self.masks),
            "tumour_voxels": voxels,
            "tumour_volume_ml": ""
            if spacing is None
            else f"{voxels * float(np.prod(spacing)) / MM3_PER_ML:.3f}",
            "voxel_spacing_mm": "" if spacing is None else "x".join(f"{s:g}" for s in spacing),
            "true_voxels": "",
            "dice": "",
            "hd95_mm": "",
            "hd95_px": "",
        }
        if self.truths is not None:
            predicted, true = np.stack(self.masks, axis=2), np.stack(self.truths, axis=2)
            row["true_voxels"] = int(true.sum())
            row["dice"] = f"{dice(predicted, true):.4f}"
            row[hd95_key(spacing)] = _number(hd95(predicted, true, spacing), 2)
        return row


def _deduplicated(path: Path, n: int) -> Path:
    """``x_pred.png`` -> ``x_pred_2.png``; ``qc/x.png`` -> ``qc/x_2.png``."""
    name = path.name
    if "_pred." in name:
        return path.with_name(name.replace("_pred.", f"_pred_{n}.", 1))
    base = stem(name)
    return path.with_name(f"{base}_{n}{name[len(base):]}")


class Writer:
    """Writes predictions under ``out`` and collects the CSV rows.

    A target that exists already is refused (``OutputExists``) unless ``overwrite``; two inputs
    of this run that would share a name get ``_2``, ``_3``... .
    """

    def __init__(self, out: Path, *, overwrite: bool = False, qc: bool = True) -> None:
        self.out = out
        self.overwrite = overwrite
        self.qc = qc
        self.rows: list[dict[str, Any]] = []
        self.cases: list[CaseSummary] = []
        self._used: set[Path] = set()

    def target(self, relative: str) -> Path:
        base = self.out / relative
        path, n = base, 2
        while path in self._used:
            path = _deduplicated(base, n)
            n += 1
        if path.exists() and not self.overwrite:
            raise OutputExists(f"{path} exists; pass --overwrite to replace it, or choose "
                               "another --out")
        self._used.add(path)
        return path

    def qc_target(self, name: str) -> Path | None:
        """Where the QC montage of case ``name`` goes (None with ``--no-qc``)."""
        return self.target(f"qc/{name}.png") if self.qc else None

    def row(
        self,
        source: Path | str,
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


def _write_qc(
    target: Path | None,
    title: str,
    flair: list[np.ndarray],
    masks: list[np.ndarray],
    truths: list[np.ndarray] | None,
    pixel_mm2: float | None = None,
) -> None:
    if target is None:
        return
    montage = qc_montage(
        np.stack(flair, axis=2), np.stack(masks, axis=2),
        None if truths is None else np.stack(truths, axis=2), title=title, pixel_mm2=pixel_mm2,
    )  # fmt: skip
    atomic_write_bytes(target, montage)


def _flair(image: np.ndarray) -> np.ndarray:
    """The FLAIR channel of a slice (channel 1: pre-contrast, FLAIR, post-contrast)."""
    return image[:, :, 1] if image.ndim == 3 and image.shape[2] >= 3 else image


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
                qc = writer.qc_target(stem(job.path.name))
            except (DecodeProblem, OSError, ValueError) as exc:
                failures.append(f"{job.path}: {exc}")
                continue
            warning = lossy_warning(data)
            if warning:
                print(f"warning: {job.path}: {warning}", file=sys.stderr)
            decoded.append((job, image, truth, target, qc))
        preds = predictor.predict_batch([image for _, image, _, _, _ in decoded])
        for (job, image, truth, target, qc), pred in zip(decoded, preds, strict=True):
            atomic_write_bytes(target, mask_to_png(pred.mask))
            writer.row(job.path, "", pred, truth=truth)
            truths = None if truth is None else [truth]
            writer.cases.append(CaseSummary(job.path.name, [pred.mask], truths))
            _write_qc(qc, job.path.name, [_flair(image)], [pred.mask], truths)
        bar.update(len(chunk))
    return failures


def run_patient(
    job: PatientFolder, predictor: Predictor, writer: Writer, bar: tqdm, batch_size: int
) -> None:
    masks: list[np.ndarray] = []
    truths: list[np.ndarray] = []
    flair: list[np.ndarray] = []
    targets = [writer.target(f"{job.path.name}/{prediction_name(image.name, '.png')}")
               for _, image, _ in job.slices]
    qc = writer.qc_target(job.path.name)
    for chunk, chunk_targets in zip(_chunks(job.slices, batch_size),
                                    _chunks(targets, batch_size), strict=True):
        images = [read_image(image) for _, image, _ in chunk]
        preds = predictor.predict_batch(images)
        for (index, _, mask), pred, target, image in zip(chunk, preds, chunk_targets, images,
                                                          strict=True):
            atomic_write_bytes(target, mask_to_png(pred.mask))
            truth = read_mask(mask) if mask is not None else None
            writer.row(job.path, index, pred, truth=truth)
            masks.append(pred.mask)
            flair.append(_flair(image))
            if truth is not None:
                truths.append(truth)
        bar.update(len(chunk))
    complete = truths if len(truths) == len(masks) else None
    writer.cases.append(CaseSummary(job.path.name, masks, complete))
    _write_qc(qc, job.path.name, flair, masks, complete)


def load_nifti(job: NiftiFile) -> VolumeCase:
    """A single NIfTI (the sequences on a 4th axis) and its ``_mask`` NIfTI, if any."""
    volume = decode_nifti(job.path.read_bytes(), LOCAL_LIMITS)
    truth = None
    if job.mask is not None:
        truth = binary_volume(decode_nifti(job.mask.read_bytes(), LOCAL_LIMITS).data)
        if truth.shape != volume.data.shape[:3]:
            raise MaskError(f"{job.mask.name} has shape {truth.shape} but its volume "
                            f"{volume.data.shape[:3]}")
    return VolumeCase(job.path.name, stem(job.path.name), str(job.path), volume, truth)


def run_volume(
    case: VolumeCase, predictor: Predictor, writer: Writer, bar: tqdm, batch_size: int
) -> None:
    """Segment a loaded volume slice by slice along axis 2; write its mask on its own grid
    (and a DICOM SEG for a DICOM study), its rows and its montage."""
    volume = case.volume
    depth = volume.data.shape[2]
    target = writer.target(case_prediction_name(case.stem, ".nii.gz"))
    seg_target = writer.target(case_prediction_name(case.stem, ".dcm")) if case.dicom else None
    qc = writer.qc_target(case.stem)
    bar.total += depth - 1
    bar.refresh()
    slices = [volume.data[:, :, k] for k in range(depth)]
    spacing, no_spacing = voxel_spacing_mm(volume)
    if spacing is None:
        log.warning("%s: %s", case.source, no_spacing)
    pixel_mm2 = None if spacing is None else spacing[0] * spacing[1]
    preds: list[SlicePrediction] = []
    for chunk in _chunks(slices, batch_size):
        preds += predictor.predict_batch(chunk)
        bar.update(len(chunk))
    masks = np.stack([p.mask for p in preds], axis=2)
    atomic_write_bytes(target, nifti_to_gz_bytes(mask_to_nifti(masks, volume.affine,
                                                               volume.header)))
    if seg_target is not None and case.dicom is not None:
        pre, flair, post = case.dicom
        seg = mask_to_dicom_seg(masks, flair, [pre, post], predictor.model_version)
        atomic_write_bytes(seg_target, dicom_bytes(seg))
    truth = case.truth
    for k, pred in enumerate(preds):
        writer.row(case.source, k + 1, pred, pixel_mm2=pixel_mm2,
                   truth=None if truth is None else truth[:, :, k])
    truths = None if truth is None else [truth[:, :, k] for k in range(depth)]
    writer.cases.append(CaseSummary(case.case, [p.mask for p in preds], truths, spacing))
    _write_qc(qc, case.case, [_flair(s) for s in slices], [p.mask for p in preds], truths,
              pixel_mm2)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m inference.predict",
        description=__doc__,
        epilog=(
            "Outputs: DIR/<name>_pred.png per slice (0/255), DIR/<patient>/<slice>_pred.png per "
            "patient slice, DIR/<name>_pred.nii.gz per NIfTI or sequence case (the input's "
            "grid and affine), DIR/<study>_pred.nii.gz and DIR/<study>_pred.dcm (DICOM SEG) per "
            "DICOM study, DIR/qc/<case>.png (QC montage), DIR/areas.csv (every slice) and "
            "DIR/summary.csv (every case). Research use only, not for diagnosis."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "inputs",
        nargs="*",
        type=Path,
        metavar="INPUT",
        help="slice images (tif/png/jpg) with optional <name>_mask files, kaggle_3m patient "
        "folders or their root, NIfTI volumes (.nii/.nii.gz), sequence files "
        "<case>_0000/_0001/_0002.nii.gz or a folder of them, DICOM study folders",
    )
    parser.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="output folder (created if missing)"
    )
    sequences = parser.add_argument_group(
        "one case from three sequence files (any names, one voxel grid)"
    )
    sequences.add_argument("--pre", type=Path, metavar="FILE", help="pre-contrast NIfTI")
    sequences.add_argument("--flair", type=Path, metavar="FILE", help="FLAIR NIfTI")
    sequences.add_argument("--post", type=Path, metavar="FILE", help="post-contrast NIfTI")
    sequences.add_argument(
        "--case", metavar="NAME",
        help="the case's name in the outputs (default: the FLAIR file's name)",
    )  # fmt: skip
    truth = parser.add_argument_group("ground truth (optional: adds Dice and HD95)")
    truth.add_argument(
        "--truth", type=Path, metavar="FILE",
        help="the tumour mask (NIfTI on the case's grid) of the --pre/--flair/--post case or "
        "of the one DICOM study or sequence case among the inputs",
    )  # fmt: skip
    truth.add_argument(
        "--labels", type=Path, metavar="DIR",
        help="folder of ground truth for sequence cases: DIR/<case>.nii.gz (nnU-Net labelsTs)",
    )  # fmt: skip
    dicom = parser.add_argument_group(
        "DICOM studies: which series holds which sequence (default: by SeriesDescription)"
    )
    for role, name in (("pre", "pre-contrast"), ("flair", "FLAIR"), ("post", "post-contrast")):
        dicom.add_argument(
            f"--{role}-series", metavar="NAME_OR_UID",
            help=f"the {name} series: its SeriesDescription (case-insensitive) or "
            "SeriesInstanceUID",
        )  # fmt: skip
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace predictions (*_pred.*) and montages that exist in DIR (default: refuse)",
    )
    parser.add_argument(
        "--no-qc", action="store_true", help="no QC montages (DIR/qc/<case>.png)"
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
        "--engine",
        choices=list(ENGINES),
        default="auto",
        help="what runs the network: auto (default; OpenVINO on CPU where installed, torch on "
        "CUDA), torch (the reference) or openvino",
    )
    parser.add_argument(
        "--precision",
        choices=list(PRECISIONS),
        default="auto",
        help="auto (default): int8 where a validated int8 model lies beside the weights "
        "(python -m training.quantize), else bf16 where the hardware runs it natively, else "
        "fp32; int8 needs --engine openvino or auto",
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
        threshold=args.threshold, batch_size=args.batch_size, engine=args.engine,
    )  # fmt: skip


def _jobs(args: argparse.Namespace) -> list[Job]:
    """Every case the arguments name (InputError for inconsistent ones)."""
    given = [args.pre, args.flair, args.post]
    if any(given) and not all(given):
        raise InputError("--pre, --flair and --post go together: give all three files")
    if args.case and not all(given):
        raise InputError("--case names the --pre/--flair/--post case; give those too")
    if not args.inputs and not all(given):
        raise InputError("nothing to segment: give INPUT paths or --pre/--flair/--post")
    if args.labels is not None and not args.labels.is_dir():
        raise InputError(f"--labels {args.labels}: not a folder")
    jobs = collect_jobs(args.inputs, args.labels)
    if all(given):
        for path in given:
            if not path.is_file():
                raise InputError(f"{path}: no such file")
        found = sequence_file(args.flair.name)
        case = args.case or (found[0] if found else stem(args.flair.name))
        jobs.append(SequenceFiles(case, (args.pre, args.flair, args.post)))
    if args.truth is not None:
        volumes = [job for job in jobs if isinstance(job, SequenceFiles | DicomStudy)]
        if len(volumes) != 1:
            raise InputError(f"--truth belongs to one case, and {len(volumes)} sequence cases "
                             "or DICOM studies were given; name truths <case>.nii.gz in "
                             "--labels instead")
        if not args.truth.is_file():
            raise InputError(f"--truth {args.truth}: no such file")
        volumes[0].truth = args.truth
    series = [args.pre_series, args.flair_series, args.post_series]
    if any(series) and not any(isinstance(job, DicomStudy) for job in jobs):
        raise InputError("--pre-series/--flair-series/--post-series choose series of a DICOM "
                         "study, and no DICOM study folder was given")
    return jobs


def format_summary(rows: list[dict[str, Any]]) -> str:
    """The per-case table printed at the end."""
    header = (f"{'case':<36} {'slices':>6} {'tumour':>6} {'voxels':>8} {'ml':>8} {'Dice':>6} "
              f"{'HD95':>10}")
    lines = [header, "-" * len(header)]
    for r in rows:
        distance = (f"{r['hd95_mm']} mm" if r["hd95_mm"] else
                    f"{r['hd95_px']} px" if r["hd95_px"] else "-")
        lines.append(f"{r['case'][:36]:<36} {r['slices']:>6} {r['slices_with_tumour']:>6} "
                     f"{r['tumour_voxels']:>8} {r['tumour_volume_ml'] or '-':>8} "
                     f"{r['dice'] or '-':>6} {distance:>10}")
    return "\n".join(lines)


def _run(
    job: Job, args: argparse.Namespace, predictor: Predictor, writer: Writer, bar: tqdm
) -> None:
    if isinstance(job, PatientFolder):
        run_patient(job, predictor, writer, bar, args.batch_size)
        return
    if isinstance(job, NiftiFile):
        case = load_nifti(job)
    elif isinstance(job, SequenceFiles):
        case = load_sequences(job)
    elif isinstance(job, DicomStudy):
        choice = SeriesChoice(args.pre_series, args.flair_series, args.post_series)
        case = load_dicom(job, choice)
    else:  # pragma: no cover - slice files go through run_slices
        raise TypeError(f"unexpected job {job!r}")
    run_volume(case, predictor, writer, bar, args.batch_size)


def _label(job: Job) -> str:
    if isinstance(job, SequenceFiles):
        return f"case {job.case}"
    return str(job.path)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.batch_size < 1 or not 0 < args.threshold < 1:
        print("error: --batch-size must be >= 1 and --threshold in (0, 1)", file=sys.stderr)
        return 2
    try:
        jobs = _jobs(args)
        predictor = _load(args)
    except (InputError, CheckpointError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    writer = Writer(args.out, overwrite=args.overwrite, qc=not args.no_qc)
    failures: list[str] = []
    total = sum(_slice_count(job) for job in jobs)
    with tqdm(total=total, unit="slice", desc="segmenting", disable=args.quiet) as bar:
        slice_jobs = [job for job in jobs if isinstance(job, SliceFile)]
        if slice_jobs:
            try:
                failures += run_slices(slice_jobs, predictor, writer, bar, args.batch_size)
            except (DecodeProblem, OSError, ValueError) as exc:
                failures.append(f"slices: {exc}")
        for job in jobs:
            if isinstance(job, SliceFile):
                continue
            try:
                _run(job, args, predictor, writer, bar)
            except (DecodeProblem, DatasetError, DicomError, OSError, ValueError) as exc:
                failures.append(f"{_label(job)}: {exc}")
    areas, summary = writer.write_csvs()
    if writer.cases:
        print(format_summary([case.row() for case in writer.cases]))
    with_tumour = sum(1 for row in writer.rows if row["tumour_pixels"] > 0)
    print(
        f"segmented {len(writer.rows)} slices from {len(args.inputs) + bool(args.pre)} input(s) "
        f"({len(writer.cases)} case(s)) with "
        f"{predictor.model_version} ({predictor.engine.name} {predictor.precision}); "
        f"{with_tumour} with tumour; "
        f"predictions, {areas.name}, {summary.name}"
        f"{'' if args.no_qc else ' and qc/ montages'} in {args.out}"
    )
    for failure in failures:
        print(f"error: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
