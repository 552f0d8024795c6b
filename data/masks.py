"""The one rule for a ground-truth mask, used by the reader, the CLI, the API and the viewer.

A mask is one 2-D image (``H x W``, or ``H x W x 1``, or grey stored as RGB/RGBA) holding at most
two values: the lower one is background, the other is tumour (0/1, 0/255, False/True...).
Anything else (colours, several grey levels, several pages) is refused with a message, since it
is most likely an MRI slice uploaded in the mask's place.
"""

from __future__ import annotations

import numpy as np


class MaskError(ValueError):
    """An array that is not a usable binary mask; the message says why."""


def binary_mask(mask: np.ndarray) -> np.ndarray:
    """``mask`` as uint8 ``H x W`` in {0, 1}; raises MaskError when it breaks the rule above."""
    arr = np.asarray(mask)
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        colour = arr[:, :, :3]
        if not (np.array_equal(colour[:, :, 0], colour[:, :, 1])
                and np.array_equal(colour[:, :, 0], colour[:, :, 2])):
            raise MaskError("a mask must be black and white; this one has colours "
                            "(is it an MRI slice rather than a mask?)")
        arr = colour[:, :, 0]
    elif arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim != 2:
        raise MaskError(f"a mask must be one 2-D image; this one has shape {arr.shape}")
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise MaskError(f"a mask must hold numbers; this one holds {arr.dtype}")
    values = np.unique(arr)
    if not np.isfinite(values).all():
        raise MaskError("a mask must hold finite values; this one has NaN or infinity")
    if values.size > 2:
        raise MaskError(f"a mask must hold two values (background and tumour, e.g. 0 and 255); "
                        f"this one has {values.size} (is it an MRI slice rather than a mask?)")
    if values.size == 1:
        return np.zeros(arr.shape, dtype=np.uint8) if values[0] <= 0 else np.ones(
            arr.shape, dtype=np.uint8)
    return (arr == values[1]).astype(np.uint8)


def binary_volume(mask: np.ndarray) -> np.ndarray:
    """A mask volume ``H x W x Z`` as uint8 {0, 1}: the rule above over all its voxels at once
    (so a slice without tumour stays empty); raises MaskError when it breaks the rule."""
    arr = np.asarray(mask)
    if arr.ndim != 3:
        raise MaskError(f"a mask volume must be H x W x Z; this one has shape {arr.shape}")
    return binary_mask(arr.reshape(arr.shape[0], -1)).reshape(arr.shape)
