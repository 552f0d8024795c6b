"""Training augmentation: binary masks, shapes, zero background, seeded determinism."""

from __future__ import annotations

import albumentations as A
import numpy as np
import pytest

from data.augmentation import STRENGTHS, ForegroundBrightnessContrast, build_augmentation
from tests.data.conftest import synthetic_slice


def _slice(size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    image, mask = synthetic_slice(0, size)
    mask[20:40, 10:30] = 1
    return image, (mask > 0).astype(np.uint8)


@pytest.mark.parametrize("strength", list(STRENGTHS))
def test_masks_stay_binary_and_shapes_unchanged(strength: str) -> None:
    image, mask = _slice()
    augment = build_augmentation(64, strength, seed=0)
    changed = 0
    for _ in range(30):
        out = augment(image=image, mask=mask)
        assert out["image"].shape == (64, 64, 3) and out["image"].dtype == np.uint8
        assert out["mask"].shape == (64, 64) and out["mask"].dtype == np.uint8
        assert set(np.unique(out["mask"])) <= {0, 1}
        changed += not np.array_equal(out["mask"], mask)
    assert changed > 5  # the geometry really moves the mask with the image


def test_image_and_mask_move_together() -> None:
    image = np.zeros((64, 64, 3), np.uint8)
    image[10:30, 5:25] = 200  # a bright square whose mask is exactly that square
    mask = (image[:, :, 0] > 0).astype(np.uint8)
    augment = A.Compose([A.HorizontalFlip(p=1.0)], seed=0)
    out = augment(image=image, mask=mask)
    assert np.array_equal(out["mask"], (out["image"][:, :, 0] > 0).astype(np.uint8))
    assert out["mask"][10:30, 39:59].all() and not out["mask"][10:30, 5:25].any()


def test_same_seed_same_draws_other_seed_other_draws() -> None:
    image, mask = _slice()
    first = build_augmentation(64, seed=42)
    second = build_augmentation(64, seed=42)
    third = build_augmentation(64, seed=43)
    a = [first(image=image, mask=mask) for _ in range(5)]
    b = [second(image=image, mask=mask) for _ in range(5)]
    c = [third(image=image, mask=mask) for _ in range(5)]
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x["image"], y["image"]) and np.array_equal(x["mask"], y["mask"])
    assert any(not np.array_equal(x["image"], z["image"]) for x, z in zip(a, c, strict=True))


def test_foreground_brightness_contrast_keeps_background_zero() -> None:
    image, _ = _slice()
    transform = A.Compose([ForegroundBrightnessContrast(0.3, 0.3, p=1.0)], seed=1)
    stock = A.Compose([A.RandomBrightnessContrast(0.3, 0.3, p=1.0)], seed=1)
    background = image.sum(axis=2) == 0
    for _ in range(10):
        out = transform(image=image)["image"]
        assert out.dtype == np.uint8
        assert (out[background] == 0).all()  # normalisation sees the same brain mask
        assert ((out > 0) == (image > 0)).all()
        assert not np.array_equal(out, image)
    # why the custom transform exists: the stock one shifts the background too
    shifted = [stock(image=image)["image"][background].any() for _ in range(10)]
    assert any(shifted)


def test_read_only_input_is_accepted() -> None:
    image, mask = _slice()
    image.flags.writeable = False
    mask.flags.writeable = False
    out = build_augmentation(64, "strong", seed=0)(image=image, mask=mask)
    assert out["image"].shape == image.shape


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown augmentation strength 'wild'"):
        build_augmentation(64, "wild")
    with pytest.raises(ValueError, match="image_size"):
        build_augmentation(0)
    with pytest.raises(ValueError, match="limits"):
        ForegroundBrightnessContrast(1.5, 0.1)
