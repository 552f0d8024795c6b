"""The download buttons: a slice's mask (PNG), a stack's mask volume (NIfTI), metrics (CSV)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import nibabel as nib
import numpy as np
import streamlit as st

from app import exports
from data import naming
from inference.outputs import mask_to_nifti, mask_to_png, nifti_to_gz_bytes


def mask_png(name: str, mask: np.ndarray, *, key: str) -> None:
    st.download_button(
        "Download the predicted mask (PNG)",
        data=mask_to_png(mask),
        file_name=f"{naming.stem(name)}_predicted_mask.png",
        mime="image/png",
        key=f"png-{key}",
        help="0 = background, 255 = tumour, same size as the slice.",
    )


def mask_volume(title: str, masks: np.ndarray, affine: np.ndarray | None,
                header: nib.Nifti1Header | None, *, key: str) -> None:
    st.download_button(
        "Mask volume (NIfTI)",
        data=nifti_to_gz_bytes(mask_to_nifti(masks, affine, header)),
        file_name=f"{naming.stem(title)}_predicted_mask.nii.gz",
        mime="application/gzip", key=f"nifti-{key}",
        help="uint8, 1 = tumour, H x W x slices on the same voxel grid (affine) as the input.",
    )


def metrics_csv(label: str, rows: Sequence[dict[str, Any]], file_name: str, *, key: str) -> None:
    st.download_button(label, data=exports.metrics_csv(rows), file_name=file_name,
                       mime="text/csv", key=key)
