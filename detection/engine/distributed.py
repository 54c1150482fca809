"""torchrun / DistributedDataParallel helpers. Without torchrun's environment everything is a 1-process no-op."""

from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist


def init_distributed(device: torch.device) -> tuple[int, int]:
    """Join the process group torchrun describes (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``); gloo on CPU, nccl on
    CUDA. Returns ``(rank, world_size)``."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1 or dist.is_initialized():
        return get_rank(), get_world_size()
    backend = "nccl" if device.type == "cuda" else "gloo"
    # A finite timeout: if a peer dies, the survivors fail instead of waiting forever.
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=10))
    return dist.get_rank(), dist.get_world_size()


def get_rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def _reduce_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def all_reduce_mean(values: dict[str, float]) -> dict[str, float]:
    """Average scalar logs across workers (for printing only)."""
    if not dist.is_initialized() or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=_reduce_device())
    dist.all_reduce(t)
    return {k: float(v) / get_world_size() for k, v in zip(keys, t)}


def any_true(flag: bool) -> bool:
    """True on every worker if ``flag`` is true on any (keeps workers in step when one must stop)."""
    if not dist.is_initialized():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=_reduce_device())
    dist.all_reduce(t)
    return bool(t.item() > 0)


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
