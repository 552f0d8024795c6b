"""Files the viewer offers for download, built in memory (nothing is written to disk)."""

from __future__ import annotations

import gzip
import io
from collections.abc import Sequence
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
from PIL import Image


def mask_png(mask: np.ndarray) -> bytes:
    """A binary ``H x W`` mask as an 8-bit greyscale PNG holding 0 (background) and 255 (tumour),
    the convention of the kaggle_3m ``*_mask.tif`` files."""
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise ValueError(f"expected an H x W mask, got shape {arr.shape}")
    buffer = io.BytesIO()
    Image.fromarray(np.where(arr > 0, 255, 0).astype(np.uint8), mode="L").save(buffer, "PNG")
    return buffer.getvalue()


def mask_nifti(mask: np.ndarray, affine: np.ndarray | None = None) -> bytes:
    """A binary mask volume as gzipped NIfTI-1 (``.nii.gz``) bytes, uint8 0/1.

    ``affine`` is the source volume's voxel-to-world matrix, so the mask lines up with it in
    any NIfTI viewer; without one, the identity is used (voxel coordinates).
    """
    arr = np.asarray(mask)
    if arr.ndim != 3:
        raise ValueError(f"expected a 3-D mask volume, got shape {arr.shape}")
    image = nib.Nifti1Image(
        (arr > 0).astype(np.uint8), np.eye(4) if affine is None else np.asarray(affine, float)
    )
    image.header.set_data_dtype(np.uint8)
    image.header["descrip"] = b"lggseg predicted tumour mask (research use only)"
    return gzip.compress(image.to_bytes(), mtime=0)


def metrics_csv(rows: Sequence[dict[str, Any]]) -> bytes:
    """Rows of metrics (one dict per slice, same keys) as UTF-8 CSV with a header line."""
    if not rows:
        raise ValueError("no metrics to export")
    return pd.DataFrame(list(rows)).to_csv(index=False).encode("utf-8")
