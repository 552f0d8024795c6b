"""Sampling and patient selection of the training input pipeline."""

from __future__ import annotations

from pathlib import Path

import torch

from data.kaggle3m import PatientRecord, scan_dataset
from data.split import make_split
from training.config import load_config
from training.data_loading import (
    WeightedDistributedSampler,
    build_data,
    epoch_seed,
    select_patients,
)
from training.distributed import setup_runtime


def test_weighted_sampler_shards_one_reproducible_draw_over_ranks() -> None:
    weights = torch.tensor([0.9 / 10] * 10 + [0.1 / 90] * 90, dtype=torch.float64)
    ranks = [WeightedDistributedSampler(weights, num_replicas=2, rank=r, seed=5) for r in (0, 1)]
    for sampler in ranks:
        sampler.set_epoch(3)
    shard0, shard1 = list(ranks[0]), list(ranks[1])
    assert len(shard0) == len(shard1) == len(ranks[0]) == 50
    again = WeightedDistributedSampler(weights, num_replicas=1, rank=0, seed=5)
    again.set_epoch(3)
    draw = list(again)
    assert draw[0::2] == shard0 and draw[1::2] == shard1  # the same draw, dealt out
    share = sum(i < 10 for i in draw) / len(draw)
    assert 0.75 < share < 1.0  # about 90 % of the draws come from the first 10 items
    again.set_epoch(4)
    assert list(again) != draw  # a new epoch, a new draw


def test_epoch_seeds_differ_by_epoch_and_rank() -> None:
    seeds = {epoch_seed(0, e, r) for e in range(5) for r in range(4)}
    assert len(seeds) == 20 and all(0 <= s < 2**32 for s in seeds)
    assert epoch_seed(0, 1, 0) == epoch_seed(0, 1, 0)


def test_select_patients_spreads_the_pick_over_sorted_ids() -> None:
    patients = [PatientRecord(f"TCGA_X{i:02d}_0000_20000101", f"X{i:02d}", ()) for i in range(10)]
    chosen = select_patients(list(reversed(patients)), 4)
    assert [p.institution for p in chosen] == ["X00", "X03", "X06", "X09"]
    assert select_patients(patients, None) == patients
    assert select_patients(patients, 50) == patients


def test_a_final_fit_trains_on_the_train_and_val_patients(synthetic_lgg: Path) -> None:
    patients = scan_dataset(synthetic_lgg)
    runtime = setup_runtime("cpu", "fp32", channels_last=False)
    for final in (False, True):
        cfg = load_config(overrides={"data": {"data_dir": synthetic_lgg, "cache": False,
                                              "num_workers": 0, "train_on_val": final},
                                     "preprocessing": {"image_size": 32},
                                     "training": {"early_stopping_patience": 0}})
        split = make_split(patients, seed=0, fractions=cfg.data.split_fractions)
        data = build_data(cfg, split, patients, runtime)
        trained = {r.patient_id for r in data.train_set.records}
        expected = set(split.train) | (set(split.val) if final else set())
        assert trained == expected and not trained & set(split.test)
        assert data.val_patients == split.val
