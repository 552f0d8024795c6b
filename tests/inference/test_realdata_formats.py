"""A real kaggle_3m patient given as the .tif folder, as three NIfTI sequence files and as a
DICOM study: ``inference.predict`` must give the same masks and Dice every way (channel order,
slice order and values survive the conversions), and the API the same mask for the DICOM study
as ``inference.predict``. Skips without ../shared/data/lgg."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from data.kaggle3m import PatientRecord, read_image, read_mask, scan_dataset
from inference.api import create_app
from inference.predict import main
from tests.dicom_study import Geometry, write_study
from tests.inference.api_helpers import settings as serve_settings

pytestmark = pytest.mark.realdata

AFFINE = np.diag([1.0, 1.0, 1.0, 1.0])  # kaggle_3m carries no spacing: 1 mm taken here


@pytest.fixture(scope="module")
def patient(lgg_dir: Path) -> PatientRecord:
    """The patient with the fewest slices that has tumour (a quick, real case)."""
    candidates = sorted(scan_dataset(lgg_dir), key=lambda p: len(p.slices))
    for candidate in candidates:
        if any(read_mask(s.mask_path).any() for s in candidate.slices):
            return candidate
    raise AssertionError("no patient with tumour")


def summary(out: Path) -> dict[str, dict[str, str]]:
    with (out / "summary.csv").open() as fh:
        return {row["case"]: row for row in csv.DictReader(fh)}


def test_one_patient_three_ways_gives_one_answer(
    patient: PatientRecord, tmp_path: Path, spread_checkpoint: Path
) -> None:
    images = np.stack([read_image(s.image_path) for s in patient.slices], axis=2)  # H W Z 3
    truth = np.stack([read_mask(s.mask_path) for s in patient.slices], axis=2)
    folder = patient.slices[0].image_path.parent
    seq, labels = tmp_path / "imagesTs", tmp_path / "labelsTs"
    seq.mkdir()
    labels.mkdir()
    for c in range(3):
        image = nib.Nifti1Image(np.ascontiguousarray(images[..., c]), AFFINE)
        (seq / f"lgg_000{c}.nii.gz").write_bytes(gzip.compress(image.to_bytes()))
    (labels / "lgg.nii.gz").write_bytes(gzip.compress(nib.Nifti1Image(truth, AFFINE).to_bytes()))
    descriptions = ["T1 pre", "FLAIR", "T1 post gd"]
    geometry = Geometry(pixel_spacing=(1.0, 1.0), slice_step=1.0)
    study = write_study(tmp_path / "dicom" / "lgg_dicom",
                        [(d, images[..., c].astype(np.uint16)) for c, d in enumerate(descriptions)],
                        geometry)  # fmt: skip
    (tmp_path / "truth.nii.gz").write_bytes(gzip.compress(nib.Nifti1Image(
        truth, np.diag([-1.0, -1.0, 1.0, 1.0]) @ geometry.affine_lps()).to_bytes()))

    out = tmp_path / "out"
    args = [str(folder), str(seq), "--labels", str(labels), "--out", str(out),
            "--checkpoint", str(spread_checkpoint), "--quiet"]  # fmt: skip
    assert main(args) == 0
    assert main([str(study.folder), "--truth", str(tmp_path / "truth.nii.gz"), "--out",
                 str(out / "dicom"), "--checkpoint", str(spread_checkpoint), "--quiet"]) == 0

    from_tif = np.stack([np.asarray(Image.open(out / patient.patient_id / f"{s.image_path.stem}"
                                               "_pred.png")) > 0 for s in patient.slices], axis=2)
    from_nifti = np.asarray(nib.load(out / "lgg_pred.nii.gz").dataobj)
    from_dicom = np.asarray(nib.load(out / "dicom" / "lgg_dicom_pred.nii.gz").dataobj)
    assert from_tif.any()
    assert np.array_equal(from_nifti, from_tif) and np.array_equal(from_dicom, from_tif)
    rows = {**summary(out), **summary(out / "dicom")}
    tif, nii, dcm = rows[patient.patient_id], rows["lgg"], rows["lgg_dicom"]
    assert tif["dice"] == nii["dice"] == dcm["dice"] != ""
    assert tif["tumour_voxels"] == nii["tumour_voxels"] == dcm["tumour_voxels"]
    # the same HD95 figure, in pixels for the .tif folder and in mm at 1 mm for the others
    assert float(tif["hd95_px"]) == pytest.approx(float(nii["hd95_mm"]), abs=0.01)
    assert float(dcm["hd95_mm"]) == pytest.approx(float(nii["hd95_mm"]), abs=0.01)
    assert nii["tumour_volume_ml"] == f"{int(nii['tumour_voxels']) / 1000:.3f}"


def test_one_patient_as_a_dicom_study_through_the_api_gives_the_cli_mask(
    patient: PatientRecord, tmp_path: Path, spread_checkpoint: Path
) -> None:
    images = np.stack([read_image(s.image_path) for s in patient.slices], axis=2)  # H W Z 3
    descriptions = ["T1 pre", "FLAIR", "T1 post gd"]
    geometry = Geometry(pixel_spacing=(1.0, 1.0), slice_step=1.0)
    study = write_study(tmp_path / "lgg_dicom",
                        [(d, images[..., c].astype(np.uint16)) for c, d in enumerate(descriptions)],
                        geometry)  # fmt: skip
    out = tmp_path / "out"
    assert main([str(study.folder), "--out", str(out), "--checkpoint", str(spread_checkpoint),
                 "--quiet"]) == 0  # fmt: skip
    from_cli = nib.load(out / "lgg_dicom_pred.nii.gz")

    files = [("files", (p.name, p.read_bytes(), "application/dicom"))
             for p in sorted(study.folder.iterdir())]  # fmt: skip
    with TestClient(create_app(serve_settings(spread_checkpoint))) as client:
        response = client.post("/v1/segment/dicom", params={"format": "nifti"}, files=files)
    assert response.status_code == 200, response.text
    from_api = nib.Nifti1Image.from_bytes(gzip.decompress(response.content))
    mask = np.asarray(from_cli.dataobj)
    assert mask.any() and np.array_equal(np.asarray(from_api.dataobj), mask)
    assert np.allclose(from_api.affine, from_cli.affine)
    assert int(response.headers["X-Tumour-Voxels"]) == int(mask.sum())
