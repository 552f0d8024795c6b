"""Read a DICOM study folder: one MR series per sequence (pre-contrast, FLAIR, post-contrast).

- :func:`find_series`: every DICOM image file under the folder (any depth, any file name),
  grouped by SeriesInstanceUID from the headers alone (:func:`group_series`, which an API upload
  shares: its files are bytes in memory). Only MR images count; anything else (a DICOMDIR, a SEG
  written by an earlier run, other modalities) is left aside.
- :func:`choose_sequences`: each sequence is the series named by its flag (SeriesDescription,
  case-insensitive, or SeriesInstanceUID), else the one series the SeriesDescription heuristic
  gives that sequence. Descriptions are lower-cased and ``_ - / . , ( )`` read as spaces; then,
  in this order:

  1. **FLAIR**: contains ``flair``;
  2. **pre-contrast**: a word ``pre``, ``precontrast``, ``native``, ``non contrast`` or ``w o``
     (w/o);
  3. **post-contrast**: ``post``, ``postcontrast``, ``+c``, ``c+``, ``+gd``, ``gd``, ``gad...``,
     ``contrast``, ``ce``;
  4. **pre-contrast** again: a T1 word (``t1...``, ``mprage``, ``spgr``) with none of the above.

  Anything else (T2, DWI, localizers) is no sequence. When no series or more than one fits a
  sequence, the error lists the series found and names the flag that settles it.
- :func:`read_series`: the series' slices as one volume through highdicom
  (``get_volume_from_series``: one orientation and pixel spacing, a regular slice spacing,
  slices stacked along their normal, the modality transform (RescaleSlope/Intercept) applied),
  laid out ``rows x columns x slices`` with the slices sorted by ImagePositionPatient along the
  slice normal (row x column direction cosines), ascending; as a NIfTI image (RAS+ affine, mm).
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

log = logging.getLogger(__name__)

ROLES = ("pre", "flair", "post")
"""Sequence keys in the model's channel order; the CLI flags are ``--<role>-series``."""
ROLE_NAMES = {"pre": "pre-contrast", "flair": "FLAIR", "post": "post-contrast"}

_FLAIR = re.compile(r"flair")
_PRE = re.compile(r"\b(pre|precontrast|native|non ?contrast|w o)\b")
_POST = re.compile(r"\b(post|postcontrast|gd|gad\w*|contrast|ce)\b|\+ ?(c|gd)\b|\bc ?\+")
_T1 = re.compile(r"\b(t1\w*|mprage|spgr)\b")
_HEADER_TAGS = [
    "SOPClassUID", "Modality", "SeriesInstanceUID", "SeriesDescription", "SeriesNumber",
    "StudyInstanceUID", "NumberOfFrames",
]  # fmt: skip


class DicomError(ValueError):
    """A study that cannot be read as three sequences; the message says why and what to do."""


@dataclass(frozen=True)
class Series:
    """One series of a study: its identity and its files (headers read, pixels not)."""

    uid: str
    description: str
    number: int | None
    study_uid: str
    files: tuple[Path | bytes, ...]
    """Paths, or the files' bytes (an upload read in memory)."""

    @property
    def label(self) -> str:
        number = "" if self.number is None else f"series {self.number}, "
        return f"'{self.description}' ({number}{len(self.files)} files, UID {self.uid})"


@dataclass(frozen=True)
class SeriesVolume:
    """A series read as one volume: the image and its datasets in the image's slice order."""

    series: Series
    image: nib.Nifti1Image
    """``rows x columns x slices`` float32 (rescaled values), RAS+ affine in mm."""
    datasets: Sequence[Dataset]
    """The slices' headers (pixel data dropped), ``datasets[k]`` is slice ``k``."""


def sequence_role(description: str) -> str | None:
    """The sequence a SeriesDescription names by the heuristic above: a key of ROLES or None."""
    text = re.sub(r"[_\-/.,()]", " ", description.lower())
    if _FLAIR.search(text):
        return "flair"
    if _PRE.search(text):
        return "pre"
    if _POST.search(text):
        return "post"
    if _T1.search(text):
        return "pre"
    return None


def _header(path: Path) -> Dataset | None:
    try:
        return pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
    except (InvalidDicomError, OSError, ValueError, EOFError):
        return None


def find_series(folder: Path) -> list[Series]:
    """Every MR image series under ``folder``, in SeriesNumber order; DicomError when none."""
    paths = sorted(p for p in folder.rglob("*") if p.is_file())
    return group_series(((path, _header(path)) for path in paths), str(folder))


def group_series(files: Iterable[tuple[Path | bytes, Dataset | None]], where: str) -> list[Series]:
    """``(file, its header or None when not DICOM)`` -> the MR image series, in SeriesNumber
    order; DicomError naming ``where`` when there is none."""
    grouped: dict[str, list[Path | bytes]] = {}
    first: dict[str, Dataset] = {}
    skipped: dict[str, int] = {}
    for file, ds in files:
        if ds is None or "SeriesInstanceUID" not in ds:
            continue
        modality = str(ds.get("Modality", "?"))
        if modality != "MR":
            skipped[modality] = skipped.get(modality, 0) + 1
            continue
        uid = str(ds.SeriesInstanceUID)
        grouped.setdefault(uid, []).append(file)
        first.setdefault(uid, ds)
    if skipped:
        log.info("%s: left aside %s", where,
                 ", ".join(f"{n} {m} file(s)" for m, n in sorted(skipped.items())))
    if not grouped:
        found = f" (only {', '.join(sorted(skipped))} files)" if skipped else ""
        raise DicomError(f"{where}: no DICOM MR image series found{found}")
    series = []
    for uid, members in grouped.items():
        ds = first[uid]
        number = ds.get("SeriesNumber")
        series.append(Series(
            uid=uid,
            description=str(ds.get("SeriesDescription", "")).strip(),
            number=None if number in (None, "") else int(number),
            study_uid=str(ds.get("StudyInstanceUID", "")),
            files=tuple(members),
        ))  # fmt: skip
    return sorted(series, key=lambda s: (s.number is None, s.number or 0, s.description))


def _listing(series: Sequence[Series]) -> str:
    return "; ".join(s.label for s in series)


def choose_sequences(
    series: Sequence[Series],
    pre: str | None = None,
    flair: str | None = None,
    post: str | None = None,
    flag_format: str = "--{}-series",
) -> tuple[Series, Series, Series]:
    """The pre-contrast, FLAIR and post-contrast series (see the module docs for the rule).
    ``flag_format`` names the choice in messages (``{}``: the role; the API's form fields are
    ``{}_series``)."""
    wanted = {"pre": pre, "flair": flair, "post": post}
    chosen: dict[str, Series] = {}
    for role in ROLES:
        flag, name = flag_format.format(role), ROLE_NAMES[role]
        choice = wanted[role]
        if choice is not None:
            key = choice.strip().lower()
            matches = [s for s in series if s.uid == choice.strip()
                       or s.description.lower() == key]  # fmt: skip
            how = f"{flag} {choice!r} matches"
        else:
            matches = [s for s in series if sequence_role(s.description) == role]
            how = f"by SeriesDescription, the {name} could be"
        if len(matches) != 1:
            if matches:
                problem = f"{how} {len(matches)} series: {_listing(matches)}"
            else:
                problem = f"{how} no series" if choice is not None else f"no series looks {name}"
            raise DicomError(
                f"{problem}. Series in the study: {_listing(series)}. Name the {name} series "
                f"with {flag} (its SeriesDescription or SeriesInstanceUID)"
            )
        chosen[role] = matches[0]
    uids = [chosen[role].uid for role in ROLES]
    if len(set(uids)) < 3:
        raise DicomError(
            "one series was chosen for two sequences: "
            + ", ".join(f"{ROLE_NAMES[r]} = {chosen[r].label}" for r in ROLES)
        )
    if len({chosen[role].study_uid for role in ROLES}) > 1:
        raise DicomError("the three series come from different studies (StudyInstanceUID)")
    return chosen["pre"], chosen["flair"], chosen["post"]


def read_series(series: Series) -> SeriesVolume:
    """Read ``series`` as one volume (see the module docs); DicomError naming it otherwise."""
    try:
        datasets = [pydicom.dcmread(file if isinstance(file, Path) else io.BytesIO(file))
                    for file in series.files]
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        raise DicomError(f"series {series.label}: a file cannot be read ({exc})") from exc
    if any(int(ds.get("NumberOfFrames", 1) or 1) > 1 for ds in datasets):
        raise DicomError(
            f"series {series.label} is multi-frame (enhanced) DICOM, which is not read here; "
            "convert it to NIfTI (e.g. with dcm2niix) and pass the three NIfTI files"
        )
    try:
        volume = hd.get_volume_from_series(datasets, dtype=np.float32)
    except (ValueError, AttributeError, KeyError, NotImplementedError, RuntimeError) as exc:
        raise DicomError(
            f"series {series.label} is not one stack of slices: {exc}. Each sequence must be "
            "one series of parallel, regularly spaced slices of one size and orientation "
            "(no missing or repeated slices, no localizer mixed in); compressed pixel data "
            "needs its pydicom codec"
        ) from exc
    volume = volume.permute_spatial_axes([1, 2, 0])  # (slices, rows, cols) -> rows, cols, slices
    orientation = np.asarray(datasets[0].ImageOrientationPatient, dtype=np.float64)
    normal = np.cross(orientation[:3], orientation[3:])
    if float(np.dot(volume.affine[:3, 2], normal)) < 0:
        volume = volume.flip_spatial([2])
    along = [float(np.dot(np.asarray(ds.ImagePositionPatient, float), normal)) for ds in datasets]
    datasets = [datasets[i] for i in np.argsort(along, kind="stable")]
    first = np.asarray(datasets[0].ImagePositionPatient, float)
    if not np.allclose(volume.affine[:3, 3], first, atol=1e-3):  # pragma: no cover - a safeguard
        raise DicomError(f"series {series.label}: the slice order could not be established")
    for ds in datasets:
        del ds.PixelData  # the headers are what a DICOM SEG references; the pixels are in image
    image = volume.to_nibabel()
    image.header.set_xyzt_units("mm")
    image.set_qform(image.affine, code=1)  # scanner coordinates, as DICOM's patient space
    image.set_sform(image.affine, code=1)
    return SeriesVolume(series, image, datasets)
