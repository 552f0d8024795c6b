"""Reader for the public ``kaggle_3m`` layout of the LGG MRI segmentation dataset.

::

    kaggle_3m/
      data.csv
      TCGA_<inst>_<patient>_<date>/
        TCGA_<inst>_<patient>_<date>_<n>.tif       H x W x 3 uint8 (pre, FLAIR, post-contrast)
        TCGA_<inst>_<patient>_<date>_<n>_mask.tif  H x W uint8, 0 or 255

Slice numbers ``<n>`` are 1-based and not zero-padded, so they are sorted as numbers. TIFFs may be
uncompressed (the original download) or compressed (deflate); tifffile reads both.

``scan_dataset`` only reads TIFF headers (shape, type, where the pixel data lies), so a scan of
the whole dataset takes seconds; ``read_image`` / ``read_mask`` decode the pixels.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from data.masks import MaskError, binary_mask

logger = logging.getLogger(__name__)

PATIENT_DIR = re.compile(r"^TCGA_(?P<institution>[A-Za-z0-9]+)_(?P<patient>[A-Za-z0-9]+)_\d+$")
SLICE_FILE = re.compile(r"^(?P<case>.+)_(?P<index>\d+)(?P<mask>_mask)?\.tiff?$", re.IGNORECASE)
TIFF_SUFFIXES = frozenset({".tif", ".tiff"})
MAX_LISTED = 20


@dataclass(frozen=True)
class SliceRecord:
    """One axial slice: its image file and its mask file."""

    patient_id: str
    index: int
    image_path: Path
    mask_path: Path


@dataclass(frozen=True)
class PatientRecord:
    """One patient folder; ``slices`` are in numeric slice order."""

    patient_id: str
    institution: str
    slices: tuple[SliceRecord, ...]

    @property
    def subject_id(self) -> str:
        """The TCGA patient (``TCGA_<inst>_<patient>``), without the scan date."""
        return "_".join(self.patient_id.split("_")[:3])


@dataclass(frozen=True)
class Problem:
    """One offending file (or folder) and what is wrong with it."""

    path: Path
    reason: str


class DatasetError(ValueError):
    """The dataset folder or one of its files cannot be used; names every offending file."""

    def __init__(
        self, message: str, problems: Sequence[Problem] = (), root: Path | None = None
    ) -> None:
        self.problems = tuple(problems)
        super().__init__(message + _format_problems(self.problems, root))


def _format_problems(problems: Sequence[Problem], root: Path | None) -> str:
    lines = [f"\n  - {_display(p.path, root)}: {p.reason}" for p in problems[:MAX_LISTED]]
    if len(problems) > MAX_LISTED:
        lines.append(f"\n  ... and {len(problems) - MAX_LISTED} more")
    return "".join(lines)


def _display(path: Path, root: Path | None) -> str:
    if root is not None:
        try:
            return str(path.relative_to(root))
        except ValueError:
            pass
    return str(path)


# ---------------------------------------------------------------------------- decoding


def _failure(exc: Exception) -> str:
    """Why a TIFF cannot be read, never quoting the file: tifffile's messages can carry the
    file's first bytes (``not a TIFF file: header=b'...'``) or values read from it."""
    if "imagecodecs" in str(exc):
        return "compressed with a codec that needs imagecodecs (a dependency: reinstall lggseg)"
    if isinstance(exc, tifffile.TiffFileError):
        return "not a TIFF file, or its header is corrupt"
    if isinstance(exc, OSError):
        return f"cannot be opened ({type(exc).__name__})"
    return f"corrupt data ({type(exc).__name__})"


def decode_tiff(path: str | Path) -> np.ndarray:
    """The pixel array exactly as stored in the file (masks hold 0/255 here)."""
    path = Path(path)
    try:
        with tifffile.TiffFile(path) as tif:
            if tif.pages.is_multipage:
                raise DatasetError(f"{path}: holds several pages; one slice per file is expected")
            return np.asarray(tif.asarray(key=0))
    except DatasetError:
        raise
    except Exception as exc:  # tifffile and its codecs raise many types for a bad file
        raise DatasetError(f"cannot read {path}: {_failure(exc)}") from exc


def read_image(path: str | Path) -> np.ndarray:
    """Decode a slice image as uint8 ``H x W x 3``."""
    image = decode_tiff(path)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise DatasetError(
            f"{path}: expected an H x W x 3 uint8 image, got {image.shape} {image.dtype}"
        )
    return image


def read_mask(path: str | Path) -> np.ndarray:
    """Decode a mask as uint8 ``H x W`` with values {0, 1} (the files hold 0/255), by the one
    mask rule of ``data.masks``."""
    mask = decode_tiff(path)
    if mask.dtype != np.uint8 or mask.ndim != 2:
        raise DatasetError(f"{path}: expected an H x W uint8 mask, got {mask.shape} {mask.dtype}")
    try:
        return binary_mask(mask)
    except MaskError as exc:
        raise DatasetError(f"{path}: {exc}") from exc


def tumour_pixels(patient: PatientRecord) -> np.ndarray:
    """Tumour pixel count of each slice of ``patient`` (int64, in slice order)."""
    return np.array(
        [np.count_nonzero(read_mask(s.mask_path)) for s in patient.slices], dtype=np.int64
    )


def tumour_volumes(patients: Iterable[PatientRecord]) -> dict[str, int]:
    """Total tumour pixels of each patient, by patient id (decodes every mask once)."""
    return {p.patient_id: int(tumour_pixels(p).sum()) for p in patients}


# ---------------------------------------------------------------------------- scanning


def _inspect(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and pixel type from the TIFF header; raises DatasetError if unusable.

    Also checks that the pixel data declared by the header lies inside the file, which catches
    truncated files without decoding them.
    """
    try:
        size = path.stat().st_size
        with tifffile.TiffFile(path) as tif:
            if tif.pages.is_multipage:
                raise DatasetError("holds several pages; one slice per file is expected")
            page = tif.pages.first
            shape = tuple(int(n) for n in page.shape)
            dtype = page.dtype
            spans = zip(page.dataoffsets, page.databytecounts, strict=True)
            ends = [int(offset) + int(count) for offset, count in spans]
    except DatasetError:
        raise
    except Exception as exc:  # tifffile raises many types for a bad header
        raise DatasetError(f"unreadable TIFF ({_failure(exc)})") from exc
    if dtype is None:
        raise DatasetError("unsupported TIFF pixel type")
    if ends and max(ends) > size:
        raise DatasetError(f"truncated: pixel data ends at byte {max(ends)}, file has {size}")
    return shape, np.dtype(dtype)


def _check_pair(image: Path, mask: Path) -> Problem | None:
    """Header-level checks of one image/mask pair; the first problem found, if any."""
    shapes = {}
    for kind, path in (("image", image), ("mask", mask)):
        try:
            shapes[kind] = _inspect(path)
        except DatasetError as exc:
            return Problem(path, str(exc))
    (ishape, idtype), (mshape, mdtype) = shapes["image"], shapes["mask"]
    if len(ishape) != 3 or ishape[2] != 3 or idtype != np.uint8:
        return Problem(image, f"expected an H x W x 3 uint8 image, got {ishape} {idtype}")
    if len(mshape) != 2 or mdtype != np.uint8:
        return Problem(mask, f"expected an H x W uint8 mask, got {mshape} {mdtype}")
    if mshape != ishape[:2]:
        return Problem(
            mask,
            f"mask is {mshape[0]}x{mshape[1]} but its image is "
            f"{ishape[0]}x{ishape[1]} ({image.name})",
        )
    return None


def _scan_patient(folder: Path) -> tuple[list[SliceRecord], list[Problem]]:
    images: dict[int, Path] = {}
    masks: dict[int, Path] = {}
    problems: list[Problem] = []
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.suffix.lower() not in TIFF_SUFFIXES:
            continue
        match = SLICE_FILE.match(path.name)
        if match is None or match["case"] != folder.name:
            problems.append(
                Problem(
                    path,
                    f"unexpected name: expected {folder.name}_<n>.tif "
                    f"or {folder.name}_<n>_mask.tif",
                )
            )
            continue
        index = int(match["index"])
        found = masks if match["mask"] else images
        if index in found:
            problems.append(
                Problem(path, f"duplicate slice number {index} (also {found[index].name})")
            )
            continue
        found[index] = path
    if not images and not masks and not problems:
        return [], [Problem(folder, "empty patient folder: no slice images")]
    slices = []
    for index in sorted(images.keys() | masks.keys()):
        image, mask = images.get(index), masks.get(index)
        if image is not None and mask is not None:
            if (problem := _check_pair(image, mask)) is not None:
                problems.append(problem)
            else:
                slices.append(SliceRecord(folder.name, index, image, mask))
        elif image is not None:
            problems.append(
                Problem(image, f"image without its mask ({folder.name}_{index}_mask.tif missing)")
            )
        elif mask is not None:
            problems.append(
                Problem(mask, f"mask without its image ({folder.name}_{index}.tif missing)")
            )
    return slices, problems


def _patient_dirs(root: Path) -> list[Path]:
    return sorted(d for d in root.iterdir() if d.is_dir() and PATIENT_DIR.match(d.name))


def find_kaggle3m(root: str | Path, max_depth: int = 3) -> Path | None:
    """``root`` itself if it holds patient folders, else the shallowest such folder below it.

    Folders named ``kaggle_3m`` are preferred at equal depth; useful after unzipping a download.
    """
    root = Path(root)
    level = [root] if root.is_dir() else []
    for _ in range(max_depth + 1):
        hits = [d for d in level if _patient_dirs(d)]
        if hits:
            return sorted(hits, key=lambda d: (d.name != "kaggle_3m", str(d)))[0]
        level = sorted(c for d in level for c in d.iterdir() if c.is_dir())
    return None


def _decodable(slices: Sequence[SliceRecord]) -> tuple[list[SliceRecord], list[Problem]]:
    """The slices whose image and mask both decode, and a problem for each file that does not."""
    kept: list[SliceRecord] = []
    problems: list[Problem] = []
    for record in slices:
        bad = []
        for path, read in ((record.image_path, read_image), (record.mask_path, read_mask)):
            try:
                read(path)
            except DatasetError as exc:
                reason = str(exc).replace(f"cannot read {path}: ", "").replace(f"{path}: ", "")
                bad.append(Problem(path, reason))
        problems.extend(bad)
        if not bad:
            kept.append(record)
    return kept, problems


def scan_dataset(root: str | Path, *, skip_bad: bool = False) -> list[PatientRecord]:
    """Find every patient and slice under a ``kaggle_3m`` folder, sorted by patient id.

    Raises one DatasetError listing every offending file (an image without its mask or the
    reverse, a mask of another size than its image, an unreadable file, an empty patient
    folder). With ``skip_bad`` those files are skipped with a warning instead; then every
    image and mask is also decoded once (a few seconds for the whole dataset), so a slice whose
    header is fine but whose pixel data is corrupt is skipped too, not met mid-training. A
    missing folder, or one without patient folders, always raises.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder not found: {root} (expected a kaggle_3m folder)")
    folders = _patient_dirs(root)
    if not folders:
        hint = ""
        found = find_kaggle3m(root)
        if found is not None:
            hint = f"; did you mean {found}?"
        raise DatasetError(f"no patient folders (TCGA_<inst>_<patient>_<date>) in {root}{hint}")
    patients: list[PatientRecord] = []
    problems: list[Problem] = []
    for folder in folders:
        slices, found_problems = _scan_patient(folder)
        problems.extend(found_problems)
        if skip_bad:
            slices, corrupt = _decodable(slices)
            problems.extend(corrupt)
        if slices:
            institution = folder.name.split("_")[1]
            patients.append(PatientRecord(folder.name, institution, tuple(slices)))
    if problems:
        error = DatasetError(f"{len(problems)} problem(s) in {root}:", problems, root)
        if not skip_bad:
            raise error
        warnings.warn(f"skipped {len(problems)} bad file(s): {error}", stacklevel=2)
    if not patients:
        raise DatasetError(f"no usable patient in {root}", problems, root)
    logger.info(
        "found %d patients, %d slices in %s",
        len(patients),
        sum(len(p.slices) for p in patients),
        root,
    )
    return patients
