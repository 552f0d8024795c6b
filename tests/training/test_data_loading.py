"""Sampling and patient selection of the training input pipeline."""

from __future__ import annotations

import torch

from data.kaggle3m import PatientRecord
from training.data_loading import WeightedDistributedSampler, epoch_seed, select_patients


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
