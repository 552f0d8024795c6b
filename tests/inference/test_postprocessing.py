"""3-D post-processing on volumes with known components."""

from __future__ import annotations

import numpy as np

from inference.postprocessing import (
    drop_small_components,
    keep_confident_components,
    keep_largest_component,
)


def volume_with_blobs() -> tuple[np.ndarray, np.ndarray]:
    """A 27-voxel cube (probability 0.95), an 8-voxel cube (0.6) and a diagonal 2-voxel pair
    (0.99) that touches only by a corner (one component under 26-connectivity)."""
    volume = np.zeros((6, 12, 12), np.uint8)
    probabilities = np.zeros(volume.shape, np.float32)
    volume[0:3, 0:3, 0:3] = 1
    probabilities[0:3, 0:3, 0:3] = 0.95
    volume[3:5, 8:10, 8:10] = 1
    probabilities[3:5, 8:10, 8:10] = 0.6
    volume[5, 5, 5] = volume[4, 6, 6] = 1
    probabilities[5, 5, 5] = probabilities[4, 6, 6] = 0.99
    return volume, probabilities


def test_small_components_are_dropped_by_3d_size() -> None:
    volume, _ = volume_with_blobs()
    assert drop_small_components(volume, 3).sum() == 27 + 8  # the corner pair is one of 2
    assert drop_small_components(volume, 9).sum() == 27
    assert drop_small_components(volume, 28).sum() == 0
    assert np.array_equal(drop_small_components(volume, 1), volume)
    assert np.array_equal(keep_largest_component(volume), drop_small_components(volume, 9))


def test_components_without_a_confident_core_are_dropped_whatever_their_size() -> None:
    volume, probabilities = volume_with_blobs()
    kept = keep_confident_components(volume, probabilities, 0.9)
    assert kept.sum() == 27 + 2 and kept[3:5, 8:10, 8:10].sum() == 0
    assert keep_confident_components(volume, probabilities, 0.5).sum() == volume.sum()
    assert keep_confident_components(volume, probabilities, 0.999).sum() == 0
    empty = np.zeros_like(volume)
    assert keep_confident_components(empty, probabilities, 0.9).sum() == 0


def test_a_chosen_combination_applies_size_then_core_then_largest() -> None:
    from inference.postprocessing import PostProcessing

    volume, probabilities = volume_with_blobs()
    assert PostProcessing().apply(volume, probabilities).sum() == volume.sum()
    assert PostProcessing().describe() == "none"
    size_and_core = PostProcessing(min_component_voxels=3, core_probability=0.9)
    assert size_and_core.apply(volume, probabilities).sum() == 27  # pair too small, 8 unsure
    assert PostProcessing(core_probability=0.9, largest_component=True).apply(
        volume, probabilities).sum() == 27
    assert "under 3 voxels" in size_and_core.describe() and "0.9" in size_and_core.describe()
    for bad in ({"min_component_voxels": -1}, {"core_probability": 1.0}):
        try:
            PostProcessing(**bad)  # type: ignore[arg-type]
        except ValueError as exc:
            assert "must" in str(exc)
        else:
            raise AssertionError(f"{bad} accepted")
