"""Where the model is unsure: the pixels on which a slice and its mirror image disagree.

The brain is roughly left-right symmetric and the model was trained with horizontal flips, so a
confident answer does not depend on which way round the slice is shown. The slice is segmented
as it is and mirrored left-right (through the ``Predictor``, nothing else); the mirrored answer
is flipped back, and every pixel where the two masks differ is marked uncertain. Both passes use
the Predictor's own settings (threshold, precision; with its flip-TTA on, the plain pass already
averages the two views and the map shows what that average hides).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from inference.predictor import Predictor


def mirrored(image: np.ndarray) -> np.ndarray:
    """The slice (``H x W [x C]``) mirrored left-right (its columns reversed)."""
    return np.ascontiguousarray(np.flip(np.asarray(image), axis=1))


def disagreement(plain: np.ndarray, mirrored_mask: np.ndarray) -> np.ndarray:
    """uint8 ``H x W``: 1 where ``plain`` and the flipped-back ``mirrored_mask`` differ."""
    back = np.flip(np.asarray(mirrored_mask) > 0, axis=1)
    plain_binary = np.asarray(plain) > 0
    if plain_binary.shape != back.shape:
        raise ValueError(f"mask shapes differ: {plain_binary.shape} vs {back.shape}")
    return (plain_binary != back).astype(np.uint8)


def flip_disagreement(
    predictor: Predictor,
    images: Sequence[np.ndarray],
    plain_masks: Sequence[np.ndarray] | None = None,
    batch_size: int | None = None,
) -> list[np.ndarray]:
    """The uncertainty map of each slice (uint8 0/1, the slice's ``H x W``).

    ``plain_masks`` are the slices' masks from this predictor when already known (saves the
    plain pass); otherwise both passes run here, in batches of ``batch_size`` (default: the
    predictor's).
    """
    if plain_masks is not None and len(plain_masks) != len(images):
        raise ValueError(f"{len(plain_masks)} masks for {len(images)} images")
    step = batch_size or predictor.batch_size
    maps: list[np.ndarray] = []
    for start in range(0, len(images), step):
        chunk = list(images[start : start + step])
        if plain_masks is None:
            plain = [p.mask for p in predictor.predict_batch(chunk)]
        else:
            plain = list(plain_masks[start : start + step])
        flipped = predictor.predict_batch([mirrored(image) for image in chunk])
        maps += [disagreement(p, f.mask) for p, f in zip(plain, flipped, strict=True)]
    return maps
