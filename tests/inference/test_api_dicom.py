"""``/v1/segment/dicom`` and ``/v1/evaluate/dicom``: a synthetic DICOM study (written with
pydicom) through the API gives the mask ``inference.predict`` gives, loose or zipped; the SEG
reads back as that mask; units, errors, limits and the client."""

from __future__ import annotations

import base64
import gzip
import io
import logging
import stat
import zipfile
from collections.abc import Iterator
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient

from app.client import ApiClient, ApiError
from inference.api import create_app
from inference.metrics import dice, hd95
from inference.predict import main
from tests.dicom_study import OBLIQUE, Study, write_study
from tests.inference.api_helpers import settings
from tests.inference.samples import brain_like

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
SLOPE, INTERCEPT = 2.0, -5.0
NAMES = ["AX T1 PRE", "AX T2 FLAIR", "AX T1 POST GD"]
SPACING = (0.9, 0.8, 3.0)  # OBLIQUE: pixel spacing (row, column), slice step
PATIENT = ("Synthetic", "SYN001")  # tests.dicom_study's PatientName and PatientID


def stored_sequences(depth: int = 5) -> np.ndarray:
    return np.stack([brain_like(24, 20, 30 + k) for k in range(depth)], axis=2).astype(np.uint16)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Study:
    stored = stored_sequences()
    folder = tmp_path_factory.mktemp("dicom") / "study1"
    return write_study(folder, [(n, stored[..., c]) for c, n in enumerate(NAMES)], OBLIQUE,
                       SLOPE, INTERCEPT)  # fmt: skip


@pytest.fixture(scope="module")
def client(spread_checkpoint: Path) -> Iterator[TestClient]:
    with TestClient(create_app(settings(spread_checkpoint))) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def cli_mask(study: Study, spread_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
             ) -> nib.Nifti1Image:  # fmt: skip
    """What ``python -m inference.predict`` writes for the study."""
    out = tmp_path_factory.mktemp("cli")
    assert main([str(study.folder), "--out", str(out), "--checkpoint", str(spread_checkpoint),
                 "--quiet"]) == 0  # fmt: skip
    return nib.Nifti1Image.from_bytes(gzip.decompress((out / "study1_pred.nii.gz").read_bytes()))


def loose(folder: Path) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (p.name, p.read_bytes(), "application/dicom"))
            for p in sorted(folder.iterdir())]  # fmt: skip


def zipped(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def nifti(data: bytes) -> nib.Nifti1Image:
    return nib.Nifti1Image.from_bytes(gzip.decompress(data))


def refused(response: object, status: int, *needles: str) -> str:
    """The detail of an expected error, which must name no patient attribute or file name."""
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    detail: str = response.json()["detail"]  # type: ignore[attr-defined]
    for text in needles:
        assert text in detail
    assert not any(p in detail for p in PATIENT) and "IM0" not in detail
    return detail


def test_the_api_mask_is_the_cli_mask_and_json_is_in_physical_units(
    client: TestClient, study: Study, cli_mask: nib.Nifti1Image
) -> None:
    response = client.post("/v1/segment/dicom", params={"format": "nifti"},
                           files=loose(study.folder))  # fmt: skip
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/gzip"
    image = nifti(response.content)
    mask = np.asarray(image.dataobj)
    assert np.array_equal(mask, np.asarray(cli_mask.dataobj)) and 0 < mask.sum() < mask.size
    assert np.allclose(image.affine, LPS_TO_RAS @ OBLIQUE.affine_lps(), atol=1e-4)

    body = client.post("/v1/segment/dicom", files=loose(study.folder)).json()  # JSON: default
    assert np.array_equal(np.asarray(nifti(base64.b64decode(body["mask_nifti_gz"])).dataobj),
                          mask)  # fmt: skip
    assert body["voxel_spacing_mm"] == pytest.approx(SPACING)
    voxel_mm3 = SPACING[0] * SPACING[1] * SPACING[2]
    assert body["voxel_volume_mm3"] == pytest.approx(voxel_mm3)
    assert body["tumour_voxels"] == int(mask.sum())
    assert body["tumour_volume_ml"] == pytest.approx(mask.sum() * voxel_mm3 / 1000)
    assert [s["slice"] for s in body["slices"]] == [1, 2, 3, 4, 5]
    for k, line in enumerate(body["slices"]):
        assert line["tumour_pixels"] == int(mask[:, :, k].sum())
        assert line["tumour_mm2"] == pytest.approx(line["tumour_pixels"] * 0.9 * 0.8)
    assert [(s["sequence"], s["series_description"], s["series_instance_uid"], s["files"])
            for s in body["series"]] == [  # fmt: skip
        (role, name, study.series[name], 5)
        for role, name in zip(("pre", "flair", "post"), NAMES, strict=True)
    ]


def test_zips_and_loose_files_mixed_give_the_same_mask(
    client: TestClient, study: Study, cli_mask: nib.Nifti1Image
) -> None:
    files = sorted(study.folder.iterdir())
    archive = zipped({
        **{f"Doe^John/series/{p.name}": p.read_bytes() for p in files[:9]},
        "README.txt": b"not DICOM, left aside", "__MACOSX/._IM0001": b"junk",
    })  # fmt: skip
    parts = [("files", ("study.zip", archive, "application/zip")),
             ("files", ("rest.zip", zipped({p.name: p.read_bytes() for p in files[9:12]}),
                        "application/zip"))]  # fmt: skip
    parts += [("files", (p.name, p.read_bytes(), "application/dicom")) for p in files[12:]]
    response = client.post("/v1/segment/dicom?format=nifti", files=parts)
    assert response.status_code == 200, response.text
    assert np.array_equal(np.asarray(nifti(response.content).dataobj),
                          np.asarray(cli_mask.dataobj))  # fmt: skip


def test_the_seg_reads_back_as_the_mask_and_references_the_series(
    client: TestClient, study: Study, cli_mask: nib.Nifti1Image
) -> None:
    response = client.post("/v1/segment/dicom?format=seg", files=loose(study.folder))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/dicom"
    assert int(response.headers["X-Tumour-Voxels"]) == int(np.asarray(cli_mask.dataobj).sum())
    seg = hd.seg.Segmentation.from_dataset(pydicom.dcmread(io.BytesIO(response.content)))
    assert seg.Modality == "SEG" and seg.StudyInstanceUID == study.study_uid
    referenced = {item.SeriesInstanceUID for item in seg.ReferencedSeriesSequence}
    assert referenced == set(study.series.values())
    flair = [pydicom.dcmread(p, stop_before_pixels=True) for p in study.folder.iterdir()]
    flair = [ds for ds in flair if ds.SeriesInstanceUID == study.series["AX T2 FLAIR"]]
    flair.sort(key=lambda ds: float(np.dot(ds.ImagePositionPatient, OBLIQUE.normal)))
    by_source = seg.get_pixels_by_source_instance(
        [ds.SOPInstanceUID for ds in flair], segment_numbers=[1]
    )[..., 0]
    assert np.array_equal(np.moveaxis(by_source, 0, 2), np.asarray(cli_mask.dataobj))


def test_evaluate_dicom_gives_dice_and_hd95_in_mm(
    client: TestClient, study: Study, cli_mask: nib.Nifti1Image
) -> None:
    mask = np.asarray(cli_mask.dataobj)
    truth = np.zeros(mask.shape, np.uint8)
    truth[6:16, 5:15, 1:4] = 1
    grid = LPS_TO_RAS @ OBLIQUE.affine_lps()
    parts = loose(study.folder)
    parts.append(("truth", ("truth.nii.gz", gzip.compress(nib.Nifti1Image(truth, grid).to_bytes()),
                            "application/gzip")))  # fmt: skip
    response = client.post("/v1/evaluate/dicom", files=parts)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["dice"] == pytest.approx(dice(mask, truth))
    assert body["hd95_mm"] == pytest.approx(hd95(mask, truth, SPACING))
    assert body["true_voxels"] == 300
    assert body["true_volume_ml"] == pytest.approx(300 * 0.9 * 0.8 * 3 / 1000)

    parts[-1] = ("truth", ("t.nii", nib.Nifti1Image(truth, np.eye(4)).to_bytes(), "x"))
    detail = refused(client.post("/v1/evaluate/dicom", files=parts), 422, "the ground truth",
                     "'AX T2 FLAIR'")  # fmt: skip
    assert "not on the grid" in detail


def test_series_are_chosen_by_field_or_refused_listing_them(
    client: TestClient, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    stored = stored_sequences(depth=3)
    names = ["T1", "AX FLAIR", "SAG FLAIR", "T1 +C"]
    made = write_study(tmp_path / "s2", [(n, stored[..., min(c, 2)]) for c, n in enumerate(names)])
    files = loose(made.folder)
    detail = refused(client.post("/v1/segment/dicom", files=files), 422,
                     "the FLAIR could be 2 series", "'SAG FLAIR'", "'flair_series'")  # fmt: skip
    assert "--flair-series" not in detail
    response = client.post("/v1/segment/dicom", files=files,
                           data={"flair_series": made.series["SAG FLAIR"]})  # fmt: skip
    assert response.status_code == 200, response.text
    assert response.json()["series"][1]["series_description"] == "SAG FLAIR"
    # a study without a post-contrast series, and a field naming no series
    missing = [part for part in files if pydicom.dcmread(io.BytesIO(part[1][1])).SeriesDescription
               != "T1 +C"]  # fmt: skip
    refused(client.post("/v1/segment/dicom", files=missing, data={"flair_series": "ax flair"}),
            422, "no series looks post-contrast", "'post_series'")  # fmt: skip
    refused(client.post("/v1/segment/dicom", files=files, data={"flair_series": "cor flair"}),
            422, "'cor flair' matches no series")  # fmt: skip
    assert not any(p in caplog.text for p in PATIENT) and "IM0" not in caplog.text


def test_what_is_not_a_usable_study_is_refused_by_part(
    client: TestClient, study: Study, tmp_path: Path
) -> None:
    files = loose(study.folder)
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 200
    with_png = [*files, ("files", ("x.png", png, "image/png"))]
    refused(client.post("/v1/segment/dicom", files=with_png), 415,
            "'files' part 16 is neither a DICOM file")  # fmt: skip
    refused(client.post("/v1/segment/dicom", files=[("files", ("a.zip", zipped({"a.txt": b"x"}),
                                                               "application/zip"))]),
            422, "the zip in 'files' part 1 holds no DICOM file")  # fmt: skip
    refused(client.post("/v1/segment/dicom", files=[("flair_series", (None, b"x"))]), 422,
            "missing form field 'files'")  # fmt: skip
    refused(client.post("/v1/segment/dicom", files=[*files[:2], ("files", ("e", b"", "x"))]), 422,
            "'files' part(s) 3 are empty")  # fmt: skip
    refused(client.post("/v1/segment/dicom", files=[*files, ("flair_series", (None, "é" * 300))]),
            422, "'flair_series' is longer than 256 characters")  # fmt: skip
    broken = b"\x00" * 128 + b"DICM" + b"\x02\x00\x10\x00garbage"
    refused(client.post("/v1/segment/dicom", files=[("files", ("b", broken, "x"))]), 422,
            "the upload: no DICOM MR image series found")  # fmt: skip

    # enhanced (multi-frame) DICOM: the FLAIR as one file of 5 frames
    made = write_study(tmp_path / "mf", [(n, stored_sequences()[..., c])
                                         for c, n in enumerate(NAMES)])  # fmt: skip
    flair = sorted(p for p in made.folder.iterdir()
                   if pydicom.dcmread(p).SeriesDescription == "AX T2 FLAIR")  # fmt: skip
    ds = pydicom.dcmread(flair[0])
    ds.NumberOfFrames = len(flair)
    ds.PixelData = b"".join(pydicom.dcmread(p).PixelData for p in flair)
    ds.save_as(flair[0], enforce_file_format=True)
    for path in flair[1:]:
        path.unlink()
    refused(client.post("/v1/segment/dicom", files=loose(made.folder)), 422,
            "multi-frame (enhanced) DICOM", "dcm2niix", "/v1/segment/sequences")  # fmt: skip


def _zip_with(name: str, data: bytes, mode: int | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        info = zipfile.ZipInfo(name)
        if mode is not None:
            info.external_attr = mode << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        zf.writestr(info, data)
    return buffer.getvalue()


def test_zip_tricks_and_bombs_are_refused_without_inflating(
    spread_checkpoint: Path, study: Study
) -> None:
    dcm = next(study.folder.iterdir()).read_bytes()
    tight = settings(spread_checkpoint, max_decompressed_bytes=2**20, max_form_files=16,
                     max_upload_bytes=2**16, max_pixels=400)  # fmt: skip
    with TestClient(create_app(tight)) as client:
        def post(*archives: bytes) -> object:
            return client.post("/v1/segment/dicom", files=[
                ("files", (f"z{n}.zip", a, "application/zip")) for n, a in enumerate(archives)])
        for name in ("../up.dcm", "/etc/abs.dcm", "C:/x.dcm", "a/../../b.dcm"):
            refused(post(_zip_with(name, dcm)), 422, "'files' part 1",
                    "absolute path, a '..' step or a link")  # fmt: skip
        refused(post(_zip_with("link", b"/etc/passwd", stat.S_IFLNK | 0o777)), 422, "a link")
        bomb = _zip_with("zeros.dcm", b"\x00" * (8 * 2**20))  # 8 MiB of zeros: ~8 KiB zipped
        assert len(bomb) < 2**16
        refused(post(bomb), 422, "inflate to 8388608 bytes; the limit is 1048576")
        refused(post(_zip_with("inner.zip", zipped({"a.dcm": dcm}))), 422,
                "entry 1 of the zip in 'files' part 1 is a zip")  # fmt: skip
        many = zipped({f"f{k}.dcm": dcm for k in range(17)})
        refused(post(many), 422, "holds 17 entries; the limit is 16")
        refused(post(zipped({f"f{k}.dcm": dcm for k in range(9)}),
                     zipped({f"g{k}.dcm": dcm for k in range(8)})),
                422, "over 16 files (the limit)")  # fmt: skip
        # too many loose parts: the form reader stops at the limit
        response = client.post("/v1/segment/dicom", files=[("files", (f"{k}", dcm, "x"))
                                                           for k in range(17)])  # fmt: skip
        assert response.status_code == 400
        assert "more than 16 'files' parts" in response.json()["detail"]
        # the body's size, and the slices' size (24 x 20 = 480 pixels) of the chosen series
        big = client.post("/v1/segment/dicom", files=[("files", ("a", dcm * 40, "x"))])
        assert big.status_code == 413
        refused(client.post("/v1/segment/dicom", files=loose(study.folder)), 422,
                "series 'AX T1 PRE'", "24 x 20 = 480 pixels; the limit is 400")  # fmt: skip


def test_memory_is_reserved_before_any_pixel_is_decoded(
    spread_checkpoint: Path, study: Study, monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(*args: object) -> None:
        raise AssertionError("decoded despite the memory budget")

    monkeypatch.setattr("inference.api.routers.dicom.load_series", never)
    with TestClient(create_app(settings(spread_checkpoint, decode_budget_mb=16))) as client:
        response = client.post("/v1/segment/dicom", files=loose(study.folder))
    refused(response, 422, "MiB of memory", "LGGSEG_SERVE_DECODE_BUDGET_MB")


def test_the_api_key_applies(spread_checkpoint: Path, study: Study) -> None:
    with TestClient(create_app(settings(spread_checkpoint, api_key="k3y-for-tests"))) as client:
        assert client.post("/v1/segment/dicom", files=loose(study.folder)).status_code == 401
        assert client.post("/v1/evaluate/dicom", files=loose(study.folder)).status_code == 401
        response = client.post("/v1/segment/dicom", files=loose(study.folder),
                               headers={"X-API-Key": "k3y-for-tests"})  # fmt: skip
        assert response.status_code == 200


def test_client_methods(client: TestClient, study: Study, cli_mask: nib.Nifti1Image) -> None:
    api = ApiClient("http://test", http=client)
    files = [p.read_bytes() for p in sorted(study.folder.iterdir())]
    mask = np.asarray(cli_mask.dataobj)
    result = api.segment_dicom(files)
    assert np.array_equal(result.masks, mask)
    assert np.allclose(result.affine, cli_mask.affine, atol=1e-4)
    assert result.voxel_spacing_mm == pytest.approx(SPACING)
    assert result.tumour_volume_ml == pytest.approx(mask.sum() * 0.9 * 0.8 * 3 / 1000)
    assert result.series == {"pre": study.series[NAMES[0]], "flair": study.series[NAMES[1]],
                             "post": study.series[NAMES[2]]}  # fmt: skip
    chosen = api.segment_dicom([zipped({f"{k}.dcm": f for k, f in enumerate(files)})],
                               flair_series="ax t2 flair")  # fmt: skip
    assert np.array_equal(chosen.masks, mask)

    truth = np.zeros(mask.shape, np.uint8)
    truth[6:16, 5:15, 1:4] = 1
    truth_bytes = nib.Nifti1Image(truth, cli_mask.affine).to_bytes()
    scored = api.evaluate_dicom(files, truth_bytes)
    assert scored.dice == pytest.approx(dice(mask, truth))
    assert scored.hd95_mm == pytest.approx(hd95(mask, truth, SPACING))
    assert np.array_equal(scored.segmentation.masks, mask)

    seg = hd.seg.Segmentation.from_dataset(pydicom.dcmread(io.BytesIO(api.dicom_seg(files))))
    assert seg.StudyInstanceUID == study.study_uid

    with pytest.raises(ApiError, match="matches no series"):
        api.segment_dicom(files, flair_series="nothing like it")
