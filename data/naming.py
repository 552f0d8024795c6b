"""File naming shared by every entry point: image/mask pairing and prediction names.

The kaggle_3m convention, used for uploads and folders alike: an image ``X.tif`` has its expert
mask in ``X_mask.tif`` (any supported extension); a prediction for ``X`` is written as
``X_pred.png`` / ``X_pred.nii.gz``, so it can never be mistaken for (or written over) an input
or its ground truth.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import PurePath
from typing import TypeVar

MASK_SUFFIX = "_mask"
PREDICTION_SUFFIX = "_pred"
_DOUBLE_EXTENSIONS = (".nii.gz",)

T = TypeVar("T")


def stem(name: str) -> str:
    """The file name without folder and extension: ``a/X.tif`` -> ``X``; ``X.nii.gz`` -> ``X``."""
    base = PurePath(name.replace("\\", "/")).name
    lowered = base.lower()
    for ext in _DOUBLE_EXTENSIONS:
        if lowered.endswith(ext):
            return base[: -len(ext)]
    return base.rsplit(".", 1)[0] if "." in base.lstrip(".") else base


def is_mask_name(name: str) -> bool:
    """True for ``X_mask.<ext>``: an expert mask, never an image to segment."""
    return stem(name).lower().endswith(MASK_SUFFIX)


def is_prediction_name(name: str) -> bool:
    """True for ``X_pred.<ext>``: an output of this tool."""
    return stem(name).lower().endswith(PREDICTION_SUFFIX)


def case_key(name: str) -> str:
    """What an image and its mask share: the stem without ``_mask``, lower case."""
    key = stem(name).lower()
    return key[: -len(MASK_SUFFIX)] if key.endswith(MASK_SUFFIX) else key


def prediction_name(name: str, extension: str) -> str:
    """``X.tif`` -> ``X_pred.png`` (``extension`` with its dot, e.g. ``.png`` or ``.nii.gz``)."""
    return f"{stem(name)}{PREDICTION_SUFFIX}{extension}"


def pair_by_name(
    items: Sequence[T], name: Callable[[T], str] = str
) -> tuple[list[tuple[T, T | None]], list[T], list[T]]:
    """Split ``items`` into images paired with their masks (``X`` with ``X_mask``).

    Returns ``(pairs, unpaired_masks, duplicates)``: each image (in input order) with its mask or
    None; masks whose image is not among the items; items whose case was already taken (a
    second image or a second mask for the same case).
    """
    masks: dict[str, T] = {}
    duplicates: list[T] = []
    for item in items:
        if is_mask_name(name(item)):
            key = case_key(name(item))
            if key in masks:
                duplicates.append(item)
            else:
                masks[key] = item
    pairs: list[tuple[T, T | None]] = []
    seen: set[str] = set()
    for item in items:
        if is_mask_name(name(item)):
            continue
        key = case_key(name(item))
        if key in seen:
            duplicates.append(item)
            continue
        seen.add(key)
        pairs.append((item, masks.pop(key, None)))
    return pairs, list(masks.values()), duplicates
