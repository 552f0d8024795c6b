"""Per-slice Dice / IoU / areas and their empty-mask conventions."""

from __future__ import annotations

import numpy as np
import pytest

from inference.metrics import area, dice, iou, slice_scores


def test_dice_and_iou_of_known_overlap() -> None:
    a = np.zeros((4, 4), np.uint8)
    b = np.zeros((4, 4), np.uint8)
    a[0, :4] = 1  # 4 pixels
    b[0, 2:4] = 255  # 2 pixels, both inside a: any non-zero counts
    assert dice(a, b) == pytest.approx(2 * 2 / (4 + 2))
    assert iou(a, b) == pytest.approx(2 / 4)


def test_both_empty_is_perfect_and_one_empty_is_zero() -> None:
    empty = np.zeros((3, 3))
    full = np.ones((3, 3))
    assert dice(empty, empty) == 1.0 and iou(empty, empty) == 1.0
    assert dice(full, empty) == 0.0 and iou(empty, full) == 0.0


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        dice(np.zeros((2, 2)), np.zeros((2, 3)))


def test_slice_scores_with_spacing() -> None:
    pred = np.zeros((10, 10), bool)
    true = np.zeros((10, 10), bool)
    pred[2:6, 2:6] = True  # 16
    true[4:8, 4:8] = True  # 16, overlap 4
    scores = slice_scores(pred, true, pixel_spacing_mm=(0.5, 2.0))
    assert scores.intersection_pixels == 4
    assert scores.predicted_pixels == scores.true_pixels == 16
    assert scores.dice == pytest.approx(8 / 32)
    assert scores.iou == pytest.approx(4 / 28)
    assert scores.predicted_mm2 == pytest.approx(16.0)
    assert scores.total_pixels == 100
    assert area(pred) == 16
    assert slice_scores(pred, true).predicted_mm2 is None
