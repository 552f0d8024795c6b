"""Per-patient (volumetric) segmentation metrics, computed with ``monai.metrics``.

A patient's slices are stacked into one binary 3-D volume (prediction and truth) and every metric
is computed once over the volume, so a patient counts once however many slices it has.

Conventions for empty masks (MONAI's own, stated here because they move the means):

- Dice and IoU: truth and prediction both empty -> 1.0 (a correct "no tumour");
  exactly one of them empty -> 0.0.
- Precision = TP / (TP + FP): NaN when nothing is predicted.
- Recall = TP / (TP + FN): NaN when the truth is empty.
- HD95 (95th-percentile symmetric Hausdorff distance, in pixels; the TIFFs carry no voxel
  spacing, so slice spacing counts as 1 pixel): NaN when either volume is empty.
- NaN values are excluded from means, medians and standard deviations; the count of patients
  that entered each statistic is reported next to it.

``std`` is the sample standard deviation over patients (n - 1 denominator; None for fewer than
two values), the usual figure for the spread of a sample of patients.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping
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


def dice_from_counts(tp: float, fp: float, fn: float) -> float:
    """Dice from voxel counts with the convention above (both empty -> 1.0)."""
    denominator = 2.0 * tp + fp + fn
    return 1.0 if denominator == 0 else 2.0 * tp / denominator


def volume_metrics(prediction: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Dice, IoU, precision, recall and HD95 of one binary volume (any shape, e.g. D x H x W)."""
    if prediction.shape != truth.shape:
        raise ValueError(f"prediction {prediction.shape} and truth {truth.shape} differ in shape")
    pred = torch.as_tensor(np.asarray(prediction) > 0, dtype=torch.float32)[None, None]
    true = torch.as_tensor(np.asarray(truth) > 0, dtype=torch.float32)[None, None]
    confusion = get_confusion_matrix(pred, true, include_background=True)
    with warnings.catch_warnings():
        # MONAI warns for an empty volume in HD95 (the NaN it returns is our convention) and
        # about one of its own deprecated internal arguments.
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", FutureWarning)
        hd95 = compute_hausdorff_distance(pred, true, include_background=True, percentile=95)
    return {
        "dice": compute_dice(pred, true, include_background=True, ignore_empty=False).item(),
        "iou": compute_iou(pred, true, include_background=True, ignore_empty=False).item(),
        "precision": compute_confusion_matrix_metric("precision", confusion).item(),
        "recall": compute_confusion_matrix_metric("recall", confusion).item(),
        "hd95": _finite_or_nan(hd95.item()),
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
