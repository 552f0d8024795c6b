"""What this CPU can do at best for the ResNet-50-UNet: the model's work against the machine's
measured matrix-multiply rate.

    python benchmarks/compute_ceiling.py [--image-size 256] [--threads N] [--repeats 5]

Prints two markdown tables:
1. GFLOP per slice of the network (``torch.utils.flop_counter``; forward, and forward + backward
   as in a training step), and the measured GFLOP/s (fp32 and bf16, this machine's threads) of a
   large matrix multiply and of the network's largest convolution: the rates the network's
   convolutions (oneDNN) can approach, not exceed.
2. The ceilings that follow: slices/s for inference and images/s for training if every FLOP ran
   at the better of those two rates, with nothing else (no data loading, normalisation,
   activations or optimizer).

Throughput and latency targets above these ceilings cannot be met on this machine by tuning; they
need a faster matrix engine (e.g. AMX on recent Intel Xeons) or a GPU.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models import ModelConfig, build_model  # noqa: E402
from models.precision import cpu_supports_bf16  # noqa: E402


def model_gflop(backbone: str, size: int) -> tuple[float, float]:
    """(forward, forward + backward) GFLOP for one slice."""
    net = build_model(ModelConfig(backbone=backbone))  # type: ignore[arg-type]
    x = torch.randn(1, 3, size, size)
    net.eval()
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        net(x)
    forward = counter.get_total_flops() / 1e9
    net.train()
    with FlopCounterMode(display=False) as counter:
        net(x).sum().backward()
    return forward, counter.get_total_flops() / 1e9


def matmul_gflops(dtype: torch.dtype, n: int, repeats: int) -> float:
    """Median GFLOP/s of an ``n x n`` by ``n x n`` matrix multiply."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.mm(a, b)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e9


def conv_gflops(dtype: torch.dtype, repeats: int) -> float:
    """Median GFLOP/s of the network's largest convolution (decoder, 2048 -> 256 channels, 3x3,
    16 x 16, batch 8), channels-last as in the project: oneDNN's best case on this model."""
    x = torch.randn(8, 2048, 16, 16).to(dtype).contiguous(memory_format=torch.channels_last)
    conv = torch.nn.Conv2d(2048, 256, 3, padding=1).to(dtype).to(
        memory_format=torch.channels_last  # type: ignore[call-overload]
    )
    flop = 2 * 8 * 256 * 16 * 16 * 2048 * 9
    with torch.inference_mode():
        conv(x)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            conv(x)
            times.append(time.perf_counter() - start)
    return flop / statistics.median(times) / 1e9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--image-size", type=int, default=256, help="model input side")
    parser.add_argument("--backbone", default="resnet50", help="resnet18, resnet34 or resnet50")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--repeats", type=int, default=5, help="timed matrix multiplies")
    parser.add_argument("--matrix", type=int, default=4096, help="matrix side")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    forward, train_step = model_gflop(args.backbone, args.image_size)
    dtypes = {"fp32": torch.float32}
    if cpu_supports_bf16():
        dtypes["bf16"] = torch.bfloat16
    measured = {
        name: (matmul_gflops(dtype, args.matrix, args.repeats), conv_gflops(dtype, args.repeats))
        for name, dtype in dtypes.items()
    }
    rates = {name: max(pair) for name, pair in measured.items()}
    amx = bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())
    print(f"# {args.backbone}-UNet at {args.image_size}x{args.image_size}; torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads; native bf16: "
          f"{cpu_supports_bf16()}, AMX: {amx}\n")
    print("| quantity | value |\n|---|---:|")
    print(f"| forward GFLOP per slice | {forward:.1f} |")
    print(f"| forward + backward GFLOP per slice | {train_step:.1f} |")
    for name, (matmul, conv) in measured.items():
        print(f"| {name} matmul {args.matrix}x{args.matrix} GFLOP/s | {matmul:.0f} |")
        print(f"| {name} largest convolution GFLOP/s | {conv:.0f} |")
    print("\n| precision | inference slices/s at most | ms per slice at least | "
          "training images/s at most |\n|---|---:|---:|---:|")
    for name, rate in rates.items():
        print(f"| {name} | {rate / forward:.1f} | {1000 * forward / rate:.0f} | "
              f"{rate / train_step:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
