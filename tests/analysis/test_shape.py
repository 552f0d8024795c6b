"""Shape features on synthetic shapes whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis import shape


def _ball(radius: float, size: int = 27) -> np.ndarray:
    c = size // 2
    z, y, x = np.mgrid[:size, :size, :size] - c
    return (x**2 + y**2 + z**2 <= radius**2).astype(np.uint8)


def _grid(size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:size, :size]
    return yy - size / 2, xx - size / 2


def _disc(radius: float = 40) -> np.ndarray:
    y, x = _grid()
    return (np.hypot(y, x) < radius).astype(np.uint8)


def _star(arms: int = 5) -> np.ndarray:
    y, x = _grid()
    return (np.hypot(y, x) < 30 + 15 * np.cos(arms * np.arctan2(y, x))).astype(np.uint8)


def test_minimum_ellipsoid_of_box_corners_has_the_known_volume() -> None:
    # The MVEE of the box [-a, a] x [-b, b] x [-c, c] has semi-axes sqrt(3) (a, b, c).
    a, b, c = 3.0, 2.0, 1.0
    corners = np.array([[sa * a, sb * b, sc * c] for sa in (-1, 1) for sb in (-1, 1)
                        for sc in (-1, 1)])
    matrix, centre = shape.min_volume_ellipsoid(corners)
    assert shape.ellipsoid_volume(matrix) == pytest.approx(4 / 3 * math.pi * 3**1.5 * a * b * c,
                                                           rel=1e-4)
    np.testing.assert_allclose(centre, 0, atol=1e-9)


def test_ball_bevr_is_about_one() -> None:
    for radius in (6, 10, 12):
        assert shape.bevr(_ball(radius)) == pytest.approx(1.0, abs=0.03)


def test_bevr_ignores_stretching_and_drops_for_a_cube_and_two_blobs() -> None:
    z, y, x = np.mgrid[:40, :40, :40] - 20
    ellipsoid = ((x / 18) ** 2 + (y / 10) ** 2 + (z / 6) ** 2 <= 1).astype(np.uint8)
    assert shape.bevr(ellipsoid) == pytest.approx(1.0, abs=0.03)  # affine invariance
    cube = np.zeros((30, 30, 30), np.uint8)
    cube[5:25, 5:25, 5:25] = 1  # continuous cube: 2 / (pi sqrt 3) = 0.37; voxels a bit more
    assert 0.35 < shape.bevr(cube) < 0.5
    two = np.zeros((60, 27, 27), np.uint8)
    two[:27] = _ball(6)
    two[33:] = _ball(6)
    assert shape.bevr(two) < 0.5


def test_bevr_is_nan_for_a_flat_or_tiny_tumour() -> None:
    flat = np.zeros((20, 20, 5), np.uint8)
    flat[5:15, 5:15, 2] = 1
    assert math.isnan(shape.bevr(flat))
    assert math.isnan(shape.bevr(np.zeros((5, 5, 5), np.uint8)))


def test_disc_has_asd_and_mf_near_zero_and_a_star_has_more() -> None:
    disc, star = shape.slice_features(_disc()), shape.slice_features(_star())
    assert disc["asd"] < 0.02 and disc["mf"] < 0.02
    assert star["asd"] > 0.1 and star["mf"] > 0.05
    assert star["asd"] > 10 * disc["asd"] and star["mf"] > 10 * disc["mf"]
    assert disc["eccentricity"] == pytest.approx(0, abs=0.01)
    assert disc["solidity"] > 0.98 and star["solidity"] < 0.8


def test_asd_and_mf_do_not_depend_on_size() -> None:
    small, large = shape.slice_features(_disc(20)), shape.slice_features(_disc(50))
    y, x = _grid()
    star_small = shape.slice_features(np.hypot(y, x) < 15 + 7.5 * np.cos(5 * np.arctan2(y, x)))
    assert star_small["asd"] == pytest.approx(shape.slice_features(_star())["asd"], rel=0.15)
    assert abs(small["asd"] - large["asd"]) < 0.02


def test_square_region_properties() -> None:
    square = np.zeros((64, 64), np.uint8)
    square[10:40, 20:50] = 1
    found = shape.slice_features(square)
    assert found["extent"] == 1.0 and found["solidity"] == 1.0
    assert found["eccentricity"] == pytest.approx(0, abs=1e-9)
    y, x = np.mgrid[:64, :64]
    ellipse = ((y - 32) / 25) ** 2 + ((x - 32) / 10) ** 2 < 1
    assert shape.slice_features(ellipse)["eccentricity"] == pytest.approx(
        math.sqrt(1 - (10 / 25) ** 2), abs=0.02)


def test_2d_features_use_the_largest_slice_and_its_largest_region() -> None:
    volume = np.zeros((128, 128, 3), np.uint8)
    volume[:, :, 0] = _star()  # smaller area than the disc on slice 1
    volume[:, :, 1] = _disc(45)
    volume[2:6, 2:6, 1] = 1  # a speck beside the disc: not the largest region
    volume[:, :, 2] = _disc(10)
    assert shape.largest_slice(volume) == 1
    found = shape.shape_features(volume)
    assert found["asd"] == pytest.approx(shape.slice_features(_disc(45))["asd"])
    assert found["voxels"] == int(volume.sum())


def test_voxels_and_ml() -> None:
    ball = _ball(8)
    found = shape.shape_features(ball, spacing_mm=(0.5, 0.5, 2.0))
    assert found["voxels"] == int(ball.sum())
    assert found["ml"] == pytest.approx(int(ball.sum()) * 0.5 / 1000)
    assert "ml" not in shape.shape_features(ball)
    assert list(shape.shape_features(ball)) == list(shape.FEATURES)


def test_empty_volume_gives_zero_voxels_and_nan_features() -> None:
    found = shape.shape_features(np.zeros((16, 16, 4), np.uint8))
    assert found["voxels"] == 0
    assert all(math.isnan(found[name]) for name in shape.SHAPE_FEATURES)
    with pytest.raises(ValueError, match="H x W x Z"):
        shape.shape_features(np.zeros((16, 16), np.uint8))
