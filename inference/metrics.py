"""The one metrics module: overlap scores of binary masks, per slice and per volume, with
``monai.metrics`` underneath; the API, the viewer, the CLI, evaluation and training all use it.

Conventions (fixed, so numbers are comparable everywhere):

- A mask is any array; non-zero means tumour. Both masks must have the same shape.
- Dice = 2|A∩B| / (|A| + |B|); IoU = |A∩B| / |A∪B|.
- Both masks empty (no tumour predicted, none present): Dice = IoU = 1.0 (a correct "no tumour");
  exactly one empty: 0.0 (MONAI's ``ignore_empty=False``).
- Precision = TP / (TP + FP): NaN when nothing is predicted. Recall = TP / (TP + FN): NaN when
  the truth is empty.
- HD95 (95th-percentile symmetric Hausdorff distance): in mm when the voxel spacing is given
  (``spacing_mm``, from ``inference.decode.voxel_spacing_mm``), else in pixels (the TIFFs carry
  no spacing, so a slice step counts as 1 pixel); NaN when either mask is empty. Outputs name
  the unit: ``hd95_mm`` or ``hd95_px`` (:func:`hd95_key`).
- Over patients, NaN values are left out of means, medians and standard deviations (sample std,
  n - 1); the count of patients that entered each statistic is reported next to it.
- Areas are pixel counts.

Per-patient (volumetric) scores stack a patient's slices into one 3-D volume, so a patient counts
once however many slices it has.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from monai.metrics import (
    compute_confusion_matrix_metric,
    compute_dice,
    compute_hausdorff_distance,
    compute_iou,
    get_confusion_matrix,
)

METRICS = ("dice", "iou", "precision", "recall", "hd95")


def _binary_pair(prediction: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(prediction) != 0
    true = np.asarray(target) != 0
    if pred.shape != true.shape:
        raise ValueError(f"mask shapes differ: prediction {pred.shape} vs target {true.shape}")
    return pred, true


def _monai_pair(prediction: np.ndarray, target: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Two masks as MONAI's ``B x C x spatial`` float tensors (one batch item, one channel)."""
    pred, true = _binary_pair(prediction, target)
    return (torch.as_tensor(pred, dtype=torch.float32)[None, None],
            torch.as_tensor(true, dtype=torch.float32)[None, None])


def dice(prediction: np.ndarray, target: np.ndarray) -> float:
    """Dice coefficient of two binary masks of any shape; 1.0 when both are empty."""
    pred, true = _monai_pair(prediction, target)
    return float(compute_dice(pred, true, include_background=True, ignore_empty=False).item())


def iou(prediction: np.ndarray, target: np.ndarray) -> float:
    """Intersection over union (Jaccard) of two binary masks; 1.0 when both are empty."""
    pred, true = _monai_pair(prediction, target)
    return float(compute_iou(pred, true, include_background=True, ignore_empty=False).item())


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


def slice_scores(prediction: np.ndarray, target: np.ndarray) -> SliceScores:
    """Dice, IoU and areas (pixels) of one slice, or of a volume with every voxel counted once."""
    pred, true = _binary_pair(prediction, target)
    return SliceScores(
        dice=dice(pred, true),
        iou=iou(pred, true),
        predicted_pixels=int(pred.sum()),
        true_pixels=int(true.sum()),
        intersection_pixels=int(np.logical_and(pred, true).sum()),
        total_pixels=int(pred.size),
    )


# ------------------------------------------------------------------ per patient


def dice_from_counts(tp: float, fp: float, fn: float) -> float:
    """Dice from voxel counts with the convention above (both empty -> 1.0)."""
    denominator = 2.0 * tp + fp + fn
    return 1.0 if denominator == 0 else 2.0 * tp / denominator


def hd95_key(spacing_mm: Sequence[float] | None) -> str:
    """The name an HD95 value goes out under: ``hd95_mm`` with a spacing, ``hd95_px`` without."""
    return "hd95_px" if spacing_mm is None else "hd95_mm"


def _hd95(pred: torch.Tensor, true: torch.Tensor, spacing_mm: Sequence[float] | None) -> float:
    if spacing_mm is not None and len(spacing_mm) != pred.ndim - 2:
        raise ValueError(f"spacing_mm has {len(spacing_mm)} values for a {pred.ndim - 2}-D mask")
    with warnings.catch_warnings():
        # MONAI warns for an empty volume in HD95 (the NaN it returns is our convention) and
        # about one of its own deprecated internal arguments.
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", FutureWarning)
        value = compute_hausdorff_distance(
            pred, true, include_background=True, percentile=95,
            spacing=None if spacing_mm is None else [float(s) for s in spacing_mm],
        )  # fmt: skip
    return _finite_or_nan(value.item())


def hd95(
    prediction: np.ndarray, truth: np.ndarray, spacing_mm: Sequence[float] | None = None
) -> float:
    """95th-percentile symmetric Hausdorff distance of two binary masks (2-D or 3-D), in mm
    along each axis when ``spacing_mm`` (one value per axis) is given, else in pixels; NaN when
    either mask is empty."""
    pred, true = _monai_pair(prediction, truth)
    return _hd95(pred, true, spacing_mm)


def volume_metrics(
    prediction: np.ndarray, truth: np.ndarray, spacing_mm: Sequence[float] | None = None
) -> dict[str, float]:
    """Dice, IoU, precision, recall and HD95 of one binary volume (any shape, e.g. D x H x W);
    HD95 in mm when ``spacing_mm`` (one value per axis) is given, else in pixels."""
    pred, true = _monai_pair(prediction, truth)
    confusion = get_confusion_matrix(pred, true, include_background=True)
    return {
        "dice": compute_dice(pred, true, include_background=True, ignore_empty=False).item(),
        "iou": compute_iou(pred, true, include_background=True, ignore_empty=False).item(),
        "precision": compute_confusion_matrix_metric("precision", confusion).item(),
        "recall": compute_confusion_matrix_metric("recall", confusion).item(),
        "hd95": _hd95(pred, true, spacing_mm),
    }


def _finite_or_nan(value: float) -> float:
    return value if math.isfinite(value) else math.nan


def summarize(rows: Iterable[Mapping[str, Any]], names: Iterable[str] = METRICS) -> dict[str, Any]:
    """Mean, median, sample std (n - 1), min, max and count of each metric over patients, NaN
    excluded."""
    rows = list(rows)
    summary: dict[str, Any] = {"patients": len(rows)}
    for name in names:
        values = np.array([float(r[name]) for r in rows], dtype=np.float64)
        values = values[~np.isnan(values)]
        stats = (
            {
                "mean": float(values.mean()),
                "median": float(np.median(values)),
                "std": float(values.std(ddof=1)) if values.size > 1 else None,
                "min": float(values.min()),
                "max": float(values.max()),
            }
            if values.size
            else dict.fromkeys(("mean", "median", "std", "min", "max"), None)
        )
        summary[name] = {**stats, "n": int(values.size)}
    return summary
