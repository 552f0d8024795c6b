"""Masks out: PNG (0/255), NIfTI (uint8 0/1 on the input's grid) and outline polygons."""

from __future__ import annotations

import gzip
import io

import nibabel as nib
import numpy as np
from PIL import Image
from skimage.measure import find_contours


def mask_to_png(mask: np.ndarray) -> bytes:
    """``H x W`` mask (non-zero = tumour) -> 8-bit greyscale PNG, 0 background, 255 tumour.

    Deterministic: the same mask always gives the same bytes. zlib level 1: a 256 x 256 mask
    encodes in 0.3 instead of 0.66 ms (level 6) for a few hundred bytes more; masks are mostly
    zeros, so either is small.
    """
    pixels = np.multiply(np.asarray(mask) != 0, 255, dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def mask_to_nifti(
    masks: np.ndarray,
    affine: np.ndarray | None = None,
    header: nib.Nifti1Header | None = None,
) -> nib.Nifti1Image:
    """``H x W x Z`` mask -> NIfTI-1 uint8 0/1 image on the input's grid and affine.

    ``header`` (the input's) donates its voxel sizes, units and qform/sform codes.
    """
    data = (np.asarray(masks) != 0).astype(np.uint8)
    affine = np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64)
    image = nib.Nifti1Image(data, affine)
    if header is not None:
        image.header.set_xyzt_units(*header.get_xyzt_units())
        qform, qcode = header.get_qform(coded=True)
        sform, scode = header.get_sform(coded=True)
        image.set_qform(qform if qform is not None else affine, int(qcode) or 1)
        image.set_sform(sform if sform is not None else affine, int(scode) or 1)
    image.header.set_data_dtype(np.uint8)
    image.header["descrip"] = b"lggseg tumour mask (research use only)"
    return image


def validate_nifti_geometry(affine: np.ndarray, header: nib.Nifti1Header) -> None:
    """Raise (nibabel's error) when :func:`mask_to_nifti` could not write this geometry.

    Run on a 1-voxel mask before the model runs, so that writing the real mask afterwards
    cannot fail on the input's qform/sform/units.
    """
    affine = np.asarray(affine, dtype=np.float64)
    if not np.isfinite(affine).all():
        raise ValueError("the affine is not finite")
    mask_to_nifti(np.zeros((1, 1, 1), np.uint8), affine, header).to_bytes()


def nifti_to_gz_bytes(image: nib.Nifti1Image) -> bytes:
    """Serialise a NIfTI image as ``.nii.gz`` bytes (gzip mtime 0: same input, same bytes)."""
    return gzip.compress(image.to_bytes(), compresslevel=6, mtime=0)


def mask_contours(
    mask: np.ndarray, max_contours: int = 200
) -> tuple[list[list[tuple[float, float]]], bool]:
    """Outline polygons of the tumour as ``(x, y)`` = ``(column, row)`` points.

    The mask is padded by one pixel so outlines touching the border are closed. Only the
    ``max_contours`` longest outlines are kept; the flag says whether any were dropped.
    """
    binary = np.pad((np.asarray(mask) != 0).astype(np.float32), 1)
    contours = find_contours(binary, 0.5)
    contours.sort(key=len, reverse=True)
    truncated = len(contours) > max_contours
    polygons = [
        [(round(float(c) - 1, 2), round(float(r) - 1, 2)) for r, c in contour]
        for contour in contours[:max_contours]
    ]
    return polygons, truncated
