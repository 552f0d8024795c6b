"""``/v1/segment/sequences`` and ``/v1/evaluate/sequences``: three NIfTI files per case, one
grid, physical units; and mm² / 1-based slice numbers on ``/v1/segment/volume``."""

from __future__ import annotations

import base64
import gzip
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from fastapi.testclient import TestClient

from inference.api import create_app
from inference.metrics import dice, hd95
from tests.inference.api_helpers import settings
from tests.inference.samples import brain_like, nifti_bytes

AFFINE = np.array([[0.5, 0, 0, -60], [0, 0.5, 0, -70], [0, 0, 2.0, 10], [0, 0, 0, 1]])
SPACING = (0.5, 0.5, 2.0)


@pytest.fixture(scope="module")
def client(spread_checkpoint: Path) -> Iterator[TestClient]:
    with TestClient(create_app(settings(spread_checkpoint))) as test_client:
        yield test_client


def volume(seed: int = 0, depth: int = 4) -> np.ndarray:
    return np.stack([brain_like(36, 32, seed + k) for k in range(depth)], axis=2)


def sequence_files(vol: np.ndarray, affine: np.ndarray = AFFINE) -> dict[str, tuple[str, bytes]]:
    return {
        name: (f"c_000{c}.nii.gz",
               nifti_bytes(np.ascontiguousarray(vol[..., c]), affine, compress=True))
        for c, name in enumerate(("pre", "flair", "post"))
    }  # fmt: skip


def nifti(data: bytes) -> nib.Nifti1Image:
    return nib.Nifti1Image.from_bytes(gzip.decompress(data))


def test_three_files_give_the_mask_of_the_same_case_as_one_4d_nifti(client: TestClient) -> None:
    vol = volume()
    response = client.post("/v1/segment/sequences", files=sequence_files(vol))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/gzip"
    image = nifti(response.content)
    assert np.allclose(image.affine, AFFINE) and image.shape == (36, 32, 4)
    one_file = client.post(
        "/v1/segment/volume", files={"file": ("v", nifti_bytes(vol, AFFINE, compress=True))}
    )
    assert np.array_equal(np.asarray(image.dataobj), np.asarray(nifti(one_file.content).dataobj))
    assert int(response.headers["X-Tumour-Voxels"]) == int(np.asarray(image.dataobj).sum())


def test_json_answers_in_physical_units_with_slices_from_1(client: TestClient) -> None:
    response = client.post("/v1/segment/sequences?format=json", files=sequence_files(volume(1)))
    assert response.status_code == 200
    body = response.json()
    mask = np.asarray(nifti(base64.b64decode(body["mask_nifti_gz"])).dataobj)
    assert body["tumour_voxels"] == int(mask.sum()) > 0
    assert body["voxel_spacing_mm"] == list(SPACING) and body["voxel_volume_mm3"] == 0.5
    assert body["tumour_volume_ml"] == pytest.approx(int(mask.sum()) * 0.5 / 1000)
    assert [s["slice"] for s in body["slices"]] == [1, 2, 3, 4]
    for k, s in enumerate(body["slices"]):
        assert s["index"] == k and s["tumour_pixels"] == int(mask[:, :, k].sum())
        assert s["tumour_mm2"] == pytest.approx(s["tumour_pixels"] * 0.25)
    # the one-file volume route gives mm² and 1-based numbers the same way
    files = {"file": ("v", nifti_bytes(volume(1), AFFINE))}
    one_file = client.post("/v1/segment/volume?format=json", files=files).json()
    assert one_file["voxel_spacing_mm"] == list(SPACING)
    assert one_file["slices"] == body["slices"]


def test_sequences_off_one_grid_are_422_naming_fields_and_difference(client: TestClient) -> None:
    vol = volume(2)
    files = sequence_files(vol)
    turned = AFFINE.copy()
    turned[:3, :2] = turned[:3, [1, 0]]  # rows and columns swapped: another orientation
    files["post"] = ("p", nifti_bytes(np.ascontiguousarray(vol[..., 2]), turned))
    response = client.post("/v1/segment/sequences", files=files)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "'post' (the post-contrast) and 'flair' (the FLAIR) are not on one voxel grid" in detail
    assert "orientation" in detail
    files = sequence_files(vol)
    files["pre"] = ("p", nifti_bytes(vol, AFFINE))  # all three sequences in one file
    response = client.post("/v1/segment/sequences", files=files)
    assert response.status_code == 422
    assert "'pre' (the pre-contrast)" in response.json()["detail"]
    assert "one 3-D volume" in response.json()["detail"]
    files = sequence_files(vol)
    del files["post"]
    response = client.post("/v1/segment/sequences", files=files)
    assert response.status_code == 422 and "'post'" in response.json()["detail"]


def test_evaluate_sequences_gives_dice_and_hd95_in_mm(client: TestClient) -> None:
    vol = volume(3)
    truth = np.zeros(vol.shape[:3], np.uint8)
    truth[10:24, 8:20, 1:3] = 1
    files = {**sequence_files(vol), "truth": ("t", nifti_bytes(truth, AFFINE, compress=True))}
    response = client.post("/v1/evaluate/sequences", files=files)
    assert response.status_code == 200, response.text
    body = response.json()
    mask = np.asarray(nifti(base64.b64decode(body["mask_nifti_gz"])).dataobj)
    assert body["dice"] == pytest.approx(dice(mask, truth))
    assert body["hd95_mm"] == pytest.approx(hd95(mask, truth, SPACING))
    assert "hd95_px" not in body
    assert body["true_voxels"] == int(truth.sum())
    assert body["true_volume_ml"] == pytest.approx(int(truth.sum()) * 0.5 / 1000)

    absurd = np.diag([1e30, 1e30, 1e30, 1.0])  # no usable spacing: voxels and hd95_px only
    files = {**sequence_files(vol, absurd), "truth": ("t", nifti_bytes(truth, absurd))}
    body = client.post("/v1/evaluate/sequences", files=files).json()
    assert body["hd95_px"] == pytest.approx(hd95(mask, truth))
    assert "hd95_mm" not in body and "tumour_volume_ml" not in body
    assert "outside" in body["volume_unavailable"]

    shifted = AFFINE.copy()
    shifted[:3, 3] += 1.0
    files = {**sequence_files(vol), "truth": ("t", nifti_bytes(truth, shifted))}
    response = client.post("/v1/evaluate/sequences", files=files)
    assert response.status_code == 422
    assert "the ground truth 'truth' is not on the grid of 'flair'" in response.json()["detail"]
