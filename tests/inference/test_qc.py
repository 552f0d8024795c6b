"""The QC montage: which slices it shows, and what it draws."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from inference.qc import qc_montage, qc_slices


def test_qc_slices_are_the_tumour_slices_of_either_mask_spread_evenly() -> None:
    masks = np.zeros((8, 8, 40), np.uint8)
    truths = np.zeros_like(masks)
    masks[2:4, 2:4, [3, 7]] = 1
    truths[2:4, 2:4, [7, 9]] = 1
    assert qc_slices(masks, truths, 24) == [3, 7, 9]
    assert qc_slices(masks, None, 24) == [3, 7]
    assert qc_slices(np.zeros_like(masks), None, 24) == [20]  # none: the middle slice
    masks[:, :, :] = 1
    picked = qc_slices(masks, None, 5)
    assert picked == [0, 10, 20, 29, 39]  # evenly over the 40 tumour slices, both ends


def _colour_pixels(png: bytes, rgb: tuple[int, int, int]) -> int:
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return int((np.abs(pixels - np.array(rgb)).sum(axis=2) < 60).sum())


def test_montage_draws_the_truth_outline_only_when_there_is_truth() -> None:
    flair = np.random.default_rng(0).integers(1, 200, (40, 40, 6)).astype(np.float32)
    masks = np.zeros((40, 40, 6), np.uint8)
    masks[10:20, 10:20, 2] = 1
    truths = np.zeros_like(masks)
    truths[15:30, 15:30, 2:4] = 1
    with_truth = qc_montage(flair, masks, truths, title="case", pixel_mm2=0.25)
    without = qc_montage(flair, masks, None, title="case")
    assert Image.open(io.BytesIO(with_truth)).format == "PNG"
    green = (0x3C, 0xFF, 0x3C)
    assert _colour_pixels(with_truth, green) > 20 and _colour_pixels(without, green) == 0
    assert _colour_pixels(without, (0xFF, 0x2A, 0x2A)) > 5  # the prediction's outline
    # two panels (slices 3 and 4) with truth, one without: the second figure is narrower
    assert Image.open(io.BytesIO(with_truth)).width > Image.open(io.BytesIO(without)).width
