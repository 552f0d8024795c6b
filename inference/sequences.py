"""Three sequence volumes (pre-contrast, FLAIR, post-contrast) -> one ``H x W x Z x 3`` volume.

Researchers keep each MRI sequence in its own file (nnU-Net's ``<case>_0000/_0001/_0002``,
or three DICOM series); the model reads them as the three channels of each slice. They must lie
on one voxel grid: the same shape and the same affine within ``GRID_TOLERANCE_MM`` (spacing,
origin and direction, as ``nib.affines`` compares them). Nothing is resampled: sequences on
different grids are refused with a message naming both files and what differs, because a
silent resampling would change what the model sees. The output mask takes the FLAIR's grid
(the same as the others', to the tolerance).

Ground truth follows the same rule: ``truth_on_grid`` checks that a mask volume lies on the
case's grid and applies the one mask rule (``data.masks.binary_volume``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from data.masks import MaskError, binary_volume
from data.naming import SEQUENCE_CHANNELS
from inference.decode import (
    DecodeError,
    DecodeLimits,
    DecodeProblem,
    UnsupportedFormat,
    Volume,
    decode_nifti,
)

GRID_TOLERANCE_MM = 1e-3
"""Largest difference between two affines' entries (mm; direction cosines x spacing) that still
counts as one grid: far below any voxel, above float32 rounding of scanner coordinates."""


class GridMismatch(DecodeError):
    """Two volumes of one case on different voxel grids (API: 422); the message says how."""


def _fmt(values: Sequence[float] | np.ndarray, sep: str = " x ") -> str:
    return sep.join(f"{v:.4g}" for v in values)


def grid_difference(a: Volume, b: Volume, tolerance: float = GRID_TOLERANCE_MM) -> str | None:
    """What differs between the grids of ``a`` and ``b`` (shape, spacing, origin, direction),
    or None when they are one grid."""
    shape_a, shape_b = a.data.shape[:3], b.data.shape[:3]
    if shape_a != shape_b:
        return f"shape {_fmt(shape_a)} vs {_fmt(shape_b)} voxels"
    diff = np.abs(np.asarray(a.affine, float) - np.asarray(b.affine, float))
    if float(diff.max()) <= tolerance:
        return None
    zooms_a = np.linalg.norm(np.asarray(a.affine, float)[:3, :3], axis=0)
    zooms_b = np.linalg.norm(np.asarray(b.affine, float)[:3, :3], axis=0)
    differences = []
    if not np.allclose(zooms_a, zooms_b, rtol=0, atol=tolerance):
        differences.append(f"voxel spacing {_fmt(zooms_a)} vs {_fmt(zooms_b)} mm")
    if float(diff[:3, 3].max()) > tolerance:
        differences.append(
            f"origin ({_fmt(a.affine[:3, 3], ', ')}) vs ({_fmt(b.affine[:3, 3], ', ')}) mm"
        )
    directions_a = np.asarray(a.affine, float)[:3, :3] / zooms_a
    directions_b = np.asarray(b.affine, float)[:3, :3] / zooms_b
    if not np.allclose(directions_a, directions_b, rtol=0, atol=tolerance):
        angle = np.degrees(np.arccos(np.clip(np.sum(directions_a * directions_b, axis=0), -1, 1)))
        differences.append(f"orientation (axes turned by {_fmt(angle)} degrees)")
    return "; ".join(differences) or f"affines differ by up to {float(diff.max()):.3g} mm"


def stack_sequences(
    named: Sequence[tuple[str, Volume]], limits: DecodeLimits | None = None
) -> Volume:
    """``[(label, pre), (label, FLAIR), (label, post)]`` -> one ``H x W x Z x 3`` float32 volume
    on the FLAIR's grid. ``label`` names the volume in messages (a file name, a form field).

    Raises GridMismatch (different grids) or DecodeError (a file that is not one 3-D sequence,
    or three that together exceed the volume limit).
    """
    if len(named) != 3:
        raise ValueError(f"expected 3 sequences ({', '.join(SEQUENCE_CHANNELS)}); got {len(named)}")
    for (label, volume), sequence in zip(named, SEQUENCE_CHANNELS, strict=True):
        if volume.data.ndim != 3:
            raise DecodeError(
                f"{label} (the {sequence}) has shape {volume.data.shape}; each sequence file must "
                "hold one 3-D volume (H x W x Z)"
            )
    flair_label, flair = named[1]
    for (label, volume), sequence in zip(named, SEQUENCE_CHANNELS, strict=True):
        difference = grid_difference(volume, flair)
        if difference is not None:
            raise GridMismatch(
                f"{label} (the {sequence}) and {flair_label} (the FLAIR) are not on one voxel "
                f"grid: {difference}. Resample them onto one grid first (co-registration)"
            )
    limits = limits or DecodeLimits()
    values = sum(volume.data.size for _, volume in named)
    if values > limits.max_volume_values:
        raise DecodeError(
            f"the three sequences hold {values} values together; the limit is "
            f"{limits.max_volume_values}"
        )
    # float32 is what the model reads (data.preprocessing.to_hwc3): nothing it sees changes
    data = np.stack([volume.data.astype(np.float32, copy=False) for _, volume in named], axis=3)
    return Volume(data, flair.affine, flair.zooms, flair.source, flair.header)


def decode_sequences(
    files: Sequence[tuple[str, bytes]], limits: DecodeLimits | None = None
) -> Volume:
    """Decode three NIfTI files (``(label, bytes)`` in the order pre, FLAIR, post) and stack
    them; every error names the file's ``label``."""
    volumes = []
    for label, data in files:
        try:
            volumes.append((label, decode_nifti(data, limits)))
        except UnsupportedFormat as exc:
            raise UnsupportedFormat(f"{label}: {exc}") from exc
        except DecodeProblem as exc:
            raise DecodeError(f"{label}: {exc}") from exc
    return stack_sequences(volumes, limits)


def truth_on_grid(label: str, truth: Volume, grid: Volume, grid_label: str) -> np.ndarray:
    """A ground-truth volume as uint8 ``H x W x Z`` {0, 1}, after checking it lies on the case's
    grid (GridMismatch) and holds a mask (DecodeError naming ``label``)."""
    difference = grid_difference(truth, grid)
    if difference is not None:
        raise GridMismatch(
            f"the ground truth {label} is not on the grid of {grid_label}: {difference}"
        )
    try:
        return binary_volume(truth.data)
    except MaskError as exc:
        raise DecodeError(f"the ground truth {label}: {exc}") from exc
