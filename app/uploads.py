"""Turn uploaded files, given as ``(name, bytes)`` pairs held in memory, into slices and masks.

No Streamlit here, so every rule is tested directly. The rules are the project's own, used by
every entry point: masks are paired with their slices by ``data.naming`` (``X.tif`` with
``X_mask.tif``, any supported extensions), a mask must pass ``data.masks``, an image must hold the
three sequences ``data.preprocessing`` needs, and bytes are decoded by ``inference.decode`` (the
format is sniffed from the bytes, never trusted from the name). Every file that cannot be used
becomes an ``UploadProblem`` with a message for the page. Nothing is written to disk.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePath

import nibabel as nib
import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from app import backend
from data import dicom, naming
from data.masks import MaskError, binary_mask, binary_volume
from data.preprocessing import ChannelError, check_channels
from inference import decode, sequences, sources

MAX_NAME_CHARS = 80
Upload = tuple[str, bytes]


@dataclass(frozen=True)
class SliceInput:
    """One uploaded slice, decoded, with its ground-truth mask (uint8 0/1) when one was given."""

    name: str
    data: bytes
    image: np.ndarray
    truth: np.ndarray | None = None
    truth_name: str | None = None
    lossy: bool = False
    """A JPEG: its compression changed the pixels, and so the model's answer."""


@dataclass(frozen=True)
class VolumeInput:
    """An uploaded volume ``H x W x Z [x C]`` (slice ``k`` is ``volume[:, :, k]``), its affine,
    its ground-truth mask ``H x W x Z`` (uint8 0/1) when one was given and usable, and the
    problems with the mask when it was not."""

    name: str
    data: bytes
    volume: np.ndarray
    affine: np.ndarray
    header: nib.Nifti1Header | None = None
    truth: np.ndarray | None = None
    problems: tuple[UploadProblem, ...] = ()
    lossy: bool = False
    """A zip holding JPEG slices."""
    spacing: tuple[float, float, float] | None = None
    """Voxel spacing in mm (rows, columns, slices); None when the file carries none (a zip)."""

    @property
    def depth(self) -> int:
        return int(self.volume.shape[2])

    def slice(self, k: int) -> np.ndarray:
        return self.volume[:, :, k]


@dataclass(frozen=True)
class UploadProblem:
    """A file that cannot be used, and why (shown to the user as is)."""

    name: str
    message: str

    def __str__(self) -> str:
        return f"`{self.name}`: {self.message}"


def display_name(name: str) -> str:
    """A file name safe to show in the page: base name only, no control characters or
    backticks, at most ``MAX_NAME_CHARS`` characters."""
    base = PurePath(name.replace("\\", "/")).name or "unnamed file"
    base = re.sub(r"[\x00-\x1f\x7f`]", "_", base)
    if len(base) > MAX_NAME_CHARS:
        base = base[: MAX_NAME_CHARS - 3] + "..."
    return base


def pair_by_name(
    images: Sequence[Upload], masks: Sequence[Upload]
) -> tuple[list[tuple[Upload, Upload | None]], list[UploadProblem]]:
    """Pair each image with the mask of its case (``data.naming``: ``X`` with ``X_mask``).

    ``masks`` came from the masks box, so their names need not end in ``_mask``. When one image
    and one mask are uploaded, they are paired whatever their names (a slice and its mask
    uploaded separately). Other unpaired masks and second copies are problems.
    """
    tagged = [(u, u[0]) for u in images] + [
        (u, naming.case_key(u[0]) + naming.MASK_SUFFIX) for u in masks]
    pairs, unpaired, duplicates = naming.pair_by_name(tagged, lambda t: t[1])
    first_mask: dict[str, Upload] = {}
    for upload, key in tagged:
        if naming.is_mask_name(key):
            first_mask.setdefault(naming.case_key(key), upload)
    problems: list[UploadProblem] = []
    for upload, key in duplicates:
        if naming.is_mask_name(key):
            first = first_mask[naming.case_key(key)]
            problems.append(UploadProblem(display_name(upload[0]), "a second mask for the same "
                                          f"slice as `{display_name(first[0])}`; ignored"))
        else:
            problems.append(UploadProblem(display_name(upload[0]),
                                          "uploaded twice (same name); the second copy is ignored"))
    found = [(image[0], mask[0] if mask is not None else None) for image, mask in pairs]
    if len(found) == 1 and found[0][1] is None and len(masks) == 1 and len(unpaired) == 1:
        return [(found[0][0], unpaired[0][0])], problems
    for upload, _ in unpaired:
        problems.append(UploadProblem(
            display_name(upload[0]),
            "no slice with a matching name: upload `X.tif` together with `X_mask.tif`",
        ))
    return found, problems


def as_truth_mask(mask: np.ndarray, image_shape: tuple[int, ...]) -> np.ndarray:
    """A decoded ground-truth mask as uint8 0/1 (the ``data.masks`` rule) of the image's
    height and width; ``MaskError`` (a ValueError) with a message for the page otherwise."""
    binary = binary_mask(mask)
    height, width = image_shape[:2]
    if binary.shape != (height, width):
        raise MaskError(f"the mask is {binary.shape[0]}x{binary.shape[1]} pixels but its slice "
                        f"is {height}x{width}; upload the mask made for this slice")
    return binary


def read_slices(
    images: Sequence[Upload], masks: Sequence[Upload] = ()
) -> tuple[list[SliceInput], list[UploadProblem]]:
    """Decode uploaded slices and their optional masks.

    ``images`` may also contain masks (names ending in ``_mask``); they are moved to ``masks``.
    A slice whose mask cannot be used is still returned, without ground truth, and the mask's
    problem is reported.
    """
    slice_files = [u for u in images if not naming.is_mask_name(u[0])]
    mask_files = [u for u in images if naming.is_mask_name(u[0])] + list(masks)
    if not slice_files and mask_files:
        return [], [UploadProblem(display_name(mask_files[0][0]),
                                  "only masks were uploaded; add the MRI slices they belong to")]
    pairs, problems = pair_by_name(slice_files, mask_files)
    slices: list[SliceInput] = []
    for (name, data), mask_upload in pairs:
        shown = display_name(name)
        try:
            image = backend.decode_slice(data)
            check_channels(image)
        except (backend.BadUpload, ChannelError) as exc:
            problems.append(UploadProblem(shown, str(exc)))
            continue
        truth, truth_name = None, None
        if mask_upload is not None:
            truth_name = display_name(mask_upload[0])
            try:
                truth = as_truth_mask(backend.decode_slice(mask_upload[1]), image.shape)
            except (backend.BadUpload, ValueError) as exc:
                problems.append(UploadProblem(truth_name, f"{exc} (slice `{shown}` is shown "
                                                          "without ground truth)"))
                truth, truth_name = None, None
        slices.append(SliceInput(shown, data, image, truth, truth_name,
                                 lossy=decode.lossy_warning(data) is not None))
    return slices, problems


def as_truth_volume(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A decoded ground-truth mask volume as uint8 0/1 ``H x W x Z`` (the ``data.masks`` rule
    over all its voxels) matching ``shape[:3]``; ``MaskError`` otherwise."""
    arr = np.asarray(mask)
    if arr.ndim == 4 and arr.shape[3] == 1:
        arr = arr[..., 0]
    if arr.ndim != 3:
        raise MaskError(f"a mask volume must be H x W x Z; this file has shape {arr.shape}")
    expected = tuple(shape[:3])
    if arr.shape != expected:
        raise MaskError(
            f"the mask volume is {'x'.join(map(str, arr.shape))} but the volume is "
            f"{'x'.join(map(str, expected))}; upload the mask made for this volume"
        )
    return binary_volume(arr)


def read_volume(volume: Upload, mask: Upload | None = None) -> VolumeInput:
    """Decode an uploaded volume (NIfTI, or a zip of slices) and its optional mask volume.

    Raises ``backend.BadUpload`` when the volume itself cannot be used; a mask that cannot be
    used is reported in ``problems`` and the volume is returned without ground truth.
    """
    name = display_name(volume[0])
    decoded = backend.decode_volume(volume[1])
    try:
        check_channels(decoded.data[:, :, 0])
    except ChannelError as exc:
        raise backend.BadUpload(str(exc)) from exc
    truth = None
    problems: list[UploadProblem] = []
    if mask is not None:
        try:
            truth = as_truth_volume(backend.decode_volume(mask[1]).data, decoded.data.shape)
        except (backend.BadUpload, ValueError) as exc:
            problems.append(UploadProblem(display_name(mask[0]),
                                          f"{exc} (the volume is shown without ground truth)"))
    lossy = decode.lossy_warning(volume[1]) is not None
    spacing = decoded.zooms if decoded.source == "nifti" else None
    return VolumeInput(name, volume[1], decoded.data, np.asarray(decoded.affine), decoded.header,
                       truth, tuple(problems), lossy, spacing)


def _stacked(name: str, stacked: decode.Volume, truth: Upload | None, grid_label: str
             ) -> VolumeInput:
    """A case stacked from three sequences, with its optional ground truth on its grid; the
    bytes kept are the stacked volume as one NIfTI (what the API's volume route reads)."""
    problems: list[UploadProblem] = []
    mask = None
    if truth is not None:
        try:
            grid = decode.decode_nifti(truth[1])
            mask = sequences.truth_on_grid(display_name(truth[0]), grid, stacked, grid_label)
        except decode.DecodeProblem as exc:
            problems.append(UploadProblem(display_name(truth[0]),
                                          f"{exc} (the case is shown without ground truth)"))
    affine = np.asarray(stacked.affine)
    image = nib.Nifti1Image(np.asarray(stacked.data, np.float32), affine)
    image.header.set_xyzt_units("mm")
    return VolumeInput(name, image.to_bytes(), stacked.data, affine, image.header, mask,
                       tuple(problems), spacing=stacked.zooms)


def read_sequences(files: Sequence[Upload], truth: Upload | None = None) -> VolumeInput:
    """One case uploaded as three NIfTI files named ``<case>_0000`` (pre-contrast), ``_0001``
    (FLAIR) and ``_0002`` (post-contrast) (``data.naming``), stacked on one grid
    (``inference.sequences``). A ``<case>_mask`` NIfTI among ``files`` is its ground truth
    unless ``truth`` is given. ``backend.BadUpload`` says what is wrong."""
    masks = [u for u in files if naming.is_mask_name(u[0])]
    groups, problems = naming.group_sequences(
        [u for u in files if not naming.is_mask_name(u[0])], lambda u: u[0])
    if problems:
        raise backend.BadUpload("; ".join(problems))
    if len(groups) != 1:
        raise backend.BadUpload(
            "upload the three files of one case, named <case>_0000 (pre-contrast), <case>_0001 "
            "(FLAIR) and <case>_0002 (post-contrast), .nii or .nii.gz"
            + (f"; these are {len(groups)} cases" if groups else ""))
    case = groups[0]
    try:
        stacked = sequences.decode_sequences([(display_name(n), d) for n, d in case.files])
    except decode.DecodeProblem as exc:
        raise backend.BadUpload(str(exc)) from exc
    return _stacked(display_name(case.case), stacked, truth or (masks[0] if masks else None),
                    display_name(case.files[1][0]))


def _dicom_files(files: Sequence[Upload]) -> list[Upload]:
    """The uploads, with every zip replaced by its content entries (read in memory; the zip
    entry rule and read errors of ``inference.decode``, as the API's DICOM route uses)."""
    out: list[Upload] = []
    for name, data in files:
        if data[:4] == b"PK\x03\x04":
            try:
                with zipfile.ZipFile(io.BytesIO(data)) as archive:
                    out += [(info.filename, archive.read(info))
                            for info in decode.zip_content_entries(archive.infolist())]
            except decode.ZIP_READ_ERRORS as exc:
                raise backend.BadUpload(f"{display_name(name)} is not a readable zip: {exc}"
                                        ) from exc
        else:
            out.append((name, data))
    return out


def _series_in_memory(files: Sequence[Upload]) -> list[dicom.Series]:
    """``data.dicom.find_series`` for files held in memory: MR series by SeriesInstanceUID
    (``data.dicom.group_series``; files that are not DICOM are left aside)."""
    headers: list[tuple[bytes, pydicom.Dataset | None]] = []
    for _, data in files:
        try:
            headers.append((data, pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)))
        except (InvalidDicomError, OSError, ValueError, EOFError):
            continue
    try:
        return dicom.group_series(headers, "the uploads")
    except dicom.DicomError as exc:
        raise backend.BadUpload(f"{exc}; upload the study's .dcm files (or one zip of them)"
                                ) from exc


def read_dicom_study(files: Sequence[Upload], truth: Upload | None = None) -> VolumeInput:
    """A DICOM study uploaded as .dcm files or zips of them: its pre-contrast, FLAIR and
    post-contrast series (``data.dicom``'s SeriesDescription rule) stacked on one grid, with an
    optional NIfTI ground truth on that grid. Nothing is written to disk."""
    series = _series_in_memory(_dicom_files(files))
    try:  # the viewer has no series flags: messages ask for a clearer SeriesDescription
        chosen = dicom.choose_sequences(series, flag_format="a clearer SeriesDescription")
        stacked, read, labels = sources.load_series(chosen, sources.LOCAL_LIMITS)
    except (dicom.DicomError, decode.DecodeProblem) as exc:
        raise backend.BadUpload(str(exc)) from exc
    name = str(read[1].datasets[0].get("PatientID", "") or "DICOM study")
    return _stacked(display_name(name), stacked, truth, labels[1])
