"""The kaggle_3m reader: real data (counts, order, exact pixels) and every problem case."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import tifffile

from data.kaggle3m import (
    MAX_LISTED,
    DatasetError,
    PatientRecord,
    decode_tiff,
    find_kaggle3m,
    read_image,
    read_mask,
    scan_dataset,
    tumour_pixels,
)
from tests.data.conftest import (
    Listing,
    SyntheticWriter,
    expected_slice,
    tumour_slices,
    write_tif,
)

PATIENT = "TCGA_AA_0001_20000101"

# ---------------------------------------------------------------------------- real data


@pytest.mark.realdata
def test_real_dataset_counts(
    lgg_patients: list[PatientRecord], lgg_tumour: dict[str, np.ndarray], lgg_listing: Listing
) -> None:
    assert {p.patient_id: len(p.slices) for p in lgg_patients} == lgg_listing.slices
    ids = [p.patient_id for p in lgg_patients]
    assert ids == sorted(ids) and len(set(ids)) == lgg_listing.patients
    assert {p.institution for p in lgg_patients} == set(lgg_listing.institutions())
    assert [len(lgg_tumour[p]) for p in ids] == [lgg_listing.slices[p] for p in ids]
    assert 0 < tumour_slices(lgg_tumour) < lgg_listing.total_slices
    assert all(p.patient_id.startswith(f"TCGA_{p.institution}_") for p in lgg_patients)


@pytest.mark.realdata
def test_real_slices_in_numeric_order(lgg_patients: list[PatientRecord]) -> None:
    for patient in lgg_patients:
        indices = [s.index for s in patient.slices]
        assert indices == list(range(1, len(indices) + 1)), patient.patient_id
        for s in patient.slices:
            assert s.image_path.name == f"{patient.patient_id}_{s.index}.tif"
            assert s.mask_path.name == f"{patient.patient_id}_{s.index}_mask.tif"
    first = lgg_patients[0].slices
    assert [first[8].index, first[9].index] == [9, 10]  # as strings, "10" would sort before "9"


def _pixel_hashes(root: Path) -> dict[str, str]:
    """PIXELS.sha256: ``<sha256 of array.tobytes()>  <path relative to kaggle_3m>`` per line."""
    hashes = {}
    for line in (root / "PIXELS.sha256").read_text().splitlines():
        digest, rel = line.split(maxsplit=1)
        hashes[rel.strip()] = digest
    return hashes


@pytest.mark.realdata
def test_real_pixels_match_published_hashes(
    lgg_dir: Path, lgg_patients: list[PatientRecord], lgg_listing: Listing
) -> None:
    hashes = _pixel_hashes(lgg_dir)
    assert len(hashes) == 2 * lgg_listing.total_slices
    rng = np.random.default_rng(0)
    sample = [s for p in lgg_patients for s in p.slices]
    picked = [sample[i] for i in rng.choice(len(sample), size=40, replace=False)]
    checked_tumour = 0
    for s in picked:
        image = decode_tiff(s.image_path)
        mask = decode_tiff(s.mask_path)
        rel_image = s.image_path.relative_to(lgg_dir).as_posix()
        rel_mask = s.mask_path.relative_to(lgg_dir).as_posix()
        assert hashlib.sha256(image.tobytes()).hexdigest() == hashes[rel_image], rel_image
        assert hashlib.sha256(mask.tobytes()).hexdigest() == hashes[rel_mask], rel_mask
        assert image.shape == (256, 256, 3) and image.dtype == np.uint8
        assert set(np.unique(mask)) <= {0, 255}
        # read_image is the same pixels; read_mask the same mask as {0, 1}
        assert np.array_equal(read_image(s.image_path), image)
        binary = read_mask(s.mask_path)
        assert binary.dtype == np.uint8 and set(np.unique(binary)) <= {0, 1}
        assert np.array_equal(binary * 255, mask)
        checked_tumour += int(binary.any())
    assert checked_tumour > 0  # the sample covers masks with tumour, not only empty ones


@pytest.mark.realdata
def test_real_tumour_pixels_agree_with_masks(
    lgg_patients: list[PatientRecord], lgg_tumour: dict[str, np.ndarray]
) -> None:
    patient = lgg_patients[0]
    counts = lgg_tumour[patient.patient_id]
    assert counts.shape == (len(patient.slices),)
    best = int(np.argmax(counts))
    assert counts[best] == np.count_nonzero(read_mask(patient.slices[best].mask_path)) > 0


# ---------------------------------------------------------------------------- synthetic: good


@pytest.mark.parametrize("compress", [True, False, "mixed"])
def test_scan_reads_compressed_and_uncompressed(
    make_kaggle3m: SyntheticWriter, compress: bool | str
) -> None:
    root = make_kaggle3m(["TCGA_BB_0002_20010101", PATIENT], slices=12, compress=compress)
    patients = scan_dataset(root)
    assert [p.patient_id for p in patients] == [PATIENT, "TCGA_BB_0002_20010101"]
    assert [p.institution for p in patients] == ["AA", "BB"]
    assert [s.index for s in patients[0].slices] == list(range(1, 13))
    s10 = patients[0].slices[9]
    assert s10.index == 10 and s10.image_path.name == f"{PATIENT}_10.tif"
    image, mask = expected_slice(PATIENT, 10)
    assert np.array_equal(read_image(s10.image_path), image)
    assert np.array_equal(read_mask(s10.mask_path), mask // 255)
    assert list(tumour_pixels(patients[0])) == [0, 24] * 6


def test_scan_ignores_other_files_and_folders(make_kaggle3m: SyntheticWriter) -> None:
    root = make_kaggle3m([PATIENT], slices=2)
    (root / "README.md").write_text("notes")
    (root / "notes").mkdir()
    (root / PATIENT / ".DS_Store").write_bytes(b"\0")
    patients = scan_dataset(root)
    assert len(patients) == 1 and len(patients[0].slices) == 2


def test_find_kaggle3m_locates_a_nested_download(make_kaggle3m: SyntheticWriter, tmp_path: Path):
    nested = make_kaggle3m([PATIENT], slices=1, root=tmp_path / "dl" / "lgg" / "kaggle_3m")
    assert find_kaggle3m(tmp_path / "dl") == nested
    assert find_kaggle3m(nested) == nested
    assert find_kaggle3m(tmp_path / "missing") is None
    with pytest.raises(DatasetError, match="did you mean .*kaggle_3m"):
        scan_dataset(tmp_path / "dl")


# ---------------------------------------------------------------------------- synthetic: problems


def _problem_names(exc: DatasetError) -> list[str]:
    return [p.path.name for p in exc.problems]


def test_root_missing(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not found: .*nowhere"):
        scan_dataset(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="not found"):
        scan_dataset(tmp_path / "nowhere", skip_bad=True)


def test_no_patient_folders(tmp_path: Path) -> None:
    (tmp_path / "other").mkdir()
    with pytest.raises(DatasetError, match="no patient folders"):
        scan_dataset(tmp_path, skip_bad=True)


def test_image_without_mask_and_mask_without_image(make_kaggle3m: SyntheticWriter) -> None:
    root = make_kaggle3m([PATIENT], slices=4)
    (root / PATIENT / f"{PATIENT}_2_mask.tif").unlink()
    (root / PATIENT / f"{PATIENT}_4.tif").unlink()
    with pytest.raises(DatasetError) as info:
        scan_dataset(root)
    assert _problem_names(info.value) == [f"{PATIENT}_2.tif", f"{PATIENT}_4_mask.tif"]
    message = str(info.value)
    assert f"{PATIENT}/{PATIENT}_2.tif: image without its mask" in message
    assert f"{PATIENT}/{PATIENT}_4_mask.tif: mask without its image" in message


def test_mask_of_another_size(make_kaggle3m: SyntheticWriter) -> None:
    root = make_kaggle3m([PATIENT], slices=3)
    write_tif(root / PATIENT / f"{PATIENT}_3_mask.tif", np.zeros((8, 12), np.uint8), True)
    with pytest.raises(DatasetError, match=r"_3_mask.tif: mask is 8x12 but its image is 16x16"):
        scan_dataset(root)


def test_unreadable_and_truncated_files(make_kaggle3m: SyntheticWriter) -> None:
    root = make_kaggle3m([PATIENT], slices=3, compress=False)
    folder = root / PATIENT
    (folder / f"{PATIENT}_1.tif").write_bytes(b"this is not a tiff")
    data = (folder / f"{PATIENT}_2_mask.tif").read_bytes()
    (folder / f"{PATIENT}_2_mask.tif").write_bytes(data[:-100])
    with pytest.raises(DatasetError) as info:
        scan_dataset(root)
    assert _problem_names(info.value) == [f"{PATIENT}_1.tif", f"{PATIENT}_2_mask.tif"]
    assert "unreadable TIFF" in info.value.problems[0].reason
    assert "truncated" in info.value.problems[1].reason
    with pytest.raises(DatasetError, match=f"cannot read .*{PATIENT}_1.tif"):
        read_image(folder / f"{PATIENT}_1.tif")


def test_errors_never_quote_the_files_bytes(make_kaggle3m: SyntheticWriter) -> None:
    """A file named like a slice (anything at all) is reported without its content."""
    root = make_kaggle3m([PATIENT], slices=2, compress=False)
    secret = root / PATIENT / f"{PATIENT}_1.tif"
    secret.write_bytes(b"SECRET=hunter2\n" * 40)
    with pytest.raises(DatasetError) as info:
        scan_dataset(root)
    with pytest.raises(DatasetError) as read:
        read_image(secret)
    with pytest.warns(UserWarning) as skipped:
        scan_dataset(root, skip_bad=True)
    for message in (str(info.value), str(read.value), str(skipped[0].message)):
        assert "not a TIFF file" in message
        assert "SECR" not in message and "hunter2" not in message


def test_wrong_layout_files(make_kaggle3m: SyntheticWriter) -> None:
    root = make_kaggle3m([PATIENT], slices=3)
    folder = root / PATIENT
    write_tif(folder / f"{PATIENT}_1.tif", np.zeros((16, 16), np.uint8), True)  # grey image
    write_tif(folder / f"{PATIENT}_2_mask.tif", np.zeros((16, 16, 3), np.uint8), True)  # RGB mask
    write_tif(folder / "TCGA_ZZ_9_1.tif", np.zeros((16, 16, 3), np.uint8), True)  # foreign name
    write_tif(folder / f"{PATIENT}_03.tif", np.zeros((16, 16, 3), np.uint8), True)  # same number
    with pytest.raises(DatasetError) as info:
        scan_dataset(root)
    reasons = {p.path.name: p.reason for p in info.value.problems}
    assert "H x W x 3 uint8 image" in reasons[f"{PATIENT}_1.tif"]
    assert "H x W uint8 mask" in reasons[f"{PATIENT}_2_mask.tif"]
    assert "unexpected name" in reasons["TCGA_ZZ_9_1.tif"]
    assert "duplicate slice number 3" in reasons[f"{PATIENT}_3.tif"]
    with pytest.raises(DatasetError, match="expected an H x W uint8 mask"):
        read_mask(folder / f"{PATIENT}_2_mask.tif")


def test_multipage_tiff_is_refused(make_kaggle3m: SyntheticWriter) -> None:
    root = make_kaggle3m([PATIENT], slices=1)
    path = root / PATIENT / f"{PATIENT}_1_mask.tif"
    tifffile.imwrite(path, np.zeros((2, 16, 16), np.uint8), photometric="minisblack", metadata=None)
    with pytest.raises(DatasetError, match="several pages"):
        scan_dataset(root)
    with pytest.raises(DatasetError, match="several pages"):
        read_mask(path)


def test_empty_patient_folder(make_kaggle3m: SyntheticWriter) -> None:
    root = make_kaggle3m([PATIENT], slices=2)
    (root / "TCGA_CC_0003_20020202").mkdir()
    with pytest.raises(DatasetError) as info:
        scan_dataset(root)
    assert _problem_names(info.value) == ["TCGA_CC_0003_20020202"]
    assert "empty patient folder" in str(info.value)


def test_all_problems_in_one_error_capped(make_kaggle3m: SyntheticWriter) -> None:
    root = make_kaggle3m([PATIENT, "TCGA_BB_0002_20010101"], slices=13)
    for name in (PATIENT, "TCGA_BB_0002_20010101"):
        for i in range(1, 14):
            (root / name / f"{name}_{i}_mask.tif").unlink()
    with pytest.raises(DatasetError) as info:
        scan_dataset(root)
    assert len(info.value.problems) == 26
    message = str(info.value)
    assert message.startswith(f"26 problem(s) in {root}:")
    assert message.count("image without its mask") == MAX_LISTED
    assert message.rstrip().endswith("... and 6 more")


def test_skip_bad_warns_and_keeps_the_good(make_kaggle3m: SyntheticWriter) -> None:
    root = make_kaggle3m([PATIENT, "TCGA_BB_0002_20010101"], slices=4)
    (root / PATIENT / f"{PATIENT}_2_mask.tif").unlink()
    for i in range(1, 5):  # every slice of the second patient is bad
        (root / "TCGA_BB_0002_20010101" / f"TCGA_BB_0002_20010101_{i}.tif").write_bytes(b"x")
    (root / "TCGA_CC_0003_20020202").mkdir()
    with pytest.warns(UserWarning, match=r"skipped 6 bad file\(s\)") as record:
        patients = scan_dataset(root, skip_bad=True)
    assert f"{PATIENT}_2.tif" in str(record[0].message)
    assert [p.patient_id for p in patients] == [PATIENT]
    assert [s.index for s in patients[0].slices] == [1, 3, 4]


def test_skip_bad_with_nothing_usable_still_raises(make_kaggle3m: SyntheticWriter) -> None:
    root = make_kaggle3m([PATIENT], slices=2)
    for i in (1, 2):
        (root / PATIENT / f"{PATIENT}_{i}_mask.tif").unlink()
    with pytest.warns(UserWarning), pytest.raises(DatasetError, match="no usable patient"):
        scan_dataset(root, skip_bad=True)


def test_skip_bad_also_skips_corrupt_pixel_data(tmp_path: Path) -> None:
    """A header that is fine in front of pixel data that is not: skipped, not met mid-training."""
    root = tmp_path / "kaggle_3m"
    folder = root / PATIENT
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in (1, 2, 3):
        image = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
        write_tif(folder / f"{PATIENT}_{i}.tif", image, True)
        write_tif(folder / f"{PATIENT}_{i}_mask.tif", np.zeros((32, 32), np.uint8), True)
    broken = folder / f"{PATIENT}_2.tif"
    with tifffile.TiffFile(broken) as tif:
        offset = int(tif.pages.first.dataoffsets[0])
    data = bytearray(broken.read_bytes())
    data[offset : offset + 64] = b"\x00" * 64  # the deflate stream, not the header
    broken.write_bytes(bytes(data))
    assert [s.index for s in scan_dataset(root)[0].slices] == [1, 2, 3]  # headers look fine
    with pytest.raises(DatasetError):
        read_image(broken)
    with pytest.warns(UserWarning, match=r"skipped 1 bad file\(s\)") as record:
        patients = scan_dataset(root, skip_bad=True)
    assert [s.index for s in patients[0].slices] == [1, 3]
    assert f"{PATIENT}_2.tif" in str(record[0].message) and "corrupt" in str(record[0].message)
