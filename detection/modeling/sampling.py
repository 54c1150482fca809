"""Balanced sampling of positives and negatives for the RPN (256 anchors, ≤ 50% positive) and the RoI head
(128 RoIs, 25% foreground)."""

from __future__ import annotations

import torch
from torch import Tensor


def sample_labels(
    labels: Tensor, batch_size: int, positive_fraction: float, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Pick at most ``batch_size·positive_fraction`` positives (``labels ≥ 1``), fill the rest with negatives
    (``labels == 0``); ``labels == -1`` are ignored. Returns indices ``(positive [P], negative [Q])``, P + Q ≤
    ``batch_size``, chosen uniformly at random without replacement.
    """
    positive = torch.nonzero(labels >= 1).squeeze(1)
    negative = torch.nonzero(labels == 0).squeeze(1)
    num_pos = min(positive.numel(), int(batch_size * positive_fraction))
    num_neg = min(negative.numel(), batch_size - num_pos)
    perm_pos = torch.randperm(positive.numel(), generator=generator, device="cpu")[:num_pos]
    perm_neg = torch.randperm(negative.numel(), generator=generator, device="cpu")[:num_neg]
    return positive[perm_pos.to(positive.device)], negative[perm_neg.to(negative.device)]
