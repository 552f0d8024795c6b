"""training.rng: a restored random state draws exactly what the saved one would have drawn."""

from __future__ import annotations

import io
import random

import numpy as np
import torch

from training.rng import rng_state, seed_everything, set_rng_state


def _draws() -> tuple[float, float, float, list[float]]:
    return (random.random(), random.gauss(0.0, 1.0), float(np.random.normal()),
            torch.rand(3).tolist())


def test_saved_state_survives_resume_pt_and_replays_the_same_draws() -> None:
    seed_everything(5)
    _draws()
    buffer = io.BytesIO()
    torch.save(rng_state(), buffer)  # as in resume.pt, loaded back with weights_only=True
    expected = _draws()
    seed_everything(99)  # anything in between
    _draws()
    buffer.seek(0)
    set_rng_state(torch.load(buffer, weights_only=True))
    assert _draws() == expected
