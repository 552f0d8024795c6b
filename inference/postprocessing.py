"""The release's optional post-processing of a predicted volume, one definition for every caller
(``training.evaluate --largest-component / --min-component-voxels / --core-probability``,
``analysis.cohort --largest-component``, ``benchmarks/postprocessing.py``).

All work on 3-D connected components with 26-connectivity (slices stacked in order), since a
false positive on a slice at the top or bottom of a volume is an island in 3-D even when it is
large in its own slice."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def keep_largest_component(volume: np.ndarray) -> np.ndarray:
    """Keep the largest 3-D connected component (26-connectivity) of a binary volume."""
    from monai.transforms import KeepLargestConnectedComponent

    if not volume.any():
        return volume
    keep = KeepLargestConnectedComponent(applied_labels=[1], is_onehot=False, connectivity=3)
    result = keep(torch.as_tensor(volume[None].astype(np.uint8)))
    return np.asarray(result[0], dtype=np.uint8)


def _components(volume: np.ndarray) -> tuple[np.ndarray, int]:
    from scipy import ndimage

    return ndimage.label(volume, structure=np.ones((3, 3, 3), dtype=bool))  # type: ignore[no-any-return]


def drop_small_components(volume: np.ndarray, min_voxels: int) -> np.ndarray:
    """Remove the 3-D connected components smaller than ``min_voxels`` (26-connectivity)."""
    if min_voxels <= 1 or not volume.any():
        return volume
    labels, _ = _components(volume)
    sizes = np.bincount(labels.ravel())
    keep = np.flatnonzero(sizes >= min_voxels)
    return np.isin(labels, keep[keep > 0]).astype(np.uint8)


def keep_confident_components(
    volume: np.ndarray, probabilities: np.ndarray, core: float
) -> np.ndarray:
    """Keep the 3-D components (26-connectivity) holding at least one voxel of probability
    ``>= core``: a blob the model is nowhere sure of is dropped whatever its size."""
    from scipy import ndimage

    if not volume.any():
        return volume
    labels, count = _components(volume)
    peaks = ndimage.maximum(probabilities, labels, index=np.arange(1, count + 1))
    keep = np.flatnonzero(np.asarray(peaks) >= core) + 1
    return np.isin(labels, keep).astype(np.uint8)


@dataclass(frozen=True)
class PostProcessing:
    """A chosen combination of the rules above, applied in this order: size, core, largest."""

    largest_component: bool = False
    min_component_voxels: int = 0
    core_probability: float | None = None

    def __post_init__(self) -> None:
        if self.min_component_voxels < 0:
            raise ValueError(f"min_component_voxels must be >= 0, not {self.min_component_voxels}")
        if self.core_probability is not None and not 0.0 < self.core_probability < 1.0:
            raise ValueError(f"core_probability must lie in (0, 1), not {self.core_probability}")

    def apply(self, masks: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
        """Post-process a binary volume given its probabilities (same shape)."""
        out = drop_small_components(masks, self.min_component_voxels)
        if self.core_probability is not None:
            out = keep_confident_components(out, probabilities, self.core_probability)
        if self.largest_component:
            out = keep_largest_component(out)
        return out

    def describe(self) -> str:
        parts = []
        if self.min_component_voxels > 1:
            parts.append(f"components under {self.min_component_voxels} voxels dropped")
        if self.core_probability is not None:
            parts.append(f"components without a voxel >= {self.core_probability} dropped")
        if self.largest_component:
            parts.append("largest component kept")
        return "; ".join(parts) or "none"
