"""File naming shared by every entry point: image/mask pairing and prediction names.

The kaggle_3m convention, used for uploads and folders alike: an image ``X.tif`` has its expert
mask in ``X_mask.tif`` (any supported extension); a prediction for ``X`` is written as
``X_pred.png`` / ``X_pred.nii.gz``, so it can never be mistaken for (or written over) an input
or its ground truth.

Three sequence files per case follow nnU-Net's naming: ``<case>_0000.nii.gz`` (pre-contrast),
``<case>_0001.nii.gz`` (FLAIR), ``<case>_0002.nii.gz`` (post-contrast), ``.nii`` or ``.nii.gz``
(the model's channel order, ``SEQUENCE_CHANNELS``). Their ground truth is ``<case>.nii.gz`` in
a labels folder (nnU-Net's ``labelsTs``) or ``<case>_mask.nii.gz`` beside them, and the
prediction ``<case>_pred.nii.gz``, which matches neither an image nor a label.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import Generic, TypeVar

MASK_SUFFIX = "_mask"
PREDICTION_SUFFIX = "_pred"
_DOUBLE_EXTENSIONS = (".nii.gz",)
NIFTI_EXTENSIONS = (".nii.gz", ".nii")
SEQUENCE_CHANNELS = ("pre-contrast", "FLAIR", "post-contrast")
"""What ``<case>_0000``, ``_0001`` and ``_0002`` hold: the model's channel order."""
_SEQUENCE_FILE = re.compile(r"^(?P<case>.+)_000(?P<channel>\d)$")

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


def case_prediction_name(case: str, extension: str) -> str:
    """The prediction of a case named ``case`` (no extension in it): ``<case>_pred<extension>``."""
    return f"{case}{PREDICTION_SUFFIX}{extension}"


def is_nifti_name(name: str) -> bool:
    return PurePath(name.replace("\\", "/")).name.lower().endswith(NIFTI_EXTENSIONS)


def sequence_file(name: str) -> tuple[str, int] | None:
    """``<case>_000N.nii[.gz]`` -> ``(case, N)``; None for any other name.

    ``N`` 0, 1, 2 are the sequences the model reads (``SEQUENCE_CHANNELS``); 3-9 are other
    channels of an nnU-Net dataset, which :func:`group_sequences` reports.
    """
    if not is_nifti_name(name):
        return None
    match = _SEQUENCE_FILE.match(stem(name))
    return (match["case"], int(match["channel"])) if match else None


def sequence_truth_names(case: str) -> list[str]:
    """Names that hold the ground truth of a sequence case: in a labels folder, or beside it."""
    return [f"{case}{ext}" for ext in NIFTI_EXTENSIONS] + [
        f"{case}{MASK_SUFFIX}{ext}" for ext in NIFTI_EXTENSIONS
    ]


@dataclass(frozen=True)
class SequenceCase(Generic[T]):
    """One case's three sequence files, in the model's channel order."""

    case: str
    pre: T
    flair: T
    post: T

    @property
    def files(self) -> tuple[T, T, T]:
        return (self.pre, self.flair, self.post)


def group_sequences(
    items: Sequence[T], name: Callable[[T], str] = str
) -> tuple[list[SequenceCase[T]], list[str]]:
    """Group ``<case>_000N`` files by case: ``(complete cases, problems)``.

    Items whose name is not a sequence file are ignored. A problem (one message per case) is a
    missing sequence, the same sequence twice, or a channel the model does not read
    (``_0003`` and up); such a case is left out of the complete ones.
    """
    by_case: dict[str, dict[int, list[T]]] = {}
    for item in items:
        found = sequence_file(name(item))
        if found is not None:
            case, channel = found
            by_case.setdefault(case, {}).setdefault(channel, []).append(item)
    cases: list[SequenceCase[T]] = []
    problems: list[str] = []
    for case, channels in by_case.items():
        wanted = ", ".join(f"{case}_000{i} ({s})" for i, s in enumerate(SEQUENCE_CHANNELS))
        missing = [f"{case}_000{i}" for i in range(3) if i not in channels]
        twice = [name(files[1]) for files in channels.values() if len(files) > 1]
        extra = sorted(f"{case}_000{i}" for i in channels if i > 2)
        if missing:
            alone = (" (a single NIfTI holding all three sequences on a 4th axis must not be "
                     "named _000N)") if len(channels) == 1 else ""
            problems.append(f"case {case}: {', '.join(missing)} missing; each case needs "
                            f"{wanted}{alone}")
        elif twice:
            problems.append(f"case {case}: {twice[0]} is a second file for the same sequence")
        elif extra:
            problems.append(f"case {case}: {', '.join(extra)} is not a sequence the model reads "
                            f"(it reads {wanted}); move it away")
        else:
            cases.append(SequenceCase(case, channels[0][0], channels[1][0], channels[2][0]))
    return cases, problems
