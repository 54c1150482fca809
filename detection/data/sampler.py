"""Aspect-ratio grouped batches, deterministic per (seed, epoch) and shardable across distributed workers, with
each image once an epoch (:class:`GroupedBatchSampler`) or repeated by its rarest class (:class:`RepeatFactorSampler`,
LVIS's repeat-factor sampling); :func:`build_train_sampler` picks one by name and logs the epoch size."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import torch
from torch.utils.data import Sampler

logger = logging.getLogger(__name__)


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

    def epoch_indices(self, generator: torch.Generator) -> torch.Tensor:
        """The dataset indices of this epoch before shuffling (each image once); subclasses repeat some."""
        return torch.arange(len(self.groups))

    def _global_batches(self) -> list[torch.Tensor]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        global_size = self.batch_size * self.world_size
        batches: list[torch.Tensor] = []
        indices = self.epoch_indices(generator)
        for group in torch.unique(self.groups).tolist():
            members = indices[self.groups[indices] == group]
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
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        indices = self.epoch_indices(generator)
        counts = torch.bincount(self.groups[indices]).tolist() if len(indices) else []
        if self.drop_last:
            return sum(c // global_size for c in counts)
        return sum(-(-c // global_size) for c in counts)


def image_classes(dataset: Any) -> list[set[int]]:
    """The set of labels in each training image (``annotation(i)``, no pixels read), for a dataset or a union of
    them (``datasets``, in index order)."""
    parts = getattr(dataset, "datasets", [dataset])
    return [set(part.annotation(i).labels.tolist()) for part in parts for i in range(len(part))]


def repeat_factors(classes_per_image: Sequence[set[int]], threshold: float) -> list[float]:
    """LVIS's repeat factors (Gupta et al., 2019, §4.2): with ``f(c)`` the fraction of images that contain class
    ``c``, ``r(c) = max(1, sqrt(threshold / f(c)))``, and an image's factor is the largest over its classes (1 for an
    image without objects)."""
    total = max(len(classes_per_image), 1)
    counts: dict[int, int] = {}
    for labels in classes_per_image:
        for label in labels:
            counts[label] = counts.get(label, 0) + 1
    class_factor = {c: max(1.0, math.sqrt(threshold / (n / total))) for c, n in counts.items()}
    return [max((class_factor[c] for c in labels), default=1.0) for labels in classes_per_image]


class RepeatFactorSampler(GroupedBatchSampler):
    """:class:`GroupedBatchSampler` over an epoch in which image ``i`` appears ``floor(r_i)`` times, plus once more
    with probability ``r_i - floor(r_i)`` (stochastic rounding, drawn from the ``(seed, epoch)`` generator before
    the shuffle): every worker draws the same epoch and takes its own slice of each global batch, and a resumed run
    draws the same epochs again. ``factors`` come from :func:`repeat_factors`."""

    def __init__(self, dataset: HasImageInfo, batch_size: int, *, factors: Sequence[float], **kwargs: Any) -> None:
        super().__init__(dataset, batch_size, **kwargs)
        if len(factors) != len(self.groups):
            raise ValueError(f"{len(factors)} repeat factors for {len(self.groups)} images")
        self.factors = torch.as_tensor(factors, dtype=torch.float64)

    @property
    def expected_epoch_size(self) -> float:
        return float(self.factors.sum())

    def epoch_indices(self, generator: torch.Generator) -> torch.Tensor:
        whole = self.factors.floor()
        extra = torch.rand(len(self.factors), generator=generator, dtype=torch.float64) < self.factors - whole
        counts = (whole + extra).to(torch.int64)
        return torch.repeat_interleave(torch.arange(len(self.factors)), counts)


def build_train_sampler(dataset: Any, *, kind: str, batch_size: int, seed: int, rank: int, world_size: int,
                        repeat_threshold: float = 0.001) -> GroupedBatchSampler:
    """The training batch sampler ``kind`` (config ``data.sampler``): ``"grouped"`` or ``"repeat_factor"``
    (with ``data.repeat_threshold``); the log states the effective epoch size."""
    common = dict(batch_size=batch_size, seed=seed, rank=rank, world_size=world_size)
    if kind == "grouped":
        return GroupedBatchSampler(dataset, **common)
    if kind != "repeat_factor":
        raise ValueError(f"unknown sampler {kind!r}; known: grouped, repeat_factor")
    factors = repeat_factors(image_classes(dataset), repeat_threshold)
    sampler = RepeatFactorSampler(dataset, factors=factors, **common)
    repeated = sum(f > 1 for f in factors)
    logger.info("repeat-factor sampling (threshold %g): an epoch is %.1f images on average (%d distinct; %d with "
                "a factor above 1, the largest %.2f)", repeat_threshold, sampler.expected_epoch_size, len(factors),
                repeated, max(factors, default=1.0))
    return sampler
