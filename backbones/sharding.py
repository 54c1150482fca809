"""Sharded inference under torchrun: each rank takes a contiguous block of the items, the blocks are gathered in
rank order, and one rank writes the files. Without a process group every helper is the one-process identity, so the
same testing code runs under ``python`` and under ``torchrun --nproc_per_node=N`` (gloo on the CPU, nccl on GPUs:
``torch.distributed``'s object collectives pickle through the backend's device, which ``init_distributed`` set).

Contiguous blocks (detectron2's ``InferenceSampler`` does the same) keep the dataset order: concatenating the
ranks' results in rank order gives the one-process order, so the written files are the same.
"""

from __future__ import annotations

from typing import Any, TypeVar

import torch.distributed as dist

from backbones.runtime import get_rank, get_world_size

__all__ = ["PeerFailed", "broadcast_from_first", "gather_in_rank_order", "shard_range"]

T = TypeVar("T")


class PeerFailed(RuntimeError):
    """Raised on the other ranks when the rank that writes the results failed (its own error says why)."""


def shard_range(num_items: int, rank: int | None = None, world_size: int | None = None) -> range:
    """The indices of ``num_items`` that ``rank`` (default: this process) handles: a contiguous block, the block
    sizes differing by at most one (``shard_range(10, r, 4)`` → 2, 3, 2, 3 items), every index in exactly one."""
    rank = get_rank() if rank is None else rank
    world_size = get_world_size() if world_size is None else world_size
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in a world of {world_size}")
    return range(num_items * rank // world_size, num_items * (rank + 1) // world_size)


def gather_in_rank_order(obj: T) -> list[T]:
    """``[rank 0's obj, rank 1's obj, ...]`` on every rank (a collective: every rank must call it); ``[obj]`` without
    a process group. ``obj`` must pickle (CPU tensors, numbers, lists, dicts)."""
    if not dist.is_initialized() or get_world_size() == 1:
        return [obj]
    gathered: list[Any] = [None] * get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_from_first(obj: T) -> T:
    """Rank 0's ``obj`` on every rank (a collective); ``obj`` itself without a process group."""
    if not dist.is_initialized() or get_world_size() == 1:
        return obj
    holder: list[Any] = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]
