"""SliceDataset and SliceCache: item format, parity with THE preprocessing, cache == disk,
tumour-aware weights, per-worker augmentation seeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, WeightedRandomSampler

from data.augmentation import build_augmentation
from data.dataset import SliceCache, SliceDataset, seed_augmentation_worker
from data.kaggle3m import PatientRecord, read_image, read_mask, scan_dataset
from data.preprocessing import PreprocessingConfig, preprocess_image, preprocess_mask
from tests.data.conftest import SyntheticWriter, expected_slice, write_tif

SMALL = PreprocessingConfig(image_size=32)

# ---------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def two_real_patients(lgg_patients: list[PatientRecord]) -> list[PatientRecord]:
    return [lgg_patients[0], lgg_patients[-1]]


@pytest.fixture(scope="module")
def real_cache(two_real_patients: list[PatientRecord]) -> SliceCache:
    return SliceCache(two_real_patients, progress=False)


@pytest.mark.realdata
@pytest.mark.parametrize("image_size", [256, 64])
def test_real_item_equals_the_preprocessing_of_the_file(
    two_real_patients: list[PatientRecord],
    lgg_tumour: dict[str, np.ndarray],
    real_cache: SliceCache,
    image_size: int,
) -> None:
    """Parity: with augmentation off, an item is exactly what inference computes for the file."""
    cfg = PreprocessingConfig(image_size=image_size)
    direct = SliceDataset(two_real_patients, cfg)
    cached = SliceDataset(two_real_patients, cfg, cache=real_cache)
    tumour = np.concatenate([lgg_tumour[p.patient_id] for p in two_real_patients])
    picks = [0, int(np.argmax(tumour)), len(direct) - 1]
    for i in picks:
        record = direct.records[i]
        want_image = torch.from_numpy(preprocess_image(read_image(record.image_path), cfg))
        want_mask = torch.from_numpy(preprocess_mask(read_mask(record.mask_path), cfg))
        for dataset in (direct, cached):
            item = dataset[i]
            assert torch.equal(item["image"], want_image)
            assert torch.equal(item["mask"], want_mask)
            assert item["patient_id"] == record.patient_id
            assert item["slice_index"] == record.index
    assert direct[picks[1]]["mask"].sum() > 0


@pytest.mark.realdata
def test_real_cache_holds_the_decoded_files(
    two_real_patients: list[PatientRecord],
    lgg_tumour: dict[str, np.ndarray],
    real_cache: SliceCache,
) -> None:
    records = [s for p in two_real_patients for s in p.slices]
    assert len(real_cache) == len(records) and real_cache.records == records
    for record in records:
        image, mask = real_cache.image(record), real_cache.mask(record)
        assert np.array_equal(image, read_image(record.image_path))
        assert np.array_equal(mask, read_mask(record.mask_path))
        assert image.dtype == mask.dtype == np.uint8 and not image.flags.writeable
    counts = [real_cache.tumour_pixels(r) for r in records]
    assert counts == list(np.concatenate([lgg_tumour[p.patient_id] for p in two_real_patients]))
    stored = sum(c > 0 for c in counts)
    assert real_cache.nbytes == len(records) * 256 * 256 * 3 + stored * 256 * 256


@pytest.mark.realdata
def test_real_tumour_weights_give_the_chosen_share(
    two_real_patients: list[PatientRecord], real_cache: SliceCache
) -> None:
    dataset = SliceDataset(two_real_patients, SMALL, cache=real_cache)
    has_tumour = dataset.tumour_pixels() > 0
    assert 0 < has_tumour.sum() < len(dataset)
    weights = dataset.tumour_weights(0.5)
    assert weights.shape == (len(dataset),) and weights.dtype == torch.float64
    assert weights[torch.from_numpy(has_tumour)].sum().item() == pytest.approx(0.5)
    sampler = WeightedRandomSampler(
        weights, 4000, replacement=True, generator=torch.Generator().manual_seed(0)
    )
    drawn = has_tumour[list(sampler)].mean()
    assert drawn == pytest.approx(0.5, abs=0.03)
    # without a cache the counts come from the masks on disk, and agree
    assert np.array_equal(
        SliceDataset(two_real_patients, SMALL).tumour_pixels(), dataset.tumour_pixels()
    )


# ---------------------------------------------------------------------------- synthetic


def test_item_format(make_kaggle3m: SyntheticWriter) -> None:
    patients = scan_dataset(make_kaggle3m(["TCGA_AA_0001_20000101"], slices=3))
    dataset = SliceDataset(patients, SMALL, augment=build_augmentation(32, seed=0))
    assert len(dataset) == 3 and [r.index for r in dataset.records] == [1, 2, 3]
    item = dataset[1]
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
    assert item["mask"].shape == (1, 32, 32) and item["mask"].dtype == torch.float32
    assert set(item["mask"].unique().tolist()) == {0.0, 1.0}
    assert item["patient_id"] == "TCGA_AA_0001_20000101" and item["slice_index"] == 2
    assert torch.isfinite(item["image"]).all()


def test_cache_must_cover_the_patients(make_kaggle3m: SyntheticWriter) -> None:
    patients = scan_dataset(make_kaggle3m(["TCGA_AA_0001_2000", "TCGA_BB_0002_2000"], slices=2))
    cache = SliceCache(patients[:1], progress=False)
    with pytest.raises(ValueError, match="cache lacks 2 of these slices"):
        SliceDataset(patients, SMALL, cache=cache)
    with pytest.raises(KeyError, match="TCGA_BB_0002_2000 #1 is not in the cache"):
        cache.image(patients[1].slices[0])
    name, index = "TCGA_AA_0001_2000", 1
    image, mask = expected_slice(name, index)
    assert np.array_equal(cache.image(patients[0].slices[0]), image)
    assert np.array_equal(cache.mask(patients[0].slices[0]), mask // 255)  # odd slice: empty


def test_tumour_weights_edge_cases(make_kaggle3m: SyntheticWriter) -> None:
    patients = scan_dataset(make_kaggle3m(["TCGA_AA_0001_2000"], slices=1))  # no tumour
    dataset = SliceDataset(patients, SMALL)
    assert torch.equal(dataset.tumour_weights(), torch.ones(1, dtype=torch.float64))
    with pytest.raises(ValueError, match="tumour_share"):
        dataset.tumour_weights(1.0)


def _same_image_patient(root: Path, n: int) -> list[PatientRecord]:
    """One patient whose n slices are the same image, so any difference comes from augmenting."""
    name = "TCGA_AA_0001_2000"
    folder = root / name
    folder.mkdir(parents=True)
    image, mask = expected_slice(name, 2, size=32)
    for i in range(1, n + 1):
        write_tif(folder / f"{name}_{i}.tif", image, True)
        write_tif(folder / f"{name}_{i}_mask.tif", mask, True)
    return scan_dataset(root)


def _epoch(dataset: SliceDataset, seed: int, init: bool) -> torch.Tensor:
    loader = DataLoader(
        dataset,
        batch_size=1,
        num_workers=2,
        worker_init_fn=seed_augmentation_worker if init else None,
        generator=torch.Generator().manual_seed(seed),
    )
    return torch.cat([batch["image"] for batch in loader])


def test_workers_draw_different_reproducible_augmentations(tmp_path: Path) -> None:
    patients = _same_image_patient(tmp_path / "kaggle_3m", 8)
    dataset = SliceDataset(patients, SMALL, augment=build_augmentation(32, "strong", seed=0))
    first = _epoch(dataset, seed=0, init=True)
    assert torch.equal(first, _epoch(dataset, seed=0, init=True))  # reproducible
    assert not torch.equal(first, _epoch(dataset, seed=1, init=True))  # changes with the seed
    # worker 0 serves items 0, 2, 4, 6 and worker 1 items 1, 3, 5, 7
    assert not torch.equal(first[0::2], first[1::2])
    # without the init function both workers repeat the same draws (why it exists)
    plain = _epoch(dataset, seed=0, init=False)
    assert torch.equal(plain[0::2], plain[1::2])


def test_patch_crops_come_after_the_whole_slice_preprocessing(tmp_path: Path) -> None:
    """A crop is a window of the preprocessed whole slice (same z-score as at inference), most
    often around tumour, and reproducible from the pipeline's seed."""
    from data.augmentation import build_patch_crop

    patients = _same_image_patient(tmp_path / "kaggle_3m", 1)
    large = PreprocessingConfig(image_size=64)
    whole = SliceDataset(patients, large)[0]
    cropped = SliceDataset(patients, large, crop=build_patch_crop(32, foreground=1.0, seed=0))
    for _ in range(20):
        item = cropped[0]
        assert item["image"].shape == (3, 32, 32) and item["mask"].shape == (1, 32, 32)
        assert item["mask"].sum() > 0  # foreground 1.0: the crop always holds tumour
    # A window of the whole slice's tensor, not a re-normalised crop: find it in the original.
    windows = whole["image"].unfold(1, 32, 1).unfold(2, 32, 1)  # 3 x Y x X x 32 x 32
    hits = (windows == item["image"][:, None, None]).flatten(3).all(-1).all(0)
    assert bool(hits.any())
    y, x = (int(i) for i in hits.nonzero()[0])
    assert torch.equal(item["mask"], whole["mask"][:, y : y + 32, x : x + 32])

    def draws(seed: int) -> list[torch.Tensor]:
        cropped.reseed(seed)
        return [cropped[0]["image"] for _ in range(4)]

    assert all(torch.equal(a, b) for a, b in zip(draws(5), draws(5), strict=True))


def test_patch_crop_arguments_are_checked() -> None:
    from data.augmentation import build_patch_crop

    with pytest.raises(ValueError, match="multiple of 32"):
        build_patch_crop(40)
    with pytest.raises(ValueError, match="foreground"):
        build_patch_crop(32, foreground=1.5)
