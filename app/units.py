"""How the viewer writes areas and volumes: mm² and ml when the file carries a voxel spacing,
pixels and voxels (said so) when it does not. No Streamlit here."""

from __future__ import annotations

import numpy as np

Spacing = tuple[float, float, float]
"""Voxel spacing in mm: rows, columns, slices."""


def area_label(pixels: int | None, spacing: Spacing | None) -> str:
    """A slice's area: mm² when the pixel spacing is known, else pixels (labelled)."""
    if pixels is None:
        return "-"
    if spacing is None:
        return f"{pixels:,} px"
    return f"{pixels * spacing[0] * spacing[1]:,.1f} mm²"


def volume_label(voxels: int | None, spacing: Spacing | None) -> str:
    """A volume: ml when the voxel spacing is known, else voxels (labelled)."""
    if voxels is None:
        return "-"
    if spacing is None:
        return f"{voxels:,} voxels"
    return f"{voxels * float(np.prod(spacing)) / 1000.0:,.2f} ml"
