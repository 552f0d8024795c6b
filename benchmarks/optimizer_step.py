"""Optimizer step cost on the ResNet-50-UNet's real parameter set (32.1 M parameters, 199 tensors).

    python benchmarks/optimizer_step.py [--device cpu] [--repeats 30] [--threads N]

Prints a markdown table: ms per step (median and min of interleaved rounds) for fused Adam,
ZNormAdam, the ZNorm transform alone and the naive Python loop, with the ratio to fused Adam.
Rounds are interleaved (A, B, C, A, B, C, ...) so background load hits every row alike.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models import build_model  # noqa: E402
from models.optimizers import ZNormAdam, znorm_  # noqa: E402


def naive_znorm_(grads: list[torch.Tensor], eps: float = 1e-8) -> None:
    """The loop of the paper's description, as a baseline row (not used by the project)."""
    for g in grads:
        if g.dim() >= 2:
            g.sub_(g.mean()).div_(g.std() + eps)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument(
        "--repeats", type=int, default=30, help="timed rounds per row (default: 30)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    torch.manual_seed(0)
    params = [p.detach().to(device).requires_grad_() for p in build_model().parameters()]
    for p in params:
        p.grad = torch.randn_like(p)
    grads = [p.grad for p in params]
    n_params = sum(p.numel() for p in params)

    fused = torch.optim.Adam(params, lr=1e-4, fused=True)
    ours = ZNormAdam(params, lr=1e-4)
    chunked = ZNormAdam(params, lr=1e-4)
    chunked.tensorwise_kernel = False  # the two-launch layout, for comparison

    def naive_step() -> None:
        naive_znorm_(grads)
        fused.step()

    rows: dict[str, Callable[[], None]] = {
        "torch.optim.Adam(fused=True).step()": fused.step,
        "ZNormAdam.step()": ours.step,
        "ZNormAdam.step(), chunked two-launch kernels": chunked.step,
        "ZNorm transform alone (znorm_)": lambda: znorm_(grads),
        "naive loop + fused Adam": naive_step,
    }
    times: dict[str, list[float]] = {name: [] for name in rows}
    if device.type != "cpu":
        del rows["ZNormAdam.step(), chunked two-launch kernels"]
    for fn in rows.values():  # warm-up: state allocation, first-call costs
        fn()
        fn()
    for _ in range(args.repeats):
        for name, fn in rows.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[name].append((time.perf_counter() - t0) * 1e3)

    base = statistics.median(times["torch.optim.Adam(fused=True).step()"])
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    print(
        f"device: {device.type} ({name or platform.machine()}), torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}, {n_params / 1e6:.1f} M parameters in "
        f"{len(params)} tensors, {args.repeats} interleaved rounds"
    )
    print()
    print("| step | median ms | min ms | median vs fused Adam |")
    print("|---|---:|---:|---:|")
    for row, values in times.items():
        med = statistics.median(values)
        print(f"| {row} | {med:.2f} | {min(values):.2f} | {med / base:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
