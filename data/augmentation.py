"""Training-only augmentation (albumentations), applied to the raw uint8 slice and its mask
BEFORE ``data.preprocessing``.

Geometry: horizontal flip and a small affine (scale, rotation, shift); the mask follows with
nearest-neighbour interpolation, so it stays binary. Outside pixels are filled with 0 (background).

Intensity: the preprocessing z-scores each channel over its non-zero (brain) pixels, so two things
matter here. (1) Background must stay exactly 0, or the brain mask of the normalisation changes;
albumentations' ``RandomBrightnessContrast`` adds its shift to the background too, hence the
``ForegroundBrightnessContrast`` below. (2) Linear changes of a channel are undone by the z-score
except where they saturate; gamma (non-linear) is what really varies the normalised input.
"""

from __future__ import annotations

from typing import Any

import albumentations as A
import cv2
import numpy as np

STRENGTHS: dict[str, dict[str, Any]] = {
    "light": {
        "scale": (0.95, 1.05),
        "rotate": 10.0,
        "shift": 0.05,
        "affine_p": 0.5,
        "brightness": 0.1,
        "contrast": 0.1,
        "intensity_p": 0.3,
        "gamma": (90, 110),
    },
    "default": {
        "scale": (0.9, 1.1),
        "rotate": 15.0,
        "shift": 0.0625,
        "affine_p": 0.7,
        "brightness": 0.2,
        "contrast": 0.2,
        "intensity_p": 0.5,
        "gamma": (80, 120),
    },
    "strong": {
        "scale": (0.85, 1.2),
        "rotate": 25.0,
        "shift": 0.1,
        "affine_p": 0.8,
        "brightness": 0.3,
        "contrast": 0.3,
        "intensity_p": 0.7,
        "gamma": (70, 150),
    },
}


class ForegroundBrightnessContrast(A.ImageOnlyTransform):
    """Random brightness and contrast of the non-zero pixels only, per channel.

    A foreground pixel ``x`` becomes ``x * (1 + c) + b * 255`` clipped to [1, 255]: it stays
    foreground, and the background stays exactly 0. Expects uint8 images.
    """

    def __init__(
        self, brightness_limit: float = 0.2, contrast_limit: float = 0.2, p: float = 0.5
    ) -> None:
        super().__init__(p=p)
        if not (0 <= brightness_limit < 1 and 0 <= contrast_limit < 1):
            raise ValueError(
                f"limits must be in [0, 1), got brightness {brightness_limit}, "
                f"contrast {contrast_limit}"
            )
        self.brightness_limit = brightness_limit
        self.contrast_limit = contrast_limit

    def get_params(self) -> dict[str, Any]:
        # Drawn from the transform's own generator, so Compose(seed=...) reproduces them.
        gains = [
            1 + self.py_random.uniform(-self.contrast_limit, self.contrast_limit) for _ in range(3)
        ]
        shifts = [
            255 * self.py_random.uniform(-self.brightness_limit, self.brightness_limit)
            for _ in range(3)
        ]
        return {"gains": gains, "shifts": shifts}

    def apply(
        self, img: np.ndarray, gains: list[float], shifts: list[float], **params: Any
    ) -> np.ndarray:
        if img.dtype != np.uint8:
            raise TypeError(f"ForegroundBrightnessContrast expects uint8, got {img.dtype}")
        out = img.astype(np.float32)
        channels = img.shape[2] if img.ndim == 3 else 1
        view = out.reshape(img.shape[0], img.shape[1], channels)
        for c in range(channels):
            ch = view[:, :, c]
            fg = ch > 0
            ch[fg] = np.clip(np.rint(ch[fg] * gains[c % 3] + shifts[c % 3]), 1, 255)
        return out.astype(np.uint8)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("brightness_limit", "contrast_limit")


def build_augmentation(
    image_size: int, strength: str = "default", *, seed: int | None = None
) -> A.Compose:
    """The training augmentation for uint8 ``H x W x 3`` images and ``H x W`` masks.

    Args:
        image_size: the model's input side. The transforms work at the slice's own resolution
            (the preprocessing resizes afterwards), so it is only checked here.
        strength: "light", "default" or "strong".
        seed: seeds the pipeline; with DataLoader workers use
            ``data.dataset.seed_augmentation_worker`` as ``worker_init_fn`` so every worker
            draws different, reproducible augmentations.
    """
    if image_size < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")
    if strength not in STRENGTHS:
        raise ValueError(
            f"unknown augmentation strength {strength!r}; use one of {list(STRENGTHS)}"
        )
    s = STRENGTHS[strength]
    transforms = [
        A.HorizontalFlip(p=0.5),
        A.Affine(
            scale=s["scale"],
            rotate=(-s["rotate"], s["rotate"]),
            translate_percent=(-s["shift"], s["shift"]),
            interpolation=cv2.INTER_LINEAR,
            mask_interpolation=cv2.INTER_NEAREST,
            border_mode=cv2.BORDER_CONSTANT,
            fill=0,
            fill_mask=0,
            p=s["affine_p"],
        ),
        ForegroundBrightnessContrast(s["brightness"], s["contrast"], p=s["intensity_p"]),
        A.RandomGamma(gamma_limit=s["gamma"], p=s["intensity_p"]),
    ]
    return A.Compose(transforms, mask_interpolation=cv2.INTER_NEAREST, seed=seed)


def build_patch_crop(
    patch_size: int, foreground: float = 0.67, *, seed: int | None = None
) -> A.Compose:
    """Random ``patch_size`` squares of a preprocessed ``S x S x 3`` slice, biased toward tumour.

    Patch training: the network is fully convolutional, so it learns from crops and still
    segments whole slices; a crop costs ``(patch / S)^2`` of a slice's compute. With probability
    ``foreground`` the crop contains a random tumour pixel when the slice has one (nnU-Net's
    foreground oversampling); otherwise it is placed uniformly. It runs AFTER the preprocessing,
    so the intensity z-score still comes from the whole slice, exactly as at inference.
    """
    if patch_size < 32 or patch_size % 32:
        raise ValueError(f"patch_size must be a multiple of 32 (>= 32), got {patch_size}")
    if not 0.0 <= foreground <= 1.0:
        raise ValueError(f"foreground must lie in [0, 1], got {foreground}")
    crop = A.OneOf(
        [
            A.CropNonEmptyMaskIfExists(patch_size, patch_size, p=foreground),
            A.RandomCrop(patch_size, patch_size, p=1.0 - foreground),
        ],
        p=1.0,
    )
    return A.Compose([crop], seed=seed)
