"""The release's optional post-processing of a predicted volume, one definition for every caller
(``training.evaluate --largest-component``, ``analysis.cohort --largest-component``)."""

from __future__ import annotations

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
