"""inference/outputs.py: the mask files the API returns and the viewer offers for download."""

from __future__ import annotations

import gzip
import io

import nibabel as nib
import numpy as np
from PIL import Image

from inference.outputs import mask_to_nifti, mask_to_png, nifti_to_gz_bytes


def test_mask_png_is_0_255_of_the_slices_size_and_always_the_same_bytes() -> None:
    mask = np.zeros((20, 30), np.uint8)
    mask[5:10, 3:8] = 1
    png = mask_to_png(mask)
    decoded = np.asarray(Image.open(io.BytesIO(png)))
    assert decoded.shape == (20, 30) and decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, mask * 255)
    assert mask_to_png(mask.astype(bool)) == png


def test_mask_nifti_keeps_the_grid_and_the_affine() -> None:
    masks = np.zeros((16, 12, 5), np.uint8)
    masks[4:8, 2:6, 3] = 1
    affine = np.array([[0.9, 0, 0, -10], [0, 0.9, 0, 5], [0, 0, 3.0, 2], [0, 0, 0, 1]])
    blob = nifti_to_gz_bytes(mask_to_nifti(masks, affine))
    image = nib.Nifti1Image.from_bytes(gzip.decompress(blob))
    np.testing.assert_array_equal(np.asarray(image.dataobj), masks)
    assert image.get_data_dtype() == np.uint8
    np.testing.assert_allclose(image.affine, affine)
    np.testing.assert_allclose(image.header.get_zooms(), (0.9, 0.9, 3.0))
    assert nifti_to_gz_bytes(mask_to_nifti(masks, affine)) == blob  # gzip mtime 0
