"""Per-slice overlap metrics on binary masks (pure numpy); the viewer uses these too.

Conventions (fixed, so numbers are comparable everywhere):

- A mask is any array; non-zero means tumour. Both masks must have the same shape.
- Dice = 2|A∩B| / (|A| + |B|); IoU = |A∩B| / |A∪B|.
- Both masks empty (no tumour predicted, none present): Dice = IoU = 1.0 (a correct "no tumour").
- Exactly one mask empty: Dice = IoU = 0.0.
- Areas are pixel counts; ``*_mm2`` fields appear only when a pixel spacing is given.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


def _binary_pair(prediction: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(prediction) != 0
    true = np.asarray(target) != 0
    if pred.shape != true.shape:
        raise ValueError(f"mask shapes differ: prediction {pred.shape} vs target {true.shape}")
    return pred, true


def dice(prediction: np.ndarray, target: np.ndarray) -> float:
    """Dice coefficient of two binary masks; 1.0 when both are empty."""
    pred, true = _binary_pair(prediction, target)
    total = int(pred.sum()) + int(true.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(pred, true).sum()) / total


def iou(prediction: np.ndarray, target: np.ndarray) -> float:
    """Intersection over union (Jaccard) of two binary masks; 1.0 when both are empty."""
    pred, true = _binary_pair(prediction, target)
    union = int(np.logical_or(pred, true).sum())
    if union == 0:
        return 1.0
    return int(np.logical_and(pred, true).sum()) / union


def area(mask: np.ndarray) -> int:
    """Number of tumour (non-zero) pixels."""
    return int(np.count_nonzero(mask))


@dataclass(frozen=True)
class SliceScores:
    """Agreement between a predicted and a ground-truth mask of one slice."""

    dice: float
    iou: float
    predicted_pixels: int
    true_pixels: int
    intersection_pixels: int
    total_pixels: int
    predicted_mm2: float | None = None
    true_mm2: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def slice_scores(
    prediction: np.ndarray,
    target: np.ndarray,
    pixel_spacing_mm: tuple[float, float] | None = None,
) -> SliceScores:
    """Dice, IoU and areas of one slice; areas in mm² too when the pixel spacing is known."""
    pred, true = _binary_pair(prediction, target)
    pred_px, true_px = int(pred.sum()), int(true.sum())
    pixel_mm2 = None if pixel_spacing_mm is None else float(np.prod(pixel_spacing_mm))
    return SliceScores(
        dice=dice(pred, true),
        iou=iou(pred, true),
        predicted_pixels=pred_px,
        true_pixels=true_px,
        intersection_pixels=int(np.logical_and(pred, true).sum()),
        total_pixels=int(pred.size),
        predicted_mm2=None if pixel_mm2 is None else pred_px * pixel_mm2,
        true_mm2=None if pixel_mm2 is None else true_px * pixel_mm2,
    )
