"""Patients -> split -> datasets -> DataLoaders, identical on every DDP rank.

Randomness is tied to (seed, epoch, rank) and nothing else, so a resumed run draws the same
batches and augmentations as an uninterrupted one: the samplers reshuffle from ``seed + epoch``,
and ``DataBundle.start_epoch`` reseeds the augmentation (directly with ``num_workers=0``, through
the DataLoader generator and ``seed_augmentation_worker`` with workers).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler, Subset

from data.augmentation import build_augmentation, build_patch_crop
from data.dataset import SliceCache, SliceDataset, seed_augmentation_worker
from data.kaggle3m import PatientRecord
from data.split import Split, make_split
from training.config import TrainConfig
from training.runtime import Runtime

logger = logging.getLogger(__name__)


def select_patients(patients: Sequence[PatientRecord], limit: int | None) -> list[PatientRecord]:
    """The first ``limit`` patients in an evenly spaced pick over the sorted ids (all if None).

    Spacing the pick keeps several institutions in small debug runs.
    """
    ordered = sorted(patients, key=lambda p: p.patient_id)
    if limit is None or limit >= len(ordered):
        return ordered
    picks = np.unique(np.linspace(0, len(ordered) - 1, limit).round().astype(int))
    return [ordered[i] for i in picks]


def load_or_make_split(
    path: Path, patients: Sequence[PatientRecord], cfg: TrainConfig, runtime: Runtime
) -> Split:
    """Reuse ``path`` (split.json) when it exists, else make the split and write it (rank 0).

    Every rank computes the same split from the same patients and seed; only rank 0 writes.
    """
    if path.is_file():
        split = Split.from_json(path)
        logger.info("reusing the patient split in %s", path)
        return split
    split = make_split(
        list(patients), seed=cfg.data.split_seed, fractions=cfg.data.split_fractions
    )
    if runtime.is_main:
        split.to_json(path)
    return split


class WeightedDistributedSampler(Sampler[int]):
    """Draws with replacement by ``weights`` (e.g. a tumour share), sharded over ranks.

    Like DistributedSampler: the draw depends only on ``seed + epoch`` (call ``set_epoch``), and
    every rank gets ``ceil(n / world_size)`` indices of one shared draw.
    """

    def __init__(self, weights: torch.Tensor, *, num_replicas: int, rank: int, seed: int) -> None:
        self.weights = weights.double()
        self.num_replicas, self.rank, self.seed = num_replicas, rank, seed
        self.num_samples = math.ceil(len(weights) / num_replicas)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        total = self.num_samples * self.num_replicas
        drawn = torch.multinomial(self.weights, total, replacement=True, generator=generator)
        return iter(drawn[self.rank :: self.num_replicas].tolist())

    def __len__(self) -> int:
        return self.num_samples


@dataclass
class DataBundle:
    split: Split
    train_loader: DataLoader
    val_loader: DataLoader
    val_patients: list[str]
    sampler: DistributedSampler | WeightedDistributedSampler
    generator: torch.Generator
    train_set: SliceDataset
    seed: int
    rank: int

    def start_epoch(self, epoch: int) -> None:
        """Reseed everything random in the input pipeline for ``epoch`` on this rank."""
        self.sampler.set_epoch(epoch)
        seed = epoch_seed(self.seed, epoch, self.rank)
        self.generator.manual_seed(seed)
        self.train_set.reseed(seed)


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """A distinct, reproducible 32-bit seed per (seed, epoch, rank)."""
    mixed = np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0]
    return int(mixed)


def build_data(
    cfg: TrainConfig, split: Split, patients: Sequence[PatientRecord], runtime: Runtime
) -> DataBundle:
    val_patients = split.select(patients, "val")
    train_patients = split.select(patients, "train")
    if cfg.data.train_on_val:
        train_patients = [*train_patients, *val_patients]
    cache = None
    if cfg.data.cache:
        cache = SliceCache(train_patients if cfg.data.train_on_val
                           else [*train_patients, *val_patients], progress=runtime.is_main)
    augment = None
    if cfg.data.augmentation != "none":
        augment = build_augmentation(
            cfg.preprocessing.image_size, cfg.data.augmentation, seed=cfg.training.seed
        )
    crop = None
    if cfg.data.patch_size is not None:
        crop = build_patch_crop(cfg.data.patch_size, cfg.data.patch_foreground,
                                seed=cfg.training.seed)
    train_set = SliceDataset(train_patients, cfg.preprocessing, augment=augment, crop=crop,
                             cache=cache)
    val_set = SliceDataset(val_patients, cfg.preprocessing, cache=cache)

    sampler: DistributedSampler | WeightedDistributedSampler
    if cfg.data.tumour_sampling is not None:
        sampler = WeightedDistributedSampler(
            train_set.tumour_weights(cfg.data.tumour_sampling),
            num_replicas=runtime.world_size,
            rank=runtime.rank,
            seed=cfg.training.seed,
        )
    else:
        sampler = DistributedSampler(
            train_set,
            num_replicas=runtime.world_size,
            rank=runtime.rank,
            shuffle=True,
            seed=cfg.training.seed,
        )
    generator = torch.Generator()
    workers = cfg.data.num_workers
    common: dict[str, Any] = {
        "num_workers": workers,
        "pin_memory": runtime.device.type == "cuda",
        "worker_init_fn": seed_augmentation_worker if workers else None,
        "persistent_workers": False,
    }
    batch = cfg.training.batch_size
    train_loader = DataLoader(
        train_set,
        batch_size=batch,
        sampler=sampler,
        # BatchNorm needs more than one value per channel: never end on a batch of one.
        drop_last=len(sampler) > batch,
        generator=generator,
        **common,
    )
    val_shard = Subset(val_set, range(runtime.rank, len(val_set), runtime.world_size))
    val_loader = DataLoader(val_shard, batch_size=cfg.training.val_batch_size, **common)
    if len(train_loader) == 0:
        raise ValueError(
            f"no training batch: {len(sampler)} training slices per rank; "
            "use more patients or a smaller batch"
        )
    logger.info(
        "%d train patients (%d slices), %d val patients (%d slices), %d test patients",
        len(train_patients), len(train_set), len(val_patients), len(val_set), len(split.test),
    )
    return DataBundle(
        split=split,
        train_loader=train_loader,
        val_loader=val_loader,
        val_patients=[p.patient_id for p in val_patients],
        sampler=sampler,
        generator=generator,
        train_set=train_set,
        seed=cfg.training.seed,
        rank=runtime.rank,
    )
