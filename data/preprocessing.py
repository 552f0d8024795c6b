"""The one preprocessing definition, shared by training, evaluation, the API and the viewer.

Every slice is handled on its own (never with statistics of its volume), so a single uploaded
slice is fed to the model exactly as it was during training:

1. ``to_hwc3``: a 3-channel slice (pre-contrast, FLAIR, post-contrast) becomes float32
   ``H x W x 3`` (alpha dropped); 1- and 2-channel images are refused.
2. ``resize_image``: bilinear resize to ``image_size`` x ``image_size`` (skipped when equal).
3. ``normalize_intensity``: per channel z-score over that channel's non-zero (brain) pixels;
   background stays 0. This is invariant to the input's scale and offset, so 8-bit, 16-bit
   and float inputs of the same slice give the same tensor.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from skimage.transform import resize

NORMALIZATION = "zscore-nonzero-per-slice-per-channel"


class PreprocessingConfig(BaseModel):
    """What the model was trained on; stored in every checkpoint card."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    image_size: int = Field(256, ge=32, le=1024, multiple_of=32)
    normalization: str = NORMALIZATION
    eps: float = Field(1e-6, gt=0)
    channels: tuple[str, str, str] = ("pre-contrast", "FLAIR", "post-contrast")


SEQUENCES_NEEDED = (
    "the model needs three co-registered MRI sequences as the image's 3 channels: "
    "pre-contrast, FLAIR, post-contrast (in that order, as in the LGG kaggle_3m .tif files)"
)


class ChannelError(ValueError):
    """An image without the three sequences the model reads; the message names them."""


def check_channels(image: np.ndarray) -> None:
    """Raise ChannelError for a slice with one or two channels (``H x W``, ``H x W x 1|2``)."""
    shape = np.shape(image)
    if len(shape) == 2 or (len(shape) == 3 and shape[2] in (1, 2)):
        channels = 1 if len(shape) == 2 else shape[2]
        raise ChannelError(f"this image has {channels} channel{'s' * (channels > 1)}; "
                           f"{SEQUENCES_NEEDED}")


def to_hwc3(image: np.ndarray) -> np.ndarray:
    """Convert a 2-D slice to float32 ``H x W x 3`` (pre-contrast, FLAIR, post-contrast).

    Accepted: ``H x W x 3`` and ``H x W x 4`` (alpha dropped). A slice with one or two channels
    (grey, grey + alpha) lacks sequences the model needs and raises ChannelError: the model
    would still answer, but its answer would mean nothing. Non-finite values raise too.
    """
    arr = np.asarray(image)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"unsupported pixel type {arr.dtype}; expected integers or floats")
    check_channels(arr)
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, :3]
    elif not (arr.ndim == 3 and arr.shape[2] == 3):
        raise ValueError(
            f"expected a 2-D slice (H x W x 3 channels: pre-contrast, FLAIR, post-contrast); "
            f"got shape {arr.shape}"
        )
    out = arr.astype(np.float32)
    if not np.isfinite(out).all():
        raise ValueError("the image contains NaN or infinite values")
    return out


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of ``H x W x C`` float32 to ``size x size x C``."""
    if image.shape[0] == size and image.shape[1] == size:
        return image
    downsampling = image.shape[0] > size or image.shape[1] > size
    return resize(
        image,
        (size, size, image.shape[2]),
        order=1,
        preserve_range=True,
        anti_aliasing=downsampling,
    ).astype(np.float32)


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of a binary ``H x W`` mask to ``size x size`` (uint8 0/1)."""
    binary = (np.asarray(mask) > 0).astype(np.uint8)
    if binary.shape == (size, size):
        return binary
    return resize(binary, (size, size), order=0, preserve_range=True, anti_aliasing=False).astype(
        np.uint8
    )


def normalize_intensity(image: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Z-score each channel of ``H x W x C`` over its non-zero pixels; zeros stay zero.

    A channel with no non-zero pixel, or a constant one, becomes all zeros (never NaN).
    """
    planes = np.array(np.asarray(image).transpose(2, 0, 1), dtype=np.float32, order="C")
    return np.ascontiguousarray(_z_score_planes(planes, eps).transpose(1, 2, 0))


def _z_score_planes(planes: np.ndarray, eps: float) -> np.ndarray:
    """``normalize_intensity`` in place on a float32 ``C x H x W`` array (contiguous planes).

    Two passes without a gather of the non-zero pixels: the mean is the plane's sum (float64)
    over the ``n`` non-zero pixels, since zeros add nothing to it; the plane is then centred and
    its background zeroed (both needed anyway), so the variance is the centred plane's sum of
    squares over ``n``: one float32 dot product, with none of the cancellation of ``E[x^2] -
    mean^2``. 0.24 ms on a 256 x 256 slice against 1.2 ms gathering the pixels (2-core EPYC),
    which the API pays per request.
    """
    for plane in planes:
        flat = plane.reshape(-1)
        foreground = flat != 0
        count = np.count_nonzero(foreground)
        if count == 0:
            continue
        mean = float(flat.sum(dtype=np.float64)) / count
        flat -= np.float32(mean)
        flat *= foreground
        std = (float(np.dot(flat, flat)) / count) ** 0.5
        if std < eps:
            flat[...] = 0.0
            continue
        flat *= np.float32(1.0 / (std + eps))
    return planes


def preprocess_image(image: np.ndarray, cfg: PreprocessingConfig) -> np.ndarray:
    """Raw slice (any 2-D layout above) -> float32 ``3 x S x S`` model input."""
    hwc = resize_image(to_hwc3(image), cfg.image_size)
    planes = np.array(hwc.transpose(2, 0, 1), dtype=np.float32, order="C")  # a copy: in place next
    return _z_score_planes(planes, cfg.eps)


def preprocess_mask(mask: np.ndarray, cfg: PreprocessingConfig) -> np.ndarray:
    """Raw mask (any non-zero is tumour) -> float32 ``1 x S x S`` target in {0, 1}."""
    return resize_mask(mask, cfg.image_size)[None].astype(np.float32)


def restore_size(probabilities: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of an ``S x S`` probability map back to the input's ``height x width``."""
    if probabilities.shape == (height, width):
        return probabilities.astype(np.float32)
    return np.clip(
        resize(probabilities, (height, width), order=1, preserve_range=True, anti_aliasing=False),
        0.0,
        1.0,
    ).astype(np.float32)
