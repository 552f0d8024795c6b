"""Turn uploaded files, given as ``(name, bytes)`` pairs held in memory, into slices and masks.

No Streamlit here, so every rule is tested directly: masks are paired with their slices by name
(``X.tif`` with ``X_mask.tif``, any supported extensions), bytes are decoded by
``inference.decode`` (the format is sniffed from the bytes, never trusted from the name), and
every file that cannot be used becomes an ``UploadProblem`` with a message for the page.
Nothing is written to disk.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePath

import nibabel as nib
import numpy as np

from app import backend

MASK_SUFFIX = "_mask"
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


def stem(name: str) -> str:
    """``X.tif`` -> ``X``; ``X.nii.gz`` -> ``X``."""
    base = PurePath(display_name(name)).name
    lowered = base.lower()
    for ext in (".nii.gz",):
        if lowered.endswith(ext):
            return base[: -len(ext)]
    return base.rsplit(".", 1)[0] if "." in base else base


def is_mask_name(name: str) -> bool:
    return stem(name).lower().endswith(MASK_SUFFIX)


def _case(name: str) -> str:
    """The key a mask and its image share: the stem without ``_mask``, lower case."""
    key = stem(name).lower()
    return key[: -len(MASK_SUFFIX)] if key.endswith(MASK_SUFFIX) else key


def pair_by_name(
    images: Sequence[Upload], masks: Sequence[Upload]
) -> tuple[list[tuple[Upload, Upload | None]], list[UploadProblem]]:
    """Pair each image with the mask of the same name (``X`` with ``X_mask`` or ``X``).

    When one image and one mask are uploaded, they are paired whatever their names (a slice
    and its mask uploaded separately). Other unpaired masks are problems.
    """
    problems: list[UploadProblem] = []
    by_case: dict[str, Upload] = {}
    for upload in masks:
        key = _case(upload[0])
        if key in by_case:
            problems.append(UploadProblem(display_name(upload[0]), "a second mask for the same "
                                          f"slice as `{display_name(by_case[key][0])}`; ignored"))
            continue
        by_case[key] = upload
    pairs: list[tuple[Upload, Upload | None]] = []
    seen: set[str] = set()
    for upload in images:
        key = _case(upload[0])
        if key in seen:
            problems.append(UploadProblem(display_name(upload[0]),
                                          "uploaded twice (same name); the second copy is ignored"))
            continue
        seen.add(key)
        pairs.append((upload, by_case.pop(key, None)))
    if len(pairs) == 1 and pairs[0][1] is None and len(masks) == 1 and len(by_case) == 1:
        pairs[0] = (pairs[0][0], by_case.popitem()[1])
    for mask_name, _ in by_case.values():
        problems.append(UploadProblem(
            display_name(mask_name),
            "no slice with a matching name: upload `X.tif` together with `X_mask.tif`",
        ))
    return pairs, problems


def as_truth_mask(mask: np.ndarray, image_shape: tuple[int, ...]) -> np.ndarray:
    """A decoded ground-truth mask as uint8 0/1 of the image's height and width.

    Accepts grey masks with two values (0/1, 0/255...) and grey masks stored as RGB(A).
    Raises ``ValueError`` with a message for the page otherwise.
    """
    arr = np.asarray(mask)
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        colour = arr[:, :, :3]
        if not (np.array_equal(colour[:, :, 0], colour[:, :, 1])
                and np.array_equal(colour[:, :, 0], colour[:, :, 2])):
            raise ValueError("a mask must be black and white; this file has colours "
                             "(is it an MRI slice rather than a mask?)")
        arr = colour[:, :, 0]
    elif arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim != 2:
        raise ValueError(f"a mask must be one 2-D image; this file has shape {arr.shape}")
    height, width = image_shape[:2]
    if arr.shape != (height, width):
        raise ValueError(f"the mask is {arr.shape[0]}x{arr.shape[1]} pixels but its slice is "
                         f"{height}x{width}; upload the mask made for this slice")
    values = np.unique(arr)
    if values.size > 2:
        raise ValueError(f"a mask must hold two values (background and tumour, e.g. 0 and 255); "
                         f"this file has {values.size} (is it an MRI slice rather than a mask?)")
    return (arr > 0).astype(np.uint8)


def read_slices(
    images: Sequence[Upload], masks: Sequence[Upload] = ()
) -> tuple[list[SliceInput], list[UploadProblem]]:
    """Decode uploaded slices and their optional masks.

    ``images`` may also contain masks (names ending in ``_mask``); they are moved to ``masks``.
    A slice whose mask cannot be used is still returned, without ground truth, and the mask's
    problem is reported.
    """
    slice_files = [u for u in images if not is_mask_name(u[0])]
    mask_files = [u for u in images if is_mask_name(u[0])] + list(masks)
    if not slice_files and mask_files:
        return [], [UploadProblem(display_name(mask_files[0][0]),
                                  "only masks were uploaded; add the MRI slices they belong to")]
    pairs, problems = pair_by_name(slice_files, mask_files)
    slices: list[SliceInput] = []
    for (name, data), mask_upload in pairs:
        shown = display_name(name)
        try:
            image = backend.decode_slice(data)
        except backend.BadUpload as exc:
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
        slices.append(SliceInput(shown, data, image, truth, truth_name))
    return slices, problems


def as_truth_volume(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A decoded ground-truth mask volume as uint8 0/1 ``H x W x Z`` matching ``shape[:3]``."""
    arr = np.asarray(mask)
    if arr.ndim == 4 and arr.shape[3] == 1:
        arr = arr[..., 0]
    if arr.ndim != 3:
        raise ValueError(f"a mask volume must be H x W x Z; this file has shape {arr.shape}")
    expected = tuple(shape[:3])
    if arr.shape != expected:
        raise ValueError(
            f"the mask volume is {'x'.join(map(str, arr.shape))} but the volume is "
            f"{'x'.join(map(str, expected))}; upload the mask made for this volume"
        )
    values = np.unique(arr)
    if values.size > 2:
        raise ValueError(f"a mask must hold two values (background and tumour); this file has "
                         f"{values.size} (is it an MRI volume rather than a mask?)")
    return (arr > 0).astype(np.uint8)


def read_volume(volume: Upload, mask: Upload | None = None) -> VolumeInput:
    """Decode an uploaded volume (NIfTI, or a zip of slices) and its optional mask volume.

    Raises ``backend.BadUpload`` when the volume itself cannot be used; a mask that cannot be
    used is reported in ``problems`` and the volume is returned without ground truth.
    """
    name = display_name(volume[0])
    decoded = backend.decode_volume(volume[1])
    truth = None
    problems: list[UploadProblem] = []
    if mask is not None:
        try:
            truth = as_truth_volume(backend.decode_volume(mask[1]).data, decoded.data.shape)
        except (backend.BadUpload, ValueError) as exc:
            problems.append(UploadProblem(display_name(mask[0]),
                                          f"{exc} (the volume is shown without ground truth)"))
    return VolumeInput(name, volume[1], decoded.data, np.asarray(decoded.affine), decoded.header,
                       truth, tuple(problems))
