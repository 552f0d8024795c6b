"""The cost of ZNorm: the registry's znorm-adam against torch's fused Adam, on the ResNet-50-UNet.

    python benchmarks/optimizer_step.py [--device cpu] [--batch-size 8] [--image-size 256]
        [--steps 8] [--opt-repeats 30] [--threads N] [--precision bf16|fp32]

Prints two markdown tables, each timed in one run with the rows interleaved (A, B, B, A, ...)
so background load hits both alike, and reports medians:
1. A whole training step, as ``training.engine`` runs it: bf16 autocast (``--precision fp32``
   on a CPU without native bf16, where bf16 is emulated and far slower), channels-last model
   and input, forward, Dice + BCE loss, backward, ``optimizer.step()``, ``zero_grad``. Each row
   trains its own copy of the model (same initial weights, same synthetic batch). On a loaded
   machine the step times scatter far more than the optimizer's share of them; the column "from
   the parts" (pooled forward + backward median plus each row's optimizer median) is the robust
   end-to-end ratio then.
2. The optimizer step alone on the same parameters with random gradients, plus the ZNorm
   transform alone (``znorm_``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models import build_model  # noqa: E402
from models.optimizers import build_optimizer, znorm_  # noqa: E402
from training.engine import build_loss  # noqa: E402
from training.runtime import cpu_model  # noqa: E402

FUSED = "torch.optim.Adam(fused=True)"
ZNORM = 'build_optimizer("znorm-adam")'


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _interleaved(rows: dict[str, Callable[[], object]], rounds: int,
                 device: torch.device) -> dict[str, list[float]]:
    """ms per call of each row, ``rounds`` calls each, alternating the row order every round."""
    names = list(rows)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            _sync(device)
            t0 = time.perf_counter()
            rows[name]()
            _sync(device)
            times[name].append((time.perf_counter() - t0) * 1e3)
    return times


class Trainer:
    """One model and optimizer; ``step()`` is one training step, its parts timed."""

    def __init__(self, make_optimizer: Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer],
                 batch: tuple[torch.Tensor, torch.Tensor], device: torch.device,
                 bf16: bool = True) -> None:
        torch.manual_seed(0)
        self.model = build_model().to(device).to(memory_format=torch.channels_last).train()
        self.optimizer = make_optimizer(list(self.model.parameters()))
        self.loss_fn = build_loss()
        self.batch, self.device, self.bf16 = batch, device, bf16
        self.ms: dict[str, list[float]] = {"step": [], "fwd+bwd": [], "opt": [], "cpu": []}

    def step(self) -> None:
        x, y = self.batch
        _sync(self.device)
        c0, t0 = time.process_time(), time.perf_counter()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            logits = self.model(x)
        self.loss_fn(logits.float(), y).backward()
        _sync(self.device)
        t1 = time.perf_counter()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        _sync(self.device)
        t2 = time.perf_counter()
        for key, value in (("step", t2 - t0), ("fwd+bwd", t1 - t0), ("opt", t2 - t1),
                           ("cpu", time.process_time() - c0)):
            self.ms[key].append(value * 1e3)

    def clear(self) -> None:
        for values in self.ms.values():
            values.clear()


def _step_table(trainers: dict[str, Trainer]) -> None:
    """Wall and CPU time per step, the paired ratio (each step against the fused row's step of
    the same round), and the ratio rebuilt from the parts: forward + backward is the same work
    in both rows (pooled median), so only the optimizer part differs."""
    base = trainers[FUSED].ms
    pooled = statistics.median([v for t in trainers.values() for v in t.ms["fwd+bwd"]])
    print("| row | step, median ms | min ms | CPU ms (all threads), median | optimizer.step(), "
          "median ms | vs fused Adam: medians | paired | from the parts |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, trainer in trainers.items():
        ms = trainer.ms
        paired = statistics.median(a / b for a, b in zip(ms["step"], base["step"], strict=True))
        parts = (pooled + statistics.median(ms["opt"])) / (pooled + statistics.median(base["opt"]))
        cells = [name, f"{statistics.median(ms['step']):.0f}", f"{min(ms['step']):.0f}",
                 f"{statistics.median(ms['cpu']):.0f}", f"{statistics.median(ms['opt']):.0f}",
                 f"{statistics.median(ms['step']) / statistics.median(base['step']):.3f}x",
                 f"{paired:.3f}x", f"{parts:.3f}x"]
        print("| " + " | ".join(cells) + " |")


def _alone_table(times: dict[str, list[float]]) -> None:
    reference = statistics.median(times[FUSED])
    print("| row | median ms | min ms | median vs fused Adam |")
    print("|---|---:|---:|---:|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.1f} | {min(values):.1f} | {median / reference:.3f}x |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--batch-size", type=int, default=8, help="slices per step (default 8)")
    parser.add_argument("--image-size", type=int, default=256, help="input side (default 256)")
    parser.add_argument("--warmup", type=int, default=2,
                        help="untimed training steps per row first (default 2)")
    parser.add_argument("--steps", type=int, default=8,
                        help="timed training steps per row (default 8)")
    parser.add_argument("--opt-repeats", type=int, default=30,
                        help="timed optimizer-alone steps per row (default 30)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--precision", choices=["bf16", "fp32"], default="bf16",
                        help="forward precision: bf16 autocast as in training (default), or "
                             "fp32 where the CPU has no native bf16")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    gen = torch.Generator().manual_seed(0)
    side = args.image_size
    x = torch.randn(args.batch_size, 3, side, side, generator=gen)
    y = (torch.rand(args.batch_size, 1, side, side, generator=gen) > 0.9).float()
    batch = (x.to(device).contiguous(memory_format=torch.channels_last), y.to(device))
    bf16 = args.precision == "bf16"
    trainers = {
        FUSED: Trainer(lambda p: torch.optim.Adam(p, lr=1e-4, fused=True), batch, device, bf16),
        ZNORM: Trainer(lambda p: build_optimizer("znorm-adam", p, lr=1e-4), batch, device, bf16),
    }
    params = list(trainers[FUSED].model.parameters())
    for trainer in trainers.values():
        for _ in range(args.warmup):
            trainer.step()
        trainer.clear()
    _interleaved({name: t.step for name, t in trainers.items()}, args.steps, device)

    grads = [torch.randn_like(p) for p in params]
    for trainer in trainers.values():
        for p, g in zip(trainer.model.parameters(), grads, strict=True):
            p.grad = g.clone()
    alone = {
        FUSED: trainers[FUSED].optimizer.step,
        ZNORM: trainers[ZNORM].optimizer.step,
        "znorm_ (the transform alone)": lambda: znorm_(grads),
    }
    for fn in alone.values():
        fn()
    opt_times = _interleaved(alone, args.opt_repeats, device)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
    print(f"device: {device.type} ({name}), torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}; ResNet-50-UNet, "
          f"{sum(p.numel() for p in params) / 1e6:.1f} M parameters in {len(params)} tensors")
    forward = "bf16 autocast" if bf16 else "fp32, no autocast"
    print(f"\nTraining step ({forward}, channels-last, batch {args.batch_size} at "
          f"{side}x{side}; {args.steps} interleaved steps per row after {args.warmup} warm-up)\n")
    _step_table(trainers)
    print(f"\nOptimizer step alone ({args.opt_repeats} interleaved rounds)\n")
    _alone_table(opt_times)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
