"""End-to-end training throughput (images/s) on the real LGG data, data loading included.

    python benchmarks/train_throughput.py [--data-dir DIR] [--batch-size 4,8] [--image-size 256]
        [--variants fp32,bf16+cl] [--num-workers 0,1] [--warmup 3] [--steps 12] [--threads N]

Each row runs the same step as ``training.engine.train_one_epoch``: a DataLoader over the real
``SliceDataset`` (in-memory ``SliceCache``, training augmentation, THE preprocessing), forward
under the row's precision, DiceCE loss, backward, optimizer step (ZNorm-Adam by default).
``--warmup`` steps are run first (oneDNN builds its kernels there), then ``--steps`` are timed,
interleaved over the rows (A, B, A, B, ...) so that load from other processes hits all alike.

Columns:
- img/s: images / total timed wall time (data loading included).
- img/s (median step): batch / median step time, robust to load spikes from other processes.
- data, fwd+bwd, opt: median ms per step waiting for the batch, in forward + backward, and in
  the optimizer step.
- img per CPU-s: images / this process's CPU time (all threads; main process only, so use it
  with --num-workers 0). On a shared, overloaded machine it shows what a step costs.
Variants: fp32, bf16 (autocast), +cl (channels-last model and input).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, RandomSampler

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.augmentation import build_augmentation  # noqa: E402
from data.dataset import SliceCache, SliceDataset, seed_augmentation_worker  # noqa: E402
from data.kaggle3m import scan_dataset  # noqa: E402
from data.preprocessing import PreprocessingConfig  # noqa: E402
from models.network import ModelConfig, build_model  # noqa: E402
from models.optimizers import build_optimizer  # noqa: E402
from training.data_loading import select_patients  # noqa: E402
from training.engine import build_loss  # noqa: E402
from training.runtime import Runtime, cpu_model, resolve_device  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "lgg" / "kaggle_3m"


def parse_variant(name: str, device: torch.device) -> Runtime:
    parts = name.split("+")
    if parts[0] not in ("fp32", "bf16") or not set(parts[1:]) <= {"cl"}:
        raise SystemExit(f"unknown variant {name!r}: use fp32, bf16, fp32+cl or bf16+cl")
    dtype = torch.bfloat16 if parts[0] == "bf16" else None
    return Runtime(device, dtype, channels_last="cl" in parts[1:])


class Row:
    """One configuration: its own model, optimizer and DataLoader, stepped on demand."""

    def __init__(self, dataset: SliceDataset, variant: str, device: torch.device,
                 args: argparse.Namespace, workers: int, batch: int) -> None:
        self.variant, self.workers, self.batch = variant, workers, batch
        self.runtime = parse_variant(variant, device)
        torch.manual_seed(0)
        model = build_model(ModelConfig(backbone=args.backbone)).to(device)
        if self.runtime.channels_last:
            model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.model = model.train()
        self.optimizer = build_optimizer(args.optimizer, model.parameters(), lr=1e-4)
        self.loss_fn = build_loss()
        sampler = RandomSampler(dataset, replacement=True,
                                num_samples=(args.warmup + args.steps) * batch,
                                generator=torch.Generator().manual_seed(0))
        loader = DataLoader(dataset, batch_size=batch, sampler=sampler,
                            num_workers=workers, worker_init_fn=seed_augmentation_worker,
                            pin_memory=device.type == "cuda", drop_last=True)
        self.iterator = iter(loader)
        self.data_ms: list[float] = []
        self.compute_ms: list[float] = []
        self.opt_ms: list[float] = []
        self.step_ms: list[float] = []
        self.cpu_s = 0.0

    def step(self, timed: bool) -> None:
        runtime = self.runtime
        c0, t0 = time.process_time(), time.perf_counter()
        batch = next(self.iterator)
        inputs = runtime.to_input(batch["image"])
        targets = batch["mask"].to(runtime.device)
        t1 = time.perf_counter()
        with runtime.autocast():
            logits = self.model(inputs)
        self.loss_fn(logits.float(), targets).backward()
        _sync(runtime.device)
        t2 = time.perf_counter()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        _sync(runtime.device)
        t3 = time.perf_counter()
        if timed:
            self.cpu_s += time.process_time() - c0
            self.data_ms.append((t1 - t0) * 1e3)
            self.compute_ms.append((t2 - t1) * 1e3)
            self.opt_ms.append((t3 - t2) * 1e3)
            self.step_ms.append((t3 - t0) * 1e3)

    def cells(self) -> list[str]:
        images = len(self.step_ms) * self.batch
        median = statistics.median(self.step_ms)
        return [
            self.runtime.device.type, self.variant, str(self.batch), str(self.workers),
            f"{images / (sum(self.step_ms) / 1e3):.2f}",
            f"{self.batch * 1e3 / median:.2f}",
            f"{median:.0f}",
            f"{statistics.median(self.data_ms):.0f}",
            f"{statistics.median(self.compute_ms):.0f}",
            f"{statistics.median(self.opt_ms):.0f}",
            f"{images / self.cpu_s:.2f}",
        ]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="kaggle_3m folder")
    parser.add_argument("--patients", type=int, default=6, help="patients to cache (default 6)")
    parser.add_argument("--image-size", type=int, default=256, help="model input side")
    parser.add_argument("--batch-size", default="4", help="comma list of slices per step (4)")
    parser.add_argument("--variants", default="fp32,bf16+cl",
                        help="comma list of fp32, bf16, fp32+cl, bf16+cl (default fp32,bf16+cl)")
    parser.add_argument("--num-workers", default="0", help="comma list of DataLoader workers")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    parser.add_argument("--steps", type=int, default=12, help="timed steps (default 12)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--backbone", default="resnet50", help="resnet18/34/50 (default 50)")
    parser.add_argument("--optimizer", default="znorm-adam", help="optimizer name")
    parser.add_argument("--augmentation", default="default", help="light/default/strong")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)

    patients = select_patients(scan_dataset(args.data_dir), args.patients)
    cache = SliceCache(patients, progress=False)
    preprocessing = PreprocessingConfig(image_size=args.image_size)
    augment = build_augmentation(args.image_size, args.augmentation, seed=0)
    dataset = SliceDataset(patients, preprocessing, augment=augment, cache=cache)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
    print(f"# {args.backbone}-UNet {args.image_size}x{args.image_size}, {args.optimizer}, "
          f"{len(dataset)} cached slices, augmentation {args.augmentation}; {name}, "
          f"{torch.get_num_threads()} torch threads; {args.warmup} warm-up + {args.steps} "
          "timed steps")
    header = ("| device | precision | batch | workers | img/s | img/s (median step) | ms/step | "
              "data ms | fwd+bwd ms | opt ms | img per CPU-s |")
    print(header)
    print("|---" * 11 + "|")
    rows = [Row(dataset, variant.strip(), device, args, int(workers), int(batch))
            for batch in args.batch_size.split(",")
            for workers in args.num_workers.split(",")
            for variant in args.variants.split(",")]
    for _ in range(args.warmup):
        for row in rows:
            row.step(timed=False)
    # Interleaved (A, B, C, A, B, C, ...): background load hits every row alike.
    for _ in range(args.steps):
        for row in rows:
            row.step(timed=True)
    for row in rows:
        print("| " + " | ".join(row.cells()) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
