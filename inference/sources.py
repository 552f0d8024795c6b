"""Volume cases read besides single files: three sequence files, a DICOM study (a folder for the
command line, or the files of an API upload, read in memory).

A case is loaded into one :class:`VolumeCase`: an ``H x W x Z x 3`` volume (pre-contrast, FLAIR,
post-contrast) with its grid, the optional ground truth on that grid, and for DICOM the series
it came from (for the DICOM SEG). Naming and grouping follow ``data.naming``; the grid rule is
``inference.sequences``; DICOM reading is ``data.dicom``.
"""

from __future__ import annotations

import io
import logging
import stat
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from data.dicom import (
    DicomError,
    Series,
    SeriesVolume,
    choose_sequences,
    find_series,
    group_series,
    read_series,
)
from data.naming import (
    case_key,
    group_sequences,
    is_mask_name,
    is_nifti_name,
    is_prediction_name,
    sequence_file,
    sequence_truth_names,
)
from inference.decode import (
    ZIP_READ_ERRORS,
    DecodedSize,
    DecodeError,
    DecodeLimits,
    DecodeProblem,
    UnsupportedFormat,
    Volume,
    check_geometry,
    decode_nifti,
    zip_content_entries,
)
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


def load_series(
    chosen: tuple[Series, Series, Series], limits: DecodeLimits, where: str = ""
) -> tuple[Volume, tuple[SeriesVolume, SeriesVolume, SeriesVolume], list[str]]:
    """Read the pre-contrast, FLAIR and post-contrast series and stack them on the FLAIR's grid:
    ``(volume, the series read, their labels)``; DicomError, GridMismatch say why not."""
    read = [read_series(series) for series in chosen]
    labels = [f"{where}series {s.series.label}" for s in read]
    volume = stack_sequences(list(zip(labels, (_as_volume(s) for s in read), strict=True)), limits)
    return volume, (read[0], read[1], read[2]), labels


def load_dicom(job: DicomStudy, choice: SeriesChoice) -> VolumeCase:
    """Pick and read a study's three series (DicomError, GridMismatch say why not)."""
    chosen = choose_sequences(find_series(job.path), choice.pre, choice.flair, choice.post)
    volume, read, labels = load_series(chosen, LOCAL_LIMITS, f"{job.path}: ")
    truth = _truth(job.truth, volume, labels[1])
    return VolumeCase(job.case, job.case, str(job.path), volume, truth, read)


# --------------------------------------------------------------------------- DICOM uploads
# The API's DICOM study: the parts of a multipart form, each a DICOM file or a zip of them.
# Everything stays in memory; messages name parts and zip entries by number and series by
# their description and UID, never by a file name (a path can hold a patient's name).

_LINK = stat.S_IFLNK


def _is_dicom(head: bytes) -> bool:
    return head[128:132] == b"DICM"


def _zip_entries_declared(data: bytes) -> int | None:
    """The entry count in a zip's end-of-central-directory record (read before zipfile builds
    its list of entries); None when the record is not found."""
    tail = data[-(22 + 0xFFFF):]
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + 12 > len(tail):
        return None
    return int.from_bytes(tail[at + 10 : at + 12], "little")


def _unsafe_name(info: zipfile.ZipInfo) -> bool:
    """An absolute path, a drive, a ``..`` step, or a symbolic link."""
    name = info.filename.replace("\\", "/")
    parts = PurePosixPath(name).parts
    return (name.startswith("/") or (len(name) > 1 and name[1] == ":") or ".." in parts
            or stat.S_IFMT(info.external_attr >> 16) == _LINK)  # fmt: skip


@dataclass
class DicomUpload:
    """An upload's parts listed (zips by their central directory; nothing inflated yet).

    ``inflated`` bounds the bytes that unpacking the zips will hold (their declared sizes; a
    zip entry is never inflated beyond its declared size). DecodeError (422) for a zip with
    more entries than ``max_files``, entries that inflate beyond the limit, unsafe names or
    encryption; UnsupportedFormat (415) for a part that is neither DICOM nor a zip.
    """

    parts: Sequence[bytes]
    max_files: int
    limits: DecodeLimits

    def __post_init__(self) -> None:
        self.inflated = 0
        self._zips: dict[int, list[zipfile.ZipInfo]] = {}
        count = 0
        for number, data in enumerate(self.parts, 1):
            if data[:4] == b"PK\x03\x04" or data[:4] == b"PK\x05\x06":
                entries = self._list_zip(number, data)
                self._zips[number] = entries
                count += len(entries)
                self.inflated += sum(info.file_size for info in entries)
            elif _is_dicom(data):
                count += 1
            else:
                raise UnsupportedFormat(
                    f"'files' part {number} is neither a DICOM file (no 'DICM' marker after the "
                    "128-byte preamble) nor a zip of DICOM files"
                )
            if count > self.max_files:
                raise DecodeError(f"the upload holds over {self.max_files} files (the limit); "
                                  "send only the three series to segment")  # fmt: skip
        if self.inflated > self.limits.max_decompressed_bytes:
            raise DecodeError(f"the zips inflate to {self.inflated} bytes; the limit is "
                              f"{self.limits.max_decompressed_bytes}")  # fmt: skip

    def _list_zip(self, number: int, data: bytes) -> list[zipfile.ZipInfo]:
        where = f"the zip in 'files' part {number}"
        declared = _zip_entries_declared(data)
        if declared is None or declared == 0xFFFF:
            raise DecodeError(f"{where} is truncated, corrupt or ZIP64 (over 65535 entries)")
        if declared > self.max_files:
            raise DecodeError(f"{where} holds {declared} entries; the limit is {self.max_files}")
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                infos = zf.infolist()
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            raise DecodeError(f"{where} is truncated or corrupt") from exc
        if len(infos) > self.max_files:
            raise DecodeError(f"{where} holds {len(infos)} entries; the limit is {self.max_files}")
        entries = []
        for info in zip_content_entries(infos):
            if _unsafe_name(info):
                raise DecodeError(f"{where} holds an entry with an absolute path, a '..' step or "
                                  "a link; such archives are refused")  # fmt: skip
            if info.flag_bits & 0x1:
                raise DecodeError(f"{where} is encrypted")
            entries.append(info)
        return entries

    def files(self) -> list[tuple[str, bytes]]:
        """``(label, bytes)`` of every DICOM file: loose parts, then the zips' DICOM entries
        (other entries, e.g. a README, are left aside; a zip inside a zip is refused)."""
        out: list[tuple[str, bytes]] = []
        for number, data in enumerate(self.parts, 1):
            entries = self._zips.get(number)
            if entries is None:
                out.append((f"'files' part {number}", data))
                continue
            found = 0
            try:
                with zipfile.ZipFile(io.BytesIO(data)) as zf:
                    for index, info in enumerate(entries, 1):
                        label = f"entry {index} of the zip in 'files' part {number}"
                        with zf.open(info) as entry:
                            head = entry.read(132)
                        if head[:4] == b"PK\x03\x04":
                            raise DecodeError(f"{label} is a zip; zips inside zips are not read")
                        if not _is_dicom(head):
                            continue
                        out.append((label, zf.read(info)))  # stops at the declared size
                        found += 1
            except DecodeProblem:
                raise
            except ZIP_READ_ERRORS as exc:
                raise DecodeError(f"the zip in 'files' part {number} cannot be extracted "
                                  f"({type(exc).__name__})") from exc  # fmt: skip
            if not found:
                raise DecodeError(f"the zip in 'files' part {number} holds no DICOM file")
        return out


@dataclass(frozen=True)
class UploadedSeries:
    """An upload's MR series and, per series UID, what reading it will hold (from headers)."""

    series: list[Series]
    sizes: dict[str, DecodedSize]
    frames: dict[str, int]
    slice_shapes: dict[str, set[tuple[int, int]]]


def _upload_header(label: str, data: bytes) -> Dataset:
    try:
        return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError) as exc:
        raise DecodeError(f"{label} is not a readable DICOM file ({type(exc).__name__})") from exc


def _int(ds: Dataset, keyword: str, default: int) -> int:
    try:
        value = int(ds.get(keyword, default) or default)
    except (TypeError, ValueError):
        return default
    return value


def upload_series(files: Sequence[tuple[str, bytes]], limits: DecodeLimits) -> UploadedSeries:
    """Read the files' headers (no pixels) and group them into series (``data.dicom``).

    Each series' decoded size is bounded from its headers (rows x columns x frames of every
    file, float32, held a few times while highdicom stacks it), before any pixel is decoded.
    """
    headers: list[tuple[bytes, Dataset | None]] = []
    values: dict[str, int] = {}
    pixels: dict[str, int] = {}
    slices: dict[str, int] = {}
    nbytes: dict[str, int] = {}
    frames: dict[str, int] = {}
    shapes: dict[str, set[tuple[int, int]]] = {}
    for label, data in files:
        ds = _upload_header(label, data)
        headers.append((data, ds))
        if "SeriesInstanceUID" not in ds or str(ds.get("Modality", "")) != "MR":
            continue
        uid = str(ds.SeriesInstanceUID)
        rows, columns = _int(ds, "Rows", 0), _int(ds, "Columns", 0)
        count = max(1, _int(ds, "NumberOfFrames", 1))
        shapes.setdefault(uid, set()).add((rows, columns))
        values[uid] = values.get(uid, 0) + rows * columns * count * max(
            1, _int(ds, "SamplesPerPixel", 1))
        pixels[uid] = max(pixels.get(uid, 0), rows * columns)
        slices[uid] = slices.get(uid, 0) + count
        nbytes[uid] = nbytes.get(uid, 0) + len(data)
        frames[uid] = max(frames.get(uid, 1), count)
    series = group_series(headers, "the upload")
    sizes = {
        uid: DecodedSize(values=values[uid], itemsize=4, pixels=pixels[uid], slices=slices[uid],
                         inflated=nbytes[uid], copies=4)  # fmt: skip
        for uid in values
    }
    return UploadedSeries(series, sizes, frames, shapes)


def choose_uploaded(
    study: UploadedSeries, choice: SeriesChoice, limits: DecodeLimits
) -> tuple[Series, Series, Series]:
    """The three series (``data.dicom.choose_sequences``), refused before reading when one is
    multi-frame (enhanced) or they are over the API's limits (slice size, slices, values)."""
    chosen = choose_sequences(study.series, choice.pre, choice.flair, choice.post,
                              flag_format="the form field '{}_series'")  # fmt: skip
    for series in chosen:
        if study.frames[series.uid] > 1:
            raise DicomError(
                f"series {series.label} is multi-frame (enhanced) DICOM, which is not read "
                "here; convert the study to NIfTI (e.g. with dcm2niix) and send the three "
                "sequences to POST /v1/segment/sequences"
            )
        for rows, columns in sorted(study.slice_shapes[series.uid]):
            try:
                check_geometry(rows, columns, limits)
            except DecodeError as exc:
                raise DecodeError(f"series {series.label}: {exc}") from None
        if study.sizes[series.uid].slices > limits.max_slices:
            raise DecodeError(f"series {series.label} has {study.sizes[series.uid].slices} "
                              f"slices; the limit is {limits.max_slices}")  # fmt: skip
    total = sum(study.sizes[series.uid].values for series in chosen)
    if total > limits.max_volume_values:
        raise DecodeError(f"the three series hold {total} values together; the limit is "
                          f"{limits.max_volume_values}")  # fmt: skip
    return chosen
