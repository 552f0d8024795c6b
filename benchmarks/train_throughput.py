"""End-to-end training throughput (images/s) on the real LGG data, data loading included.

    python benchmarks/train_throughput.py [--data-dir DIR] [--batch-size 4] [--image-size 256]
        [--variants fp32,bf16+cl] [--num-workers 0,1] [--warmup 3] [--steps 12] [--threads N]

Each row runs the same step as ``training.engine.train_one_epoch``: a DataLoader over the real
``SliceDataset`` (in-memory ``SliceCache``, training augmentation, THE preprocessing), forward
under the row's precision, DiceCE loss, backward, optimizer step (ZNorm-Adam by default).
``--warmup`` steps are run first (oneDNN builds its kernels there), then ``--steps`` are timed.
Columns: data = time waiting for the next batch, compute = forward + backward, opt = optimizer
step, all in ms per step (medians). "img per CPU-s" divides the images by this process's CPU
time (all threads; main process only, so use it with --num-workers 0): on a shared, overloaded
machine it shows what the step costs, while img/s shows what the wall clock gave.
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


def run_row(
    dataset: SliceDataset, runtime: Runtime, args: argparse.Namespace, workers: int
) -> dict[str, float]:
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone=args.backbone)).to(runtime.device)
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    model.train()
    optimizer = build_optimizer(args.optimizer, model.parameters(), lr=1e-4)
    loss_fn = build_loss()
    sampler = RandomSampler(dataset, replacement=True,
                            num_samples=(args.warmup + args.steps) * args.batch_size,
                            generator=torch.Generator().manual_seed(0))
    loader = DataLoader(dataset, batch_size=args.batch_size, sampler=sampler,
                        num_workers=workers, worker_init_fn=seed_augmentation_worker,
                        pin_memory=runtime.device.type == "cuda", drop_last=True)
    data_ms, compute_ms, opt_ms, step_ms = [], [], [], []
    cpu_s = 0.0
    iterator = iter(loader)
    for step in range(args.warmup + args.steps):
        c0 = time.process_time()
        t0 = time.perf_counter()
        batch = next(iterator)
        inputs = runtime.to_input(batch["image"])
        targets = batch["mask"].to(runtime.device)
        t1 = time.perf_counter()
        with runtime.autocast():
            logits = model(inputs)
        loss = loss_fn(logits.float(), targets)
        loss.backward()
        _sync(runtime.device)
        t2 = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(runtime.device)
        t3 = time.perf_counter()
        if step >= args.warmup:
            cpu_s += time.process_time() - c0
            data_ms.append((t1 - t0) * 1e3)
            compute_ms.append((t2 - t1) * 1e3)
            opt_ms.append((t3 - t2) * 1e3)
            step_ms.append((t3 - t0) * 1e3)
    del iterator
    total_s = sum(step_ms) / 1e3
    return {
        "img_s": args.steps * args.batch_size / total_s,
        "img_cpu_s": args.steps * args.batch_size / cpu_s,
        "ms_step": statistics.median(step_ms),
        "data": statistics.median(data_ms),
        "compute": statistics.median(compute_ms),
        "opt": statistics.median(opt_ms),
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="kaggle_3m folder")
    parser.add_argument("--patients", type=int, default=6, help="patients to cache (default 6)")
    parser.add_argument("--image-size", type=int, default=256, help="model input side")
    parser.add_argument("--batch-size", type=int, default=4, help="slices per step (default 4)")
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
    header = ("| device | precision | batch | workers | img/s | ms/step | data ms | "
              "fwd+bwd ms | opt ms | img per CPU-s |")
    print(header)
    print("|---" * 10 + "|")
    for workers in (int(w) for w in args.num_workers.split(",")):
        for variant in args.variants.split(","):
            runtime = parse_variant(variant.strip(), device)
            row = run_row(dataset, runtime, args, workers)
            print(f"| {device.type} | {variant} | {args.batch_size} | {workers} | "
                  f"{row['img_s']:.2f} | {row['ms_step']:.0f} | {row['data']:.0f} | "
                  f"{row['compute']:.0f} | {row['opt']:.0f} | {row['img_cpu_s']:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
