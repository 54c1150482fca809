"""The conv5 head's first block on RoIPool's factored output: its 1×1 layers run once per distinct pooled vector.

RoIPool's ``[R, C, 14, 14]`` output repeats itself: a RoI smaller than 14 cells on the stride-16 map fills several
bins from one cell, and the ~300 overlapping proposals share windows. ``detection.modeling.pooling.roi_pool_factored``
returns it as ``rows[index]`` with ``rows`` the ``U`` distinct vectors (~19% of ``R · 14²`` for 300 proposals on a
600×800 image, ~38% of the ``R · 7²`` positions a stride-2 shortcut reads). A 1×1 convolution followed by per-channel
layers (frozen BN, ReLU) maps each position on its own, so applying it to ``rows`` and then gathering gives the dense
result exactly, for that fraction of the work. In a bottleneck conv5_1 these are the reducing 1×1 (1024→512 on every
bin) and the projection shortcut (1024→2048 on the even bins): about 21% of R50-C4's inference FLOPs, cut to ~6%.

The distinct rows are laid out as a channels-last ``[U/64, C, 1, 64]`` map for the convolution: oneDNN runs a 1×1
convolution on ``U`` separate 1×1 maps at a third of its speed on a real spatial map.
Only bottleneck blocks take this path (the 3×3 conv1 of a basic block is not per-position); others get
``head(pooled.dense())``, which is the same computation.

:class:`FactoredC4BoxHead` is the box head that runs it: ``detection.fast.optimize`` swaps it in for a
``C4BoxHead`` with a RoIPool pooler and a bottleneck conv5 (it shows in ``repr(model)``).
"""

from __future__ import annotations

import copy

import torch.nn.functional as F
from torch import Tensor, nn

from backbones.c4 import C4Head
from backbones.frozen_bn import FrozenBatchNorm2d
from backbones.resnet import Bottleneck
from detection.modeling.box_head import C4BoxHead
from detection.modeling.pooling import FactoredRoIPool, GatherRoIPool

__all__ = ["FactoredC4BoxHead", "factored_head_forward", "supports_factored_head"]

_GROUP = 64  # distinct rows per row of the channels-last map handed to the convolution
_PER_CHANNEL = (nn.Identity, nn.ReLU, FrozenBatchNorm2d)


def _pointwise_stride(layers: list[nn.Module]) -> int | None:
    """The stride of ``layers`` if they are a 1×1 convolution followed by per-channel layers, else ``None``."""
    conv, rest = layers[0], layers[1:]
    if not (isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1) and conv.padding == (0, 0)):
        return None
    if not all(isinstance(m, _PER_CHANNEL) or (isinstance(m, nn.BatchNorm2d) and _uses_running_stats(m)) for m in rest):
        return None
    if conv.stride[0] != conv.stride[1]:
        return None
    return conv.stride[0]


def _uses_running_stats(bn: nn.BatchNorm2d) -> bool:
    return not bn.training and bn.track_running_stats and bn.running_mean is not None


def _apply_pointwise(layers: list[nn.Module], pooled: FactoredRoIPool) -> Tensor:
    """``layers`` (1×1 conv + per-channel layers) on every bin of ``pooled``: ``[R, C_out, P, P]``, channels-last."""
    rows = pooled.rows
    u, c = rows.shape
    padded = -(-u // _GROUP) * _GROUP
    if padded != u:
        rows = F.pad(rows, (0, 0, 0, padded - u))
    x = rows.view(padded // _GROUP, 1, _GROUP, c).permute(0, 3, 1, 2)
    conv = copy.copy(layers[0])  # shares the parameters; the stride is spent on choosing the bins
    conv.stride = (1, 1)
    for layer in [conv, *layers[1:]]:
        x = layer(x)
    channels = x.shape[1]
    out = x.permute(0, 2, 3, 1).reshape(padded, channels)
    r, p = pooled.index.shape[:2]
    return out.index_select(0, pooled.index.reshape(-1)).view(r, p, p, channels).permute(0, 3, 1, 2)


def _first_block(block: Bottleneck, pooled: FactoredRoIPool) -> Tensor:
    """``block(pooled.dense())`` with its 1×1 layers on distinct rows; mirrors ``Bottleneck.forward``
    (tests/detection/fast/test_factored_head.py holds the two equal)."""
    main = [block.conv1, block.bn1, block.relu]
    out = _apply_pointwise(main, pooled.subsample(block.conv1.stride[0]))
    out = block.relu(block.bn2(block.conv2(out)))
    out = block.bn3(block.conv3(out))
    if not block.residual:
        return block.relu(out)
    if block.downsample is None:
        shortcut = pooled.dense()
    elif isinstance(block.downsample, nn.Sequential) and _pointwise_stride(list(block.downsample)):
        shortcut = _apply_pointwise(list(block.downsample), pooled.subsample(block.downsample[0].stride[0]))
    else:
        shortcut = block.downsample(pooled.dense())
    out += shortcut
    return block.relu(out)


def supports_factored_head(head: nn.Module) -> bool:
    """Whether ``head`` is a C4 conv5 whose first block starts with per-position layers (a bottleneck's 1×1)."""
    if not isinstance(head, C4Head):
        return False
    first = head.layer4[0]
    return isinstance(first, Bottleneck) and _pointwise_stride([first.conv1, first.bn1, first.relu]) is not None


def factored_head_forward(head: C4Head, pooled: FactoredRoIPool) -> Tensor:
    """``head(pooled.dense())``, computing conv5_1's 1×1 layers once per distinct pooled vector: ``[R, C_out]``."""
    if pooled.index.shape[0] == 0 or not supports_factored_head(head):
        return head(pooled.dense())
    blocks = list(head.layer4)
    first = blocks[0]
    out = _first_block(first, pooled)
    for block in blocks[1:]:
        out = block(out)
    return out.mean(dim=(2, 3))  # as C4Head.forward


class FactoredC4BoxHead(C4BoxHead):
    """``C4BoxHead`` with :class:`GatherRoIPool` whose output stays factored into conv5_1
    (:func:`factored_head_forward`). Same parameters and state-dict keys as the box head it replaces."""

    pooler: GatherRoIPool

    def __init__(self, *, pooler: GatherRoIPool, head: C4Head) -> None:
        super().__init__(pooler=pooler, head=head)

    def forward(self, features: Tensor, boxes: list[Tensor], image_sizes: list[tuple[int, int]]) -> Tensor:
        return factored_head_forward(self.head, self.pooler.factored(features, boxes))
