"""Aspect-ratio grouped batches, deterministic per (seed, epoch) and shardable across distributed workers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import torch
from torch.utils.data import Sampler


class HasImageInfo(Protocol):
    def __len__(self) -> int: ...

    def image_info(self, index: int) -> dict[str, Any]: ...


def aspect_groups(dataset: HasImageInfo) -> list[int]:
    """Group id per image: 0 for landscape or square (w ≥ h), 1 for portrait, from ``image_info`` (no pixels)."""
    groups = []
    for i in range(len(dataset)):
        info = dataset.image_info(i)
        groups.append(0 if info["width"] >= info["height"] else 1)
    return groups


class GroupedBatchSampler(Sampler[list[int]]):
    """Yields batches of dataset indices whose images share an aspect group, so padding wastes little.

    Each epoch, every group is shuffled with a generator seeded from ``(seed, epoch)``, cut into *global* batches of
    ``batch_size × world_size`` indices, and the global batches are shuffled; worker ``rank`` takes slice
    ``[rank·batch_size, (rank+1)·batch_size)`` of each. All workers therefore yield the same number of batches and
    each step's batches come from one group on every worker (the DistributedSampler contract, made group-aware).
    A group's last partial global batch is filled by wrapping around the group (``drop_last=False``) or dropped.
    Call :meth:`set_epoch` before each epoch, as with ``DistributedSampler``.
    """

    def __init__(
        self,
        dataset: HasImageInfo,
        batch_size: int,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        drop_last: bool = False,
        groups: list[int] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.epoch = 0
        self.groups = torch.as_tensor(groups if groups is not None else aspect_groups(dataset), dtype=torch.int64)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _global_batches(self) -> list[torch.Tensor]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        global_size = self.batch_size * self.world_size
        batches: list[torch.Tensor] = []
        for group in torch.unique(self.groups).tolist():
            members = torch.nonzero(self.groups == group).flatten()
            if self.shuffle:
                members = members[torch.randperm(len(members), generator=generator)]
            if self.drop_last:
                members = members[: len(members) // global_size * global_size]
            elif len(members) % global_size:
                repeats = -(-global_size // len(members)) + 1
                padding = members.repeat(repeats)[: global_size - len(members) % global_size]
                members = torch.cat([members, padding])
            batches.extend(members.split(global_size))
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
        return [b for b in batches if len(b) == global_size]

    def __iter__(self) -> Iterator[list[int]]:
        start = self.rank * self.batch_size
        for batch in self._global_batches():
            yield batch[start : start + self.batch_size].tolist()

    def __len__(self) -> int:
        global_size = self.batch_size * self.world_size
        counts = torch.bincount(self.groups).tolist() if len(self.groups) else []
        if self.drop_last:
            return sum(c // global_size for c in counts)
        return sum(-(-c // global_size) for c in counts)
