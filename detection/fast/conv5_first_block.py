"""The first conv5 block of a fast box head, with its per-position layers run on pooled bins by the head's own rule.

In a bottleneck conv5_1 the reducing 1×1 convolution (with its BN) and the 1×1 projection shortcut (with its BN)
act on each position alone. Both fast box heads compute them somewhere cheaper than on the dense pooled
``[R, C, P, P]``: the factored head (``detection.fast.factored_head``) on the distinct pooled vectors, the commuted
head (``detection.fast.commuted_head``) on the feature map before RoIAlign. Everything else in the block is
``Bottleneck.forward`` as written in ``backbones.resnet``, once, here (:func:`first_block_forward`);
tests/detection/fast/test_factored_head.py and test_commuted_head.py hold both heads equal to the plain one.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Protocol

from torch import Tensor, nn

from backbones.c4 import C4Head
from backbones.frozen_bn import FrozenBatchNorm2d
from backbones.resnet import Bottleneck

__all__ = [
    "PooledBins", "first_block_forward", "head_forward", "per_position_stride", "supports_first_block", "unit_stride",
]


class PooledBins(Protocol):
    """The pooled RoIs of one box head call, as a fast head holds them (not yet dense)."""

    def dense(self) -> Tensor:
        """The pooler's output ``[R, C, P, P]``."""
        ...

    def per_position(self, layers: Sequence[nn.Module], stride: int, activation: nn.Module | None) -> Tensor:
        """``activation(layers(dense()[:, :, ::stride, ::stride]))`` for ``layers`` a stride-1 1×1 convolution then
        per-channel affine layers (:func:`per_position_stride`): ``[R, C_out, P', P']``."""
        ...


def per_position_stride(layers: Sequence[nn.Module]) -> int | None:
    """The stride of ``layers`` if they are a 1×1 convolution (no padding, the same stride on both axes) followed
    by per-channel affine layers (frozen BN, a BN using its running statistics, identity), else ``None``."""
    conv, rest = layers[0], layers[1:]
    if not (isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1) and conv.padding == (0, 0)
            and conv.stride[0] == conv.stride[1]):
        return None
    for m in rest:
        running = isinstance(m, nn.BatchNorm2d) and not m.training and m.running_mean is not None
        if not (isinstance(m, (nn.Identity, FrozenBatchNorm2d)) or running):
            return None
    return conv.stride[0]


def unit_stride(layers: Sequence[nn.Module]) -> tuple[list[nn.Module], int]:
    """``layers`` with their 1×1 convolution at stride 1 (a shallow copy sharing its parameters), and the stride it
    had: a stride-``s`` 1×1 layer reads bins ``[::s, ::s]``, which the fast heads choose before applying it."""
    conv = copy.copy(layers[0])
    conv.stride = (1, 1)
    return [conv, *layers[1:]], layers[0].stride[0]


def supports_first_block(head: nn.Module) -> bool:
    """Whether ``head`` is a C4 conv5 whose first block starts with per-position layers (a bottleneck's 1×1)."""
    if not isinstance(head, C4Head):
        return False
    first = head.layer4[0]
    return isinstance(first, Bottleneck) and per_position_stride([first.conv1, first.bn1]) is not None


def first_block_forward(block: Bottleneck, pooled: PooledBins) -> Tensor:
    """``block(pooled.dense())`` with its per-position layers computed by ``pooled`` (``Bottleneck.forward``):
    ``[R, C_out, P', P']``."""
    out = pooled.per_position(*unit_stride([block.conv1, block.bn1]), block.relu)
    out = block.relu(block.bn2(block.conv2(out)))
    out = block.bn3(block.conv3(out))
    if not block.residual:
        return block.relu(out)
    shortcut = block.downsample
    if shortcut is None:
        out += pooled.dense()
    elif isinstance(shortcut, nn.Sequential) and per_position_stride(list(shortcut)) is not None:
        out += pooled.per_position(*unit_stride(list(shortcut)), None)
    else:  # e.g. option A's zero-padding shortcut: on the dense pooled RoIs
        out += shortcut(pooled.dense())
    return block.relu(out)


def head_forward(head: C4Head, pooled: PooledBins) -> Tensor:
    """``head(pooled.dense())`` (conv5_x, then the mean over space) with :func:`first_block_forward`:
    ``[R, C_out]``."""
    first, *rest = list(head.layer4)
    out = first_block_forward(first, pooled)
    for block in rest:
        out = block(out)
    return out.mean(dim=(2, 3))  # as C4Head.forward
