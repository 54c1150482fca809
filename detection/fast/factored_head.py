"""The conv5 head's first block on RoIPool's factored output: its 1×1 layers run once per distinct pooled vector.

RoIPool's ``[R, C, 14, 14]`` output repeats itself: a RoI smaller than 14 cells on the stride-16 map fills several
bins from one cell, and the ~300 overlapping proposals share windows. ``detection.fast.gather_pool.roi_pool_factored``
returns it as ``rows[index]`` with ``rows`` the ``U`` distinct vectors (~19% of ``R · 14²`` for 300 proposals on a
600×800 image, ~38% of the ``R · 7²`` positions a stride-2 shortcut reads). A 1×1 convolution followed by per-channel
layers (frozen BN, ReLU) maps each position on its own, so applying it to ``rows`` and then gathering gives the dense
result exactly, for that fraction of the work. In a bottleneck conv5_1 these are the reducing 1×1 (1024→512 on every
bin) and the projection shortcut (1024→2048 on the even bins): about 21% of R50-C4's inference FLOPs, cut to ~6%.

The distinct rows are laid out as a channels-last ``[U/64, C, 1, 64]`` map for the convolution: oneDNN runs a 1×1
convolution on ``U`` separate 1×1 maps at a third of its speed on a real spatial map.
Only bottleneck blocks take this path (the 3×3 conv1 of a basic block is not per-position); others get
``head(pooled.dense())``, which is the same computation. The block itself is written once, for both fast heads,
in ``detection.fast.conv5_first_block``; this module supplies how its per-position layers run (on distinct rows).

:class:`FactoredC4BoxHead` is the box head that runs it: ``detection.fast.optimize`` swaps it in for a
``C4BoxHead`` with a RoIPool pooler and a bottleneck conv5 (it shows in ``repr(model)``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from backbones.c4 import C4Head
from detection.fast.conv5_first_block import head_forward, supports_first_block
from detection.fast.gather_pool import FactoredRoIPool, GatherRoIPool
from detection.modeling.box_head import C4BoxHead

__all__ = ["FactoredC4BoxHead", "factored_head_forward", "supports_factored_head"]

_GROUP = 64  # distinct rows per row of the channels-last map handed to the convolution


class _DistinctRows:
    """:class:`FactoredRoIPool` as ``detection.fast.conv5_first_block.PooledBins``: per-position layers run on
    the distinct rows, then are gathered into bins."""

    def __init__(self, pooled: FactoredRoIPool) -> None:
        self.pooled = pooled

    def dense(self) -> Tensor:
        return self.pooled.dense()

    def per_position(self, layers: Sequence[nn.Module], stride: int, activation: nn.Module | None) -> Tensor:
        per_row = [*layers] if activation is None else [*layers, activation]  # ReLU too: per position
        return _apply_pointwise(per_row, self.pooled.subsample(stride))


def _apply_pointwise(layers: list[nn.Module], pooled: FactoredRoIPool) -> Tensor:
    """``layers`` (stride-1 1×1 conv + per-channel layers) on every bin of ``pooled``: ``[R, C_out, P, P]``,
    channels-last."""
    rows = pooled.rows
    u, c = rows.shape
    padded = -(-u // _GROUP) * _GROUP
    if padded != u:
        rows = F.pad(rows, (0, 0, 0, padded - u))
    x = rows.view(padded // _GROUP, 1, _GROUP, c).permute(0, 3, 1, 2)
    for layer in layers:
        x = layer(x)
    channels = x.shape[1]
    out = x.permute(0, 2, 3, 1).reshape(padded, channels)
    r, p = pooled.index.shape[:2]
    return out.index_select(0, pooled.index.reshape(-1)).view(r, p, p, channels).permute(0, 3, 1, 2)


def supports_factored_head(head: nn.Module) -> bool:
    """Whether ``head`` is a C4 conv5 whose first block starts with per-position layers (a bottleneck's 1×1)."""
    return supports_first_block(head)


def factored_head_forward(head: C4Head, pooled: FactoredRoIPool) -> Tensor:
    """``head(pooled.dense())``, computing conv5_1's 1×1 layers once per distinct pooled vector: ``[R, C_out]``."""
    if pooled.index.shape[0] == 0 or not supports_first_block(head):
        return head(pooled.dense())
    return head_forward(head, _DistinctRows(pooled))


class FactoredC4BoxHead(C4BoxHead):
    """``C4BoxHead`` with :class:`GatherRoIPool` whose output stays factored into conv5_1
    (:func:`factored_head_forward`). Same parameters and state-dict keys as the box head it replaces."""

    pooler: GatherRoIPool

    def __init__(self, *, pooler: GatherRoIPool, head: C4Head) -> None:
        super().__init__(pooler=pooler, head=head)

    def forward(self, features: Tensor, boxes: list[Tensor], image_sizes: list[tuple[int, int]]) -> Tensor:
        return factored_head_forward(self.head, self.pooler.factored(features, boxes))
