"""Data-parallel training under torchrun: joining the process group, collectives, replica checks.

Without torchrun (``WORLD_SIZE`` unset or 1) every function here is a no-op, so the loop reads
the same for one process and for many.
"""

from __future__ import annotations

import datetime
import hashlib
from typing import Any

import torch
import torch.distributed as dist

from training.config import DistributedEnv
from training.runtime import Runtime, resolve_amp, resolve_device


def setup_runtime(device: str, amp: str, channels_last: bool) -> Runtime:
    """Join the torchrun process group when launched by torchrun and resolve the device."""
    env = DistributedEnv()
    dev = resolve_device(device, env.LOCAL_RANK)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick its kernels
    if env.WORLD_SIZE > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30))
    return Runtime(dev, resolve_amp(amp, dev), channels_last, env.RANK, env.WORLD_SIZE)


def teardown(runtime: Runtime) -> None:
    if runtime.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(runtime: Runtime) -> None:
    if runtime.distributed:
        dist.barrier()


def all_reduce_sum(runtime: Runtime, tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all ranks (in place; returned for convenience)."""
    if runtime.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def sync_buffers(runtime: Runtime, model: torch.nn.Module) -> None:
    """Average floating buffers (BatchNorm running statistics) over ranks.

    DDP keeps parameters identical but every rank updates its own BatchNorm statistics in the
    last forward pass; averaging them makes every replica, and the checkpoint, the same.
    """
    if not runtime.distributed:
        return
    for buffer in model.buffers():
        if buffer.is_floating_point():
            dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
            buffer.div_(runtime.world_size)


def state_sha256(model: torch.nn.Module) -> str:
    """SHA-256 over the model's state (names, dtypes, shapes and bytes, in name order)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else
                      t.view(torch.int16).numpy().tobytes())
    return digest.hexdigest()


def replica_check(runtime: Runtime, model: torch.nn.Module) -> dict[str, Any]:
    """Under DDP: every rank's state hash, stored in the card; diverged replicas are an error."""
    if not runtime.distributed:
        return {}
    mine = state_sha256(model)
    hashes: list[str | None] = [None] * runtime.world_size
    dist.all_gather_object(hashes, mine)
    if len(set(hashes)) != 1:
        raise RuntimeError(f"DDP replicas diverged: state hashes per rank {hashes}")
    return {"distributed": {"world_size": runtime.world_size, "replica_state_sha256": hashes}}
