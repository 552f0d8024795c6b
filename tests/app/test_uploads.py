"""app/uploads.py: pairing by name, mask checks and decoding of (name, bytes) uploads."""

from __future__ import annotations

import io
import zipfile

import nibabel as nib
import numpy as np
import pytest
import tifffile
from PIL import Image

from app import backend, uploads
from data.masks import binary_mask


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def _tif(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array)
    return buffer.getvalue()


def _slice(size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def _jpeg(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _mask(size: int = 32) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    mask[8:16, 8:20] = 255
    return mask


def test_pairs_x_with_x_mask_whatever_the_extensions() -> None:
    images = [("case_2.tif", b"b"), ("case_1.png", b"a")]
    masks = [("case_1_mask.tif", b"m1"), ("CASE_2_MASK.png", b"m2")]
    pairs, problems = uploads.pair_by_name(images, masks)
    assert problems == []
    assert [(i[0], m[0] if m else None) for i, m in pairs] == [
        ("case_2.tif", "CASE_2_MASK.png"),
        ("case_1.png", "case_1_mask.tif"),
    ]


def test_a_single_slice_and_a_single_mask_pair_whatever_their_names() -> None:
    pairs, problems = uploads.pair_by_name([("scan.tif", b"i")], [("truth.png", b"m")])
    assert problems == []
    assert pairs[0][1] == ("truth.png", b"m")


def test_an_unmatched_mask_among_several_is_a_problem() -> None:
    images = [("a.tif", b"1"), ("b.tif", b"2")]
    pairs, problems = uploads.pair_by_name(images, [("a_mask.tif", b"m"), ("zz_mask.tif", b"z")])
    assert [m is not None for _, m in pairs] == [True, False]
    assert len(problems) == 1 and problems[0].name == "zz_mask.tif"
    assert "X_mask.tif" in problems[0].message


def test_display_name_strips_paths_control_characters_and_backticks() -> None:
    assert uploads.display_name("../../etc/passwd") == "passwd"
    assert uploads.display_name("C:\\temp\\a`b\n.tif") == "a_b_.tif"
    assert len(uploads.display_name("x" * 500 + ".tif")) == uploads.MAX_NAME_CHARS


def test_truth_mask_accepts_0_255_and_grey_rgb() -> None:
    mask = _mask()
    out = uploads.as_truth_mask(mask, (32, 32, 3))
    assert out.dtype == np.uint8 and set(np.unique(out)) == {0, 1} and out.sum() == 96
    rgb = np.repeat(mask[:, :, None], 3, axis=2)
    np.testing.assert_array_equal(uploads.as_truth_mask(rgb, (32, 32)), out)


@pytest.mark.parametrize(
    "mask, message",
    [
        (np.zeros((16, 16), np.uint8), "16x16 pixels but its slice is 32x32"),
        (np.arange(32 * 32, dtype=np.uint16).reshape(32, 32), "two values"),
        (_slice(), "has colours"),
    ],
)
def test_truth_mask_refusals_say_why(mask: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        uploads.as_truth_mask(mask, (32, 32, 3))


def test_read_slices_decodes_and_pairs_from_one_uploader() -> None:
    image = _slice()
    slices, problems = uploads.read_slices(
        [("case_7.tif", _tif(image)), ("case_7_mask.tif", _tif(_mask()))]
    )
    assert problems == []
    assert len(slices) == 1
    found = slices[0]
    assert found.name == "case_7.tif" and found.truth_name == "case_7_mask.tif"
    np.testing.assert_array_equal(found.image, image)
    assert found.truth is not None and found.truth.sum() == 96


def test_read_slices_reports_bad_files_and_keeps_the_good_ones() -> None:
    good = _png(_slice(seed=1))
    truncated = _png(_slice(seed=2))[:200]
    gif = b"GIF89a" + bytes(64)
    slices, problems = uploads.read_slices(
        [("good.png", good), ("random.png", bytes(range(256)) * 4), ("cut.png", truncated),
         ("anim.gif", gif)]
    )
    assert [s.name for s in slices] == ["good.png"]
    assert sorted(p.name for p in problems) == ["anim.gif", "cut.png", "random.png"]
    assert all(p.message for p in problems)


def test_a_mask_of_another_size_keeps_the_slice_without_ground_truth() -> None:
    slices, problems = uploads.read_slices(
        [("s.png", _png(_slice()))], [("s_mask.png", _png(_mask(16)))]
    )
    assert len(slices) == 1 and slices[0].truth is None
    assert len(problems) == 1 and problems[0].name == "s_mask.png"
    assert "16x16 pixels but its slice is 32x32" in problems[0].message


def test_only_masks_uploaded_is_a_problem() -> None:
    slices, problems = uploads.read_slices([("a_mask.png", _png(_mask()))])
    assert slices == [] and "only masks" in problems[0].message


# ------------------------------------------------------- one mask rule, one naming helper


def test_naming_is_data_namings_not_a_copy() -> None:
    for duplicate in ("stem", "is_mask_name", "_case", "MASK_SUFFIX"):
        assert not hasattr(uploads, duplicate), duplicate


def test_truth_mask_is_the_data_masks_rule() -> None:
    """Two values: the higher is tumour, whatever they are (data.masks.binary_mask)."""
    mask = np.where(_mask() > 0, 7, 3).astype(np.uint8)
    out = uploads.as_truth_mask(mask, (32, 32, 3))
    np.testing.assert_array_equal(out, binary_mask(mask))
    assert out.sum() == 96
    with pytest.raises(ValueError, match="NaN"):
        uploads.as_truth_mask(np.full((32, 32), np.nan, np.float32), (32, 32, 3))


def test_truth_volume_is_the_data_masks_rule_over_all_voxels() -> None:
    truth = np.zeros((16, 16, 3), np.uint8)
    truth[4:8, 4:8, 1] = 255  # slices 0 and 2 hold background only
    out = uploads.as_truth_volume(truth, (16, 16, 3, 3))
    assert out.dtype == np.uint8 and out.sum() == 16 and out[:, :, 1].sum() == 16
    with pytest.raises(ValueError, match="two values"):
        uploads.as_truth_volume(np.arange(16 * 16 * 3).reshape(16, 16, 3), (16, 16, 3))


def test_a_second_mask_for_the_same_slice_is_a_problem() -> None:
    pairs, problems = uploads.pair_by_name(
        [("a.tif", b"1"), ("b.tif", b"2")], [("a_mask.tif", b"m"), ("A_MASK.png", b"n")])
    assert [m[0] if m else None for _, m in pairs] == ["a_mask.tif", None]
    assert [(p.name, p.message) for p in problems] == [
        ("A_MASK.png", "a second mask for the same slice as `a_mask.tif`; ignored")]


# ------------------------------------------------------- three sequences; JPEG flagged


@pytest.mark.parametrize(
    "name, data, channels",
    [
        ("grey.png", _png(_slice()[:, :, 1]), "1 channel"),
        ("grey.tif", _tif(_slice()[:, :, 1]), "1 channel"),
        ("grey_alpha.png", _png(np.dstack([_slice()[:, :, 1], _mask()])), "1 channel"),
    ],
)
def test_a_slice_without_the_three_sequences_is_refused_naming_them(
    name: str, data: bytes, channels: str
) -> None:
    slices, problems = uploads.read_slices([(name, data), ("ok.png", _png(_slice()))])
    assert [s.name for s in slices] == ["ok.png"]
    assert len(problems) == 1 and problems[0].name == name
    assert channels in problems[0].message
    assert "pre-contrast, FLAIR, post-contrast" in problems[0].message


def test_a_grey_volume_is_refused_naming_the_sequences() -> None:
    volume = np.stack([_slice(seed=k)[:, :, 1] for k in range(3)], axis=2)
    data = nib.Nifti1Image(volume, np.eye(4)).to_bytes()
    with pytest.raises(backend.BadUpload, match="pre-contrast, FLAIR, post-contrast"):
        uploads.read_volume(("grey.nii", data))


def test_jpeg_slices_and_zips_are_flagged_lossy() -> None:
    slices, problems = uploads.read_slices(
        [("a.jpg", _jpeg(_slice())), ("b.png", _png(_slice(seed=1))),
         ("c.tif", _tif(_slice(seed=2)))])
    assert problems == []
    assert [(s.name, s.lossy) for s in slices] == [
        ("a.jpg", True), ("b.png", False), ("c.tif", False)]
    for entry, lossy in ((_jpeg(_slice()), True), (_png(_slice()), False)):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("v_1.img", entry)
            archive.writestr("v_2.img", _png(_slice(seed=3)))
        assert uploads.read_volume(("v.zip", buffer.getvalue())).lossy is lossy
