"""Slices as training samples: load (optionally from an in-memory cache) -> augment (training
only) -> THE preprocessing of ``data.preprocessing``.

With augmentation off, an item's image is exactly ``preprocess_image(read_image(path), cfg)``:
the same tensor the inference code feeds the model for that file.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset, Subset, get_worker_info
from tqdm.auto import tqdm

from data.kaggle3m import PatientRecord, SliceRecord, read_image, read_mask
from data.preprocessing import PreprocessingConfig, preprocess_image, preprocess_mask

logger = logging.getLogger(__name__)


class SliceCache:
    """Every slice of the given patients decoded once and kept in memory as numpy arrays.

    Images are uint8 ``H x W x 3``; masks uint8 ``H x W`` in {0, 1}. Masks without tumour are
    not stored (a zero mask is made on request), which saves about two thirds of the mask memory.
    Arrays are read-only. DataLoader workers started by fork share the memory; with the spawn
    start method every worker receives a pickled copy.
    """

    def __init__(self, patients: Sequence[PatientRecord], *, progress: bool = True) -> None:
        self.records: list[SliceRecord] = [s for p in patients for s in p.slices]
        self._position = {r: i for i, r in enumerate(self.records)}
        self._images: list[np.ndarray] = []
        self._masks: list[np.ndarray | None] = []
        self._tumour = np.zeros(len(self.records), dtype=np.int64)
        bar = tqdm(self.records, desc="decoding slices", unit="slice", disable=not progress)
        for i, record in enumerate(bar):
            image = read_image(record.image_path)
            mask = read_mask(record.mask_path)
            image.flags.writeable = False
            self._images.append(image)
            self._tumour[i] = np.count_nonzero(mask)
            if self._tumour[i]:
                mask.flags.writeable = False
                self._masks.append(mask)
            else:
                self._masks.append(None)
        logger.info("cached %d slices (%.1f MB)", len(self.records), self.nbytes / 1e6)

    def __len__(self) -> int:
        return len(self.records)

    def __contains__(self, record: object) -> bool:
        return record in self._position

    def _index(self, record: SliceRecord) -> int:
        try:
            return self._position[record]
        except KeyError:
            raise KeyError(
                f"slice {record.patient_id} #{record.index} is not in the cache"
            ) from None

    def image(self, record: SliceRecord) -> np.ndarray:
        """The decoded image (read-only; copy before editing in place)."""
        return self._images[self._index(record)]

    def mask(self, record: SliceRecord) -> np.ndarray:
        """The mask in {0, 1} (read-only)."""
        i = self._index(record)
        mask = self._masks[i]
        if mask is None:
            mask = np.zeros(self._images[i].shape[:2], dtype=np.uint8)
            mask.flags.writeable = False
        return mask

    def tumour_pixels(self, record: SliceRecord) -> int:
        return int(self._tumour[self._index(record)])

    @property
    def nbytes(self) -> int:
        """Bytes held by the pixel arrays."""
        return sum(a.nbytes for a in self._images) + sum(
            m.nbytes for m in self._masks if m is not None
        )


class SliceDataset(Dataset[dict[str, object]]):
    """One item per slice of ``patients`` (patient order, then slice order).

    Item: ``{"image": float32 3xSxS, "mask": float32 1xSxS in {0, 1}, "patient_id": str,
    "slice_index": int}`` with ``S = preprocessing.image_size``.
    """

    def __init__(
        self,
        patients: Sequence[PatientRecord],
        preprocessing: PreprocessingConfig,
        *,
        augment: A.Compose | None = None,
        crop: A.Compose | None = None,
        cache: SliceCache | None = None,
    ) -> None:
        self.records: list[SliceRecord] = [s for p in patients for s in p.slices]
        self.preprocessing = preprocessing
        self.augment = augment
        self.crop = crop
        self.cache = cache
        if cache is not None:
            missing = [r for r in self.records if r not in cache]
            if missing:
                raise ValueError(
                    f"the cache lacks {len(missing)} of these slices (first: "
                    f"{missing[0].patient_id} #{missing[0].index}); build it from the same patients"
                )
        self._tumour: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.records)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The raw uint8 image and {0, 1} mask of item ``index`` (before augmentation)."""
        record = self.records[index]
        if self.cache is not None:
            return self.cache.image(record), self.cache.mask(record)
        return read_image(record.image_path), read_mask(record.mask_path)

    def __getitem__(self, index: int) -> dict[str, object]:
        record = self.records[index]
        image, mask = self.load(index)
        if self.augment is not None:
            out = self.augment(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        model_image = preprocess_image(image, self.preprocessing)
        model_mask = preprocess_mask(mask, self.preprocessing)
        if self.crop is not None:
            out = self.crop(image=model_image.transpose(1, 2, 0), mask=model_mask[0])
            model_image = np.ascontiguousarray(out["image"].transpose(2, 0, 1))
            model_mask = np.ascontiguousarray(out["mask"][None])
        return {
            "image": torch.from_numpy(model_image),
            "mask": torch.from_numpy(model_mask),
            "patient_id": record.patient_id,
            "slice_index": record.index,
        }

    def reseed(self, seed: int) -> None:
        """Seed the random pipelines (augmentation, crop), each from its own derived seed."""
        for offset, pipeline in enumerate((self.augment, self.crop)):
            if pipeline is not None:
                pipeline.set_random_seed((seed + offset) % 2**32)

    def tumour_pixels(self) -> np.ndarray:
        """Tumour pixels of each item at the original resolution (decodes masks once if no
        cache)."""
        if self._tumour is None:
            if self.cache is not None:
                cache = self.cache
                counts = [cache.tumour_pixels(r) for r in self.records]
            else:
                counts = [int(np.count_nonzero(read_mask(r.mask_path))) for r in self.records]
            self._tumour = np.asarray(counts, dtype=np.int64)
        return self._tumour

    def tumour_weights(self, tumour_share: float = 0.5) -> torch.Tensor:
        """Per-item weights for ``WeightedRandomSampler`` so that slices with tumour make up
        ``tumour_share`` of the draws (uniform weights when all or no slices have tumour)."""
        if not 0 < tumour_share < 1:
            raise ValueError(f"tumour_share must be in (0, 1), got {tumour_share}")
        has_tumour = self.tumour_pixels() > 0
        n_tumour = int(has_tumour.sum())
        n_empty = len(has_tumour) - n_tumour
        if n_tumour == 0 or n_empty == 0:
            return torch.full(
                (len(has_tumour),), 1.0 / max(1, len(has_tumour)), dtype=torch.float64
            )
        weights = np.where(has_tumour, tumour_share / n_tumour, (1 - tumour_share) / n_empty)
        return torch.from_numpy(weights.astype(np.float64))


def seed_augmentation_worker(worker_id: int) -> None:
    """``worker_init_fn`` giving each DataLoader worker its own reproducible augmentation seed.

    Without it, forked workers inherit the same augmentation generator state and repeat each
    other's draws. The seed comes from torch's per-worker seed, so it changes every epoch and is
    reproducible when the DataLoader has a seeded ``generator``.
    """
    info = get_worker_info()
    if info is None:
        return
    dataset = info.dataset
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    if isinstance(dataset, SliceDataset):
        dataset.reseed(info.seed)
