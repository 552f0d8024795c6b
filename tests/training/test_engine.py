"""The training step itself: gradient accumulation and per-patient validation Dice."""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import LambdaLR

from training.engine import train_one_epoch, validate
from training.runtime import Runtime

CPU = Runtime(torch.device("cpu"), None, channels_last=False)


def batches(n: int, size: int) -> list[dict[str, object]]:
    torch.manual_seed(1)
    return [{"image": torch.randn(size, 3, 4, 4), "mask": torch.rand(size, 1, 4, 4).round(),
             "patient_id": ["a"] * size} for _ in range(n)]


def run(data: list[dict[str, object]], accumulation: int) -> tuple[torch.nn.Module, int]:
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    scheduler = LambdaLR(optimizer, lambda step: 1.0)
    result = train_one_epoch(model, data, optimizer, scheduler, torch.nn.functional.mse_loss,
                             CPU, epoch=1, step=0, grad_accumulation=accumulation)
    return model, result.step


def test_accumulating_four_batches_equals_one_big_batch() -> None:
    small = batches(4, 2)
    big = [{"image": torch.cat([b["image"] for b in small]),
            "mask": torch.cat([b["mask"] for b in small]), "patient_id": ["a"] * 8}]
    accumulated, steps = run(small, accumulation=4)
    single, _ = run(big, accumulation=1)
    assert steps == 1
    torch.testing.assert_close(accumulated.weight, single.weight)
    _, steps = run(batches(5, 2), accumulation=2)
    assert steps == 3  # the last, shorter group still steps


def test_validation_dice_is_per_patient_volume() -> None:
    class Echo(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[:, :1] * 100  # logits = first input channel, scaled

    truth = torch.zeros(3, 1, 4, 4)
    truth[0, 0, :2] = 1  # patient a: 8 voxels on slice 0, none on slice 1
    predicted = truth.clone()
    predicted[1, 0, 0, 0] = 1  # patient a: one false positive on slice 1
    image = torch.cat([predicted * 2 - 1] * 3, dim=1)
    data = [{"image": image, "mask": truth, "patient_id": ["a", "a", "b"]}]
    result = validate(Echo(), data, torch.nn.functional.binary_cross_entropy_with_logits, CPU,
                      ["a", "b"], epoch=1)
    assert result.patient_dice["a"] == 2 * 8 / (2 * 8 + 1)
    assert result.patient_dice["b"] == 1.0  # empty truth, empty prediction
    assert result.mean_dice == (2 * 8 / 17 + 1.0) / 2
