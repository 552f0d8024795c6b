"""``normalize_intensity`` / ``preprocess_image``: per-channel z-score over the non-zero pixels,
computed without a gather of the pixels and checked here against the textbook two-pass formula."""

from __future__ import annotations

import numpy as np
import pytest

from data.preprocessing import PreprocessingConfig, normalize_intensity, preprocess_image


def _reference(image: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Gather each channel's non-zero pixels, mean and std in float64 (two passes)."""
    out = np.zeros(image.shape, dtype=np.float32)
    for c in range(image.shape[2]):
        channel = image[:, :, c].astype(np.float64)
        values = channel[channel != 0]
        if values.size == 0 or values.std() < eps:
            continue
        out[:, :, c] = np.where(channel != 0, (channel - values.mean()) / (values.std() + eps), 0)
    return out


def _slice(rng: np.random.Generator, offset: float = 0.0) -> np.ndarray:
    image = rng.gamma(2.0, 40.0, size=(64, 48, 3)).astype(np.float32) + np.float32(offset)
    image[:10] = 0  # background
    image[:, :, 1] = 7.0  # a constant channel -> zeros
    image[20:30, 10:20, 1] = 0
    return image


@pytest.mark.parametrize("offset", [0.0, 5000.0])
def test_normalisation_equals_the_two_pass_formula(offset: float) -> None:
    image = _slice(np.random.default_rng(0), offset)
    got = normalize_intensity(image)
    assert got.shape == image.shape and got.dtype == np.float32 and got.flags.c_contiguous
    np.testing.assert_allclose(got, _reference(image), atol=2e-5)
    assert not got[:, :, 1].any()  # constant channel
    assert not got[:10].any()  # zeros stay zero
    brain = got[10:, :, 0]
    assert abs(float(brain.mean())) < 1e-4 and float(brain.std()) == pytest.approx(1.0, abs=1e-4)


def test_an_empty_channel_stays_zero_and_the_input_is_untouched() -> None:
    image = _slice(np.random.default_rng(1))
    image[:, :, 2] = 0
    before = image.copy()
    chw = preprocess_image(image, PreprocessingConfig(image_size=64))
    assert np.array_equal(image, before)
    assert chw.shape == (3, 64, 64) and chw.flags.c_contiguous and not chw[2].any()
    assert np.isfinite(chw).all()
