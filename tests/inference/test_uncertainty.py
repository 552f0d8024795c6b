"""inference.uncertainty: the mirrored pass goes through the Predictor and is flipped back."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from inference import uncertainty
from inference.predictor import Predictor


@dataclass
class _Answer:
    mask: np.ndarray


class _Stub:
    """A 'model' that marks bright pixels, only in the left ``share`` of the columns."""

    def __init__(self, share: float) -> None:
        self.share = share
        self.batch_size = 2
        self.calls: list[int] = []

    def predict_batch(self, images: Sequence[np.ndarray]) -> list[_Answer]:
        self.calls.append(len(images))
        out = []
        for image in images:
            bright = np.asarray(image)[:, :, 1] > 100
            cut = int(bright.shape[1] * self.share)
            bright[:, cut:] = False
            out.append(_Answer(bright.astype(np.uint8)))
        return out


def _image(width: int = 8) -> np.ndarray:
    image = np.zeros((4, width, 3), np.uint8)
    image[1:3, 1:3] = 200  # a bright patch on the left
    image[1:3, -3:-1] = 200  # and its mirror image on the right
    return image


def test_a_symmetric_model_is_certain() -> None:
    stub = _Stub(share=1.0)
    maps = uncertainty.flip_disagreement(stub, [_image(), _image()])  # type: ignore[arg-type]
    assert [m.sum() for m in maps] == [0, 0]
    assert stub.calls == [2, 2]  # plain and mirrored pass, one batch each


def test_a_one_sided_model_is_uncertain_where_the_mirror_disagrees() -> None:
    stub = _Stub(share=0.5)  # sees the left patch only: mirrored, it sees the right one
    (found,) = uncertainty.flip_disagreement(stub, [_image()])  # type: ignore[arg-type]
    expected = np.zeros((4, 8), np.uint8)
    expected[1:3, 1:3] = 1
    expected[1:3, -3:-1] = 1
    np.testing.assert_array_equal(found, expected)


def test_known_plain_masks_skip_the_plain_pass() -> None:
    stub = _Stub(share=1.0)
    plain = [np.zeros((4, 8), np.uint8)] * 3
    maps = uncertainty.flip_disagreement(stub, [_image()] * 3, plain)  # type: ignore[arg-type]
    assert stub.calls == [2, 1]  # mirrored passes only, in the predictor's batches
    assert all(int(m.sum()) == 8 for m in maps)  # both patches differ from the empty masks
    with pytest.raises(ValueError, match="2 masks for 3 images"):
        uncertainty.flip_disagreement(stub, [_image()] * 3, plain[:2])  # type: ignore[arg-type]


def test_disagreement_flips_back_before_comparing() -> None:
    mask = np.zeros((2, 4), np.uint8)
    mask[:, 0] = 1
    assert uncertainty.disagreement(mask, np.fliplr(mask)).sum() == 0
    assert uncertainty.disagreement(mask, mask).sum() == 4


def test_the_real_predictor_gives_a_binary_map_of_the_slice_size(tiny_checkpoint: Path) -> None:
    predictor = Predictor.from_checkpoint(tiny_checkpoint)
    image = np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8)
    (found,) = uncertainty.flip_disagreement(predictor, [image])
    plain = predictor.predict_slice(image).mask
    mirrored = predictor.predict_slice(np.fliplr(image)).mask
    assert found.shape == (40, 48) and found.dtype == np.uint8
    np.testing.assert_array_equal(found, (plain != np.fliplr(mirrored)).astype(np.uint8))
