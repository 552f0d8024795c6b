"""Files the viewer offers for download, built in memory (nothing is written to disk).

Masks use ``inference.outputs``, the same encoders as the API, so a mask downloaded from the
viewer and one returned by the API are byte-identical.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from inference.outputs import mask_to_nifti, mask_to_png, nifti_to_gz_bytes


def mask_png(mask: np.ndarray) -> bytes:
    """An ``H x W`` mask as 8-bit greyscale PNG: 0 background, 255 tumour."""
    if np.asarray(mask).ndim != 2:
        raise ValueError(f"expected an H x W mask, got shape {np.shape(mask)}")
    return mask_to_png(mask)


def mask_nifti(
    masks: np.ndarray, affine: np.ndarray | None = None, header: nib.Nifti1Header | None = None
) -> bytes:
    """An ``H x W x Z`` mask volume as ``.nii.gz`` bytes, uint8 0/1, on the source volume's
    voxel grid (``affine``, and ``header``'s voxel sizes and codes when given)."""
    if np.asarray(masks).ndim != 3:
        raise ValueError(f"expected an H x W x Z mask volume, got shape {np.shape(masks)}")
    return nifti_to_gz_bytes(mask_to_nifti(masks, affine, header))


def metrics_csv(rows: Sequence[dict[str, Any]]) -> bytes:
    """Rows of metrics (one dict per slice, same keys) as UTF-8 CSV with a header line."""
    if not rows:
        raise ValueError("no metrics to export")
    return pd.DataFrame(list(rows)).to_csv(index=False).encode("utf-8")
