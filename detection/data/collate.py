"""Batch collation for detection: lists of differently sized images, dropping unreadable samples."""

from __future__ import annotations

from typing import Any

import torch


class TargetList(list):
    """A plain list of target dicts with ``num_skipped``: how many ``None`` samples were dropped from the batch.

    The attribute survives DataLoader worker pickling and ``pin_memory``.
    """

    num_skipped: int = 0


def collate(batch: list[tuple[torch.Tensor, dict[str, Any]] | None]) -> tuple[list[torch.Tensor], TargetList]:
    """``[(image, target) | None, ...] -> (images, targets)``.

    ``None`` samples (unreadable images, already reported by the dataset) are dropped and counted in
    ``targets.num_skipped``; a batch where every image was unreadable gives two empty lists.
    """
    images: list[torch.Tensor] = []
    targets = TargetList()
    for sample in batch:
        if sample is None:
            targets.num_skipped += 1
            continue
        image, target = sample
        images.append(image)
        targets.append(target)
    return images, targets
