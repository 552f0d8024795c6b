"""Volume cases the command line reads besides single files: three sequence files, a DICOM study.

A case is loaded into one :class:`VolumeCase`: an ``H x W x Z x 3`` volume (pre-contrast, FLAIR,
post-contrast) with its grid, the optional ground truth on that grid, and for DICOM the series
it came from (for the DICOM SEG). Naming and grouping follow ``data.naming``; the grid rule is
``inference.sequences``; DICOM reading is ``data.dicom``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.dicom import SeriesVolume, choose_sequences, find_series, read_series
from data.naming import (
    case_key,
    group_sequences,
    is_mask_name,
    is_nifti_name,
    is_prediction_name,
    sequence_file,
    sequence_truth_names,
)
from inference.decode import DecodeLimits, DecodeProblem, Volume, decode_nifti
from inference.sequences import decode_sequences, stack_sequences, truth_on_grid

log = logging.getLogger(__name__)

LOCAL_LIMITS = DecodeLimits(
    max_volume_values=2**28, max_slices=4096, max_decompressed_bytes=2**32
)
"""Limits for files on the user's own disk (the API keeps its tighter ones): a 1 mm T1 of
256 x 256 x 176 in three sequences holds 35 M values, over the API's default 2**25."""


class InputError(ValueError):
    """An input path that cannot be used; the message says why."""


@dataclass
class SequenceFiles:
    """One case as three NIfTI files (pre-contrast, FLAIR, post-contrast) and its truth."""

    case: str
    files: tuple[Path, Path, Path]
    truth: Path | None = None


@dataclass
class DicomStudy:
    """A folder holding one DICOM study (any layout below it) and its truth (a NIfTI)."""

    path: Path
    truth: Path | None = None

    @property
    def case(self) -> str:
        return self.path.resolve().name


@dataclass(frozen=True)
class SeriesChoice:
    """``--pre-series`` / ``--flair-series`` / ``--post-series`` (None: the heuristic)."""

    pre: str | None = None
    flair: str | None = None
    post: str | None = None


@dataclass
class VolumeCase:
    """A loaded case, ready to segment slice by slice along axis 2."""

    case: str
    """Its name in summary.csv."""
    stem: str
    """What its outputs are named after: ``<stem>_pred.nii.gz``, ``qc/<stem>.png``."""
    source: str
    """What areas.csv names as its input."""
    volume: Volume
    truth: np.ndarray | None = None
    dicom: tuple[SeriesVolume, SeriesVolume, SeriesVolume] | None = None


# --------------------------------------------------------------------------- finding cases


def _truth_beside(case: str, folders: Sequence[Path], labels: Path | None) -> Path | None:
    """``labels/<case>.nii[.gz]``, else ``<case>_mask.nii[.gz]`` in one of ``folders``."""
    names = sequence_truth_names(case)
    candidates = [labels / n for n in names[:2]] if labels is not None else []
    candidates += [folder / n for folder in folders for n in names[2:]]
    found = next((path for path in candidates if path.is_file()), None)
    if found is None and labels is not None:
        log.warning("no ground truth for case %s in %s (looked for %s)", case, labels,
                    " or ".join(names[:2]))
    return found


def _cases(files: Sequence[Path], labels: Path | None) -> list[SequenceFiles]:
    groups, problems = group_sequences(files, lambda p: p.name)
    if problems:
        raise InputError("; ".join(problems))
    cases = []
    for group in groups:
        folders = list(dict.fromkeys(path.parent for path in group.files))
        cases.append(SequenceFiles(group.case, group.files, _truth_beside(group.case, folders,
                                                                          labels)))
    return cases


def split_sequence_files(
    files: Sequence[Path], labels: Path | None = None
) -> tuple[list[SequenceFiles], list[Path]]:
    """Pull ``<case>_000N.nii[.gz]`` files (and ``<case>_mask`` files of those cases) out of
    ``files``: ``(sequence cases, the other files)``; InputError for an incomplete case."""
    sequences = [path for path in files if sequence_file(path.name) is not None]
    if not sequences:
        return [], list(files)
    cases = _cases(sequences, labels)
    truths = {case_key(path.name): path for path in files if is_mask_name(path.name)}
    taken = set(sequences)
    for case in cases:
        named = truths.get(case.case.lower())
        if named is not None:
            case.truth = named
            taken.add(named)
    return cases, [path for path in files if path not in taken]


def folder_sequence_cases(folder: Path, labels: Path | None = None) -> list[SequenceFiles]:
    """The sequence cases in ``folder`` (nnU-Net's ``imagesTs``); [] when it holds none."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and sequence_file(p.name))
    if not files:
        return []
    others = [p.name for p in folder.iterdir()
              if is_nifti_name(p.name) and p not in files and not is_prediction_name(p.name)
              and not is_mask_name(p.name)]  # fmt: skip
    if others:
        log.warning("%s: %d NIfTI file(s) not named <case>_000N left aside, e.g. %s",
                    folder, len(others), sorted(others)[0])
    return _cases(files, labels)


def is_dicom_folder(folder: Path) -> bool:
    """True when a file under ``folder`` (any depth) is DICOM (the ``DICM`` marker)."""
    for path in folder.rglob("*"):
        if path.is_file():
            try:
                with path.open("rb") as fh:
                    if fh.read(132)[128:] == b"DICM":
                        return True
            except OSError:
                continue
    return False


# --------------------------------------------------------------------------- loading cases


def _truth(path: Path | None, grid: Volume, grid_label: str) -> np.ndarray | None:
    if path is None:
        return None
    try:
        volume = decode_nifti(path.read_bytes(), LOCAL_LIMITS)
    except DecodeProblem as exc:
        raise InputError(f"the ground truth {path}: {exc}") from exc
    return truth_on_grid(str(path), volume, grid, grid_label)


def load_sequences(job: SequenceFiles) -> VolumeCase:
    """Read and stack a case's three NIfTI files, and its truth (DecodeProblem names files)."""
    volume = decode_sequences([(str(path), path.read_bytes()) for path in job.files],
                              LOCAL_LIMITS)  # fmt: skip
    truth = _truth(job.truth, volume, str(job.files[1]))
    return VolumeCase(job.case, job.case, str(job.files[1]), volume, truth)


def _as_volume(series: SeriesVolume) -> Volume:
    image = series.image
    zooms = tuple(float(z) for z in image.header.get_zooms()[:3])
    return Volume(np.asarray(image.dataobj, dtype=np.float32), np.asarray(image.affine),
                  (zooms[0], zooms[1], zooms[2]), "nifti", image.header)  # fmt: skip


def load_dicom(job: DicomStudy, choice: SeriesChoice) -> VolumeCase:
    """Pick and read a study's three series (DicomError, GridMismatch say why not)."""
    chosen = choose_sequences(find_series(job.path), choice.pre, choice.flair, choice.post)
    read = [read_series(series) for series in chosen]
    labels = [f"{job.path}: series {s.series.label}" for s in read]
    volume = stack_sequences(list(zip(labels, (_as_volume(s) for s in read), strict=True)),
                             LOCAL_LIMITS)  # fmt: skip
    truth = _truth(job.truth, volume, labels[1])
    return VolumeCase(job.case, job.case, str(job.path), volume, truth,
                      (read[0], read[1], read[2]))  # fmt: skip

