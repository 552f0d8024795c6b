"""Overlays for the viewer as plain numpy RGB images (uint8 ``H x W x 3``); no Streamlit here.

Colours are from the Okabe-Ito palette, chosen to stay distinct under the common forms of
colour blindness: prediction orange and ground truth sky blue; in the agreement view,
true positives yellow, false positives vermillion and false negatives sky blue (ground truth
the model missed keeps the ground-truth colour).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from skimage.segmentation import find_boundaries

RGB = tuple[int, int, int]

PREDICTION: RGB = (230, 159, 0)  # orange
GROUND_TRUTH: RGB = (86, 180, 233)  # sky blue
TRUE_POSITIVE: RGB = (240, 228, 66)  # yellow
FALSE_POSITIVE: RGB = (213, 94, 0)  # vermillion
FALSE_NEGATIVE: RGB = (86, 180, 233)  # sky blue

Mode = Literal["contour", "fill"]
UNCERTAIN: RGB = (204, 121, 167)  # reddish purple
Channel = Literal["flair", "pre", "post", "composite"]
FLAIR_CHANNEL = 1
"""kaggle_3m slices are (pre-contrast, FLAIR, post-contrast)."""
SEQUENCE_CHANNELS = {"pre": 0, "flair": 1, "post": 2}


def hex_colour(colour: RGB) -> str:
    """``(230, 159, 0)`` -> ``"#E69F00"`` (for legends)."""
    return "#{:02X}{:02X}{:02X}".format(*colour)


def _scale_to_uint8(channels: np.ndarray) -> np.ndarray:
    """Map intensities to 0..255 for display: uint8 as is, anything else by its 1st-99th
    percentile window over non-zero pixels (so a few bright voxels do not darken the slice)."""
    if channels.dtype == np.uint8:
        return channels
    values = channels.astype(np.float64)
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    foreground = values[values != 0]
    if foreground.size == 0:
        return np.zeros(channels.shape, dtype=np.uint8)
    low, high = np.percentile(foreground, [1.0, 99.0])
    if high <= low:
        low, high = float(foreground.min()), float(foreground.max())
    if high <= low:
        return np.where(values != 0, 255, 0).astype(np.uint8)
    scaled = (values - low) / (high - low) * 255.0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def display_image(image: np.ndarray, channel: Channel = "flair") -> np.ndarray:
    """A slice as a uint8 RGB image for display.

    ``image`` is ``H x W`` (grey) or ``H x W x C``. ``"flair"``, ``"pre"`` and ``"post"`` show that
    sequence (channel 1, 0 or 2) of a 3-channel slice in grey (a 1-channel or grey slice is shown
    as is); ``"composite"`` shows the first three channels as RGB. Display windowing only: the
    model never sees this.
    """
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2:
        grey = _scale_to_uint8(arr)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] < 3:
        raise ValueError(f"expected an H x W or H x W x C image, got shape {arr.shape}")
    if channel in SEQUENCE_CHANNELS:
        grey = _scale_to_uint8(arr[:, :, SEQUENCE_CHANNELS[channel]])
        return np.repeat(grey[:, :, None], 3, axis=2)
    return _scale_to_uint8(arr[:, :, :3])


def _check_mask(mask: np.ndarray, shape: tuple[int, int], what: str) -> np.ndarray:
    binary = np.asarray(mask) > 0
    if binary.shape != shape:
        raise ValueError(
            f"the {what} is {binary.shape[0]}x{binary.shape[1]} but the image is "
            f"{shape[0]}x{shape[1]}"
        )
    return binary


def _check_base(base: np.ndarray) -> np.ndarray:
    arr = np.asarray(base)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected a uint8 H x W x 3 base image, got {arr.shape} {arr.dtype}")
    return arr


def _check_opacity(opacity: float) -> float:
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must lie in [0, 1], got {opacity}")
    return float(opacity)


def outline(mask: np.ndarray) -> np.ndarray:
    """The boundary pixels of a binary mask that lie inside it (bool ``H x W``)."""
    binary = np.asarray(mask) > 0
    if not binary.any():
        return binary
    return find_boundaries(binary, mode="inner")


def paint(base: np.ndarray, where: np.ndarray, colour: RGB, opacity: float) -> np.ndarray:
    """``base`` with ``colour`` blended at ``opacity`` into the pixels where ``where`` is true."""
    rgb = _check_base(base)
    region = _check_mask(where, rgb.shape[:2], "region")
    alpha = _check_opacity(opacity)
    out = rgb.copy()
    if region.any():
        mixed = (1.0 - alpha) * rgb[region].astype(np.float64) + alpha * np.array(colour, float)
        out[region] = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
    return out


def mask_overlay(
    base: np.ndarray,
    mask: np.ndarray,
    colour: RGB,
    *,
    mode: Mode = "contour",
    opacity: float = 0.5,
) -> np.ndarray:
    """One mask over ``base``: its filled area (``"fill"``) or its outline (``"contour"``)."""
    rgb = _check_base(base)
    binary = _check_mask(mask, rgb.shape[:2], "mask")
    region = outline(binary) if mode == "contour" else binary
    return paint(rgb, region, colour, opacity)


def prediction_and_truth(
    base: np.ndarray,
    prediction: np.ndarray,
    truth: np.ndarray | None,
    *,
    mode: Mode = "contour",
    opacity: float = 0.5,
) -> np.ndarray:
    """Prediction (orange) and, when given, ground truth (sky blue) over ``base``.

    The ground truth is drawn first and the prediction over it, so where both outlines meet the
    prediction's colour shows; the agreement view shows overlap explicitly.
    """
    out = _check_base(base)
    if truth is not None:
        out = mask_overlay(out, truth, GROUND_TRUTH, mode=mode, opacity=opacity)
    return mask_overlay(out, prediction, PREDICTION, mode=mode, opacity=opacity)


def agreement_labels(prediction: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per pixel: 0 true negative, 1 true positive, 2 false positive, 3 false negative (uint8)."""
    pred = np.asarray(prediction) > 0
    gt = _check_mask(truth, pred.shape, "ground-truth mask")
    labels = np.zeros(pred.shape, dtype=np.uint8)
    labels[pred & gt] = 1
    labels[pred & ~gt] = 2
    labels[~pred & gt] = 3
    return labels


def agreement_overlay(
    base: np.ndarray,
    prediction: np.ndarray,
    truth: np.ndarray,
    *,
    mode: Mode = "fill",
    opacity: float = 0.5,
) -> np.ndarray:
    """True positives yellow, false positives vermillion, false negatives sky blue.

    In ``"contour"`` mode each of the three regions is outlined instead of filled.
    """
    rgb = _check_base(base)
    _check_mask(prediction, rgb.shape[:2], "prediction")
    labels = agreement_labels(prediction, truth)
    out = rgb
    for value, colour in ((1, TRUE_POSITIVE), (2, FALSE_POSITIVE), (3, FALSE_NEGATIVE)):
        region = labels == value
        if mode == "contour":
            region = outline(region)
        out = paint(out, region, colour, opacity)
    return out


def layers_rgba(
    shape: tuple[int, int],
    layers: list[tuple[np.ndarray, RGB, Mode]],
    opacity: float,
) -> np.ndarray:
    """Masks painted in order on a transparent ``H x W x 4`` uint8 image (later layers on top).

    Drawn over a base image by the browser, it gives what :func:`paint` gives in numpy: each
    region's colour at ``opacity``. Kept apart from the image so window/level changes the image
    only.
    """
    alpha = _check_opacity(opacity)
    out = np.zeros((*shape, 4), dtype=np.uint8)
    for mask, colour, mode in layers:
        region = _check_mask(mask, shape, "mask")
        if mode == "contour":
            region = outline(region)
        out[region, :3] = colour
        out[region, 3] = int(round(alpha * 255))
    return out
