"""app/overlay.py: colours at the right pixels, shapes, opacity, display windowing."""

from __future__ import annotations

import numpy as np
import pytest

from app import overlay


def _grey(value: int = 100, size: int = 8) -> np.ndarray:
    return np.full((size, size, 3), value, dtype=np.uint8)


def _square(lo: int, hi: int, size: int = 8) -> np.ndarray:
    mask = np.zeros((size, size), dtype=np.uint8)
    mask[lo:hi, lo:hi] = 1
    return mask


def test_paint_blends_colour_at_opacity_only_inside_region() -> None:
    base = _grey(100)
    region = _square(2, 4)
    out = overlay.paint(base, region, (200, 0, 50), 0.25)
    # 0.75 * 100 + 0.25 * colour
    np.testing.assert_array_equal(out[2, 2], [125, 75, 88])
    np.testing.assert_array_equal(out[0, 0], [100, 100, 100])
    assert out.dtype == np.uint8 and out.shape == base.shape
    np.testing.assert_array_equal(base, _grey(100))  # the input is not modified


@pytest.mark.parametrize("opacity, expected", [(0.0, (100, 100, 100)), (1.0, overlay.PREDICTION)])
def test_opacity_extremes(opacity: float, expected: tuple[int, int, int]) -> None:
    out = overlay.mask_overlay(_grey(), _square(2, 6), overlay.PREDICTION, mode="fill",
                               opacity=opacity)
    np.testing.assert_array_equal(out[3, 3], expected)


def test_opacity_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="opacity"):
        overlay.paint(_grey(), _square(2, 4), (0, 0, 0), 1.5)


def test_agreement_colours_at_tp_fp_fn_pixels() -> None:
    prediction = np.zeros((8, 8), np.uint8)
    truth = np.zeros((8, 8), np.uint8)
    prediction[1, 1] = truth[1, 1] = 1  # true positive
    prediction[2, 2] = 1  # false positive
    truth[3, 3] = 1  # false negative
    out = overlay.agreement_overlay(_grey(0), prediction, truth, mode="fill", opacity=1.0)
    np.testing.assert_array_equal(out[1, 1], overlay.TRUE_POSITIVE)
    np.testing.assert_array_equal(out[2, 2], overlay.FALSE_POSITIVE)
    np.testing.assert_array_equal(out[3, 3], overlay.FALSE_NEGATIVE)
    np.testing.assert_array_equal(out[5, 5], [0, 0, 0])  # true negative untouched
    labels = overlay.agreement_labels(prediction, truth)
    assert (labels[1, 1], labels[2, 2], labels[3, 3], labels[5, 5]) == (1, 2, 3, 0)
    assert np.count_nonzero(labels) == 3


def test_agreement_colours_are_three_distinct_colours() -> None:
    colours = {overlay.TRUE_POSITIVE, overlay.FALSE_POSITIVE, overlay.FALSE_NEGATIVE}
    assert len(colours) == 3
    assert overlay.PREDICTION != overlay.GROUND_TRUTH


def test_contour_mode_colours_only_the_boundary() -> None:
    mask = _square(2, 7)  # 5 x 5 square
    out = overlay.mask_overlay(_grey(0), mask, overlay.GROUND_TRUTH, mode="contour", opacity=1.0)
    coloured = np.all(out == overlay.GROUND_TRUTH, axis=2)
    assert coloured[2, 2] and coloured[2, 4] and coloured[6, 6]  # edges and corners
    assert not coloured[4, 4]  # interior
    assert not coloured[0, 0]  # outside
    assert coloured.sum() == 16  # the ring of a 5 x 5 square


def test_prediction_and_truth_uses_both_colours() -> None:
    prediction = _square(0, 3)
    truth = _square(5, 8)
    out = overlay.prediction_and_truth(_grey(0), prediction, truth, mode="fill", opacity=1.0)
    np.testing.assert_array_equal(out[1, 1], overlay.PREDICTION)
    np.testing.assert_array_equal(out[6, 6], overlay.GROUND_TRUTH)
    np.testing.assert_array_equal(out[4, 0], [0, 0, 0])
    without_truth = overlay.prediction_and_truth(_grey(0), prediction, None, mode="fill",
                                                 opacity=1.0)
    np.testing.assert_array_equal(without_truth[6, 6], [0, 0, 0])


def test_mask_of_another_size_is_refused_with_both_sizes() -> None:
    with pytest.raises(ValueError, match=r"4x4 but the image is 8x8"):
        overlay.mask_overlay(_grey(), np.ones((4, 4)), overlay.PREDICTION)


def test_empty_masks_leave_the_image_unchanged() -> None:
    base = _grey(77)
    empty = np.zeros((8, 8), np.uint8)
    for mode in ("fill", "contour"):
        out = overlay.agreement_overlay(base, empty, empty, mode=mode, opacity=0.7)
        np.testing.assert_array_equal(out, base)


def test_display_image_flair_and_composite() -> None:
    image = np.zeros((4, 4, 3), np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = 10, 20, 30
    flair = overlay.display_image(image, "flair")
    assert flair.shape == (4, 4, 3) and flair.dtype == np.uint8
    np.testing.assert_array_equal(flair[0, 0], [20, 20, 20])
    np.testing.assert_array_equal(overlay.display_image(image, "composite")[0, 0], [10, 20, 30])


def test_display_image_windows_non_uint8_to_full_range() -> None:
    image = np.zeros((10, 10), np.float32)
    image[2:8, 2:8] = np.linspace(1000.0, 3000.0, 36).reshape(6, 6)
    shown = overlay.display_image(image)
    assert shown.shape == (10, 10, 3) and shown.dtype == np.uint8
    assert shown[0, 0, 0] == 0
    assert shown[7, 7, 0] == 255 and shown[2, 2, 0] == 0  # 1st..99th percentile window
    assert 100 < shown[5, 4, 0] < 160
    grey16 = (np.arange(16, dtype=np.uint16).reshape(4, 4) + 1) * 1000
    assert overlay.display_image(grey16).max() == 255


def test_display_image_of_a_constant_or_empty_slice_is_finite() -> None:
    assert overlay.display_image(np.zeros((5, 5), np.float32)).max() == 0
    assert overlay.display_image(np.full((5, 5), 7.5, np.float32)).min() == 255


def test_hex_colour() -> None:
    assert overlay.hex_colour((230, 159, 0)) == "#E69F00"
