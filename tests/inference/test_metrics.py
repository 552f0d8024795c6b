"""Per-slice Dice / IoU / areas and their empty-mask conventions."""

from __future__ import annotations

import numpy as np
import pytest

from inference.metrics import area, dice, hd95, hd95_key, iou, slice_scores, volume_metrics


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


def test_slice_scores_count_pixels() -> None:
    pred = np.zeros((10, 10), bool)
    true = np.zeros((10, 10), bool)
    pred[2:6, 2:6] = True  # 16
    true[4:8, 4:8] = True  # 16, overlap 4
    scores = slice_scores(pred, true)
    assert scores.intersection_pixels == 4
    assert scores.predicted_pixels == scores.true_pixels == 16
    assert scores.dice == pytest.approx(8 / 32)
    assert scores.iou == pytest.approx(4 / 28)
    assert scores.total_pixels == 100
    assert area(pred) == 16


def test_hd95_is_in_mm_along_each_axis_when_the_spacing_is_known() -> None:
    pred = np.zeros((20, 20, 10), np.uint8)
    true = np.zeros((20, 20, 10), np.uint8)
    pred[5:10, 5:10, 2:5] = 1
    true[5:10, 5:10, 2:8] = 1  # the truth reaches 3 slices further along axis 2 only
    assert hd95(pred, true) == pytest.approx(3.0)  # pixels
    assert hd95(pred, true, (0.5, 0.5, 2.5)) == pytest.approx(7.5)  # 3 slices x 2.5 mm
    assert hd95(pred, true, (9.0, 9.0, 1.0)) == pytest.approx(3.0)  # in-plane spacing unused
    assert volume_metrics(pred, true, (0.5, 0.5, 2.5))["hd95"] == pytest.approx(7.5)
    assert volume_metrics(pred, true)["hd95"] == pytest.approx(3.0)
    assert np.isnan(hd95(pred, np.zeros_like(true), (1.0, 1.0, 1.0)))
    assert (hd95_key((1.0, 1.0, 1.0)), hd95_key(None)) == ("hd95_mm", "hd95_px")
    with pytest.raises(ValueError, match="3-D"):
        hd95(pred, true, (1.0, 1.0))
