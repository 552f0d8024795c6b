"""bf16 autocast against fp32 on real kaggle_3m slices: the documented accuracy check.

Measured (27 real slices from 9 patients, 2 per patient with tumour + 1 without; 2-core
AMD EPYC with AVX512-BF16; see ``inference/README.md``):

| checkpoint | max abs dp | mean abs dp | pooled mask Dice | worst slice Dice |
|---|---|---|---|---|
| resnet18 @64, 2 epochs (val Dice 0.56) | 0.013 | 0.0003 | 0.996 | 0.94 (177 px tumour) |
| bundled release 0.2.0 (resnet50 @256) | 0.035 | 0.00001 | 0.999 | |
| resnet50 @256, random weights, logits spread x2e4 | 0.39 | 0.0033 | 0.990 | 0.983 |
| resnet18 @64, random weights, logits spread x2e4 | 0.24 | 0.0023 | 0.994 | 0.991 |

Random weights with artificially steep logits magnify bf16 rounding near the threshold, so
``max |dp|`` is only asserted for a trained model (``LGGSEG_TEST_CHECKPOINT`` or the bundled one).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from data.kaggle3m import read_image, read_mask, scan_dataset
from inference.metrics import dice
from inference.predictor import Predictor
from models import BUNDLED_CHECKPOINT

pytestmark = pytest.mark.realdata


def real_slices(lgg_dir: Path, patients: int = 3) -> list[np.ndarray]:
    images = []
    everyone = scan_dataset(lgg_dir)
    for patient in everyone[:: len(everyone) // patients][:patients]:
        tumour = [s for s in patient.slices if read_mask(s.mask_path).any()]
        chosen = tumour[:2] + [patient.slices[len(patient.slices) // 4]]
        images += [read_image(s.image_path) for s in chosen]
    return images


def compare(checkpoint: Path, images: list[np.ndarray]) -> tuple[float, float, float]:
    """(max |p_bf16 - p_fp32|, mean |p_bf16 - p_fp32|, Dice of the two masks over all slices)."""
    fp32 = Predictor.from_checkpoint(checkpoint, precision="fp32", engine="torch")
    bf16 = Predictor.from_checkpoint(checkpoint, precision="bf16", engine="torch")
    fp32, bf16 = fp32.predict_batch(images), bf16.predict_batch(images)
    diffs = [np.abs(a.probabilities - b.probabilities) for a, b in zip(fp32, bf16, strict=True)]
    pooled = dice(
        np.concatenate([a.mask.ravel() for a in fp32]),
        np.concatenate([b.mask.ravel() for b in bf16]),
    )
    return float(max(d.max() for d in diffs)), float(np.mean([d.mean() for d in diffs])), pooled


def test_bf16_agrees_with_fp32_random_weights(lgg_dir: Path, spread_checkpoint: Path) -> None:
    worst, mean, pooled = compare(spread_checkpoint, real_slices(lgg_dir))
    assert pooled >= 0.98, f"mask Dice bf16 vs fp32 {pooled:.4f}"
    assert mean <= 0.01, f"mean |dp| {mean:.4f}"
    assert worst > 0  # bf16 really ran: the two precisions are not the same computation


def test_bf16_agrees_with_fp32_trained_model(lgg_dir: Path) -> None:
    env = os.environ.get("LGGSEG_TEST_CHECKPOINT")
    checkpoint = Path(env) if env else BUNDLED_CHECKPOINT
    if not checkpoint.is_file():
        pytest.skip(
            "no trained checkpoint: set LGGSEG_TEST_CHECKPOINT or add the bundled model at "
            f"{BUNDLED_CHECKPOINT}"
        )
    worst, mean, pooled = compare(checkpoint, real_slices(lgg_dir, patients=9))
    assert pooled >= 0.98, f"mask Dice bf16 vs fp32 {pooled:.4f}"
    # Release 0.2.0 measured 0.035 at its worst pixel (0.1.0: 0.064; mean 1e-5): what
    # matters is the mask, so the bound on one pixel is loose and the mean one tight.
    assert worst <= 0.1, f"max |dp| {worst:.4f}"
    assert mean <= 0.002, f"mean |dp| {mean:.5f}"
