"""The C4 box head with RoIAlign, conv5_1's per-position affine layers moved before the pooling.

RoIAlign is linear in the feature map: every output bin is a weighted sum of map positions
(``detection.fast.separable_align``). conv5_1's reducing 1×1 convolution with its frozen BN, and its 1×1 projection
shortcut with its BN, are per-position affine maps ``f(v) = A·v + c``. So, for any bin weights (whether or not they
sum to 1: samples off the map weigh 0)::

    f(align(x)) = A·align(x) + c = align(A·x) + c = align(f(x) − c) + c

and the affine layers can run once on the stride-16 map (~1,900 positions at 600×800) instead of on every
``R × 14 × 14`` bin (58,800 for 300 RoIs). The ReLU after conv1 is not affine: it comes after the pooling. A
stride-2 1×1 layer (the shortcut; conv1 in MSRA-style nets) reads bins ``[::2, ::2]``, which the plan pools alone.
For R50-C4 at 300 RoIs that is 123 of the head's 486 GFLOP replaced by ~10 GFLOP on the map plus the pooling of
512 + 2048 channels, an exact rewrite up to float rounding (tests/detection/fast/test_commuted_head.py, border RoIs,
both ``aligned`` settings, forward and gradients).

:class:`CommutedRoIAlignBoxHead` is the box head that runs it: ``detection.fast.optimize`` swaps it in for a
``C4BoxHead`` with a RoIAlign pooler and a bottleneck conv5 (it shows in ``repr(model)``), at inference and in
training (the rewrite is ordinary autograd: gradients reach the same parameters and features).
"""

from __future__ import annotations

import copy

from torch import Tensor, nn

from backbones.c4 import C4Head
from backbones.frozen_bn import FrozenBatchNorm2d
from backbones.resnet import Bottleneck
from detection.fast.separable_align import AlignPlan, plan_roi_align
from detection.modeling.box_head import C4BoxHead
from detection.modeling.pooling import RoIAlign, boxes_to_rois

__all__ = ["CommutedRoIAlignBoxHead", "commuted_head_forward", "supports_commuted_head"]


def _affine_stride(layers: list[nn.Module]) -> int | None:
    """The stride of ``layers`` if they are a 1×1 convolution then per-channel affine layers (frozen or eval BN,
    identity), else ``None``."""
    conv, rest = layers[0], layers[1:]
    if not (isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1) and conv.padding == (0, 0)
            and conv.groups == 1 and conv.stride[0] == conv.stride[1]):
        return None
    for m in rest:
        frozen = isinstance(m, (nn.Identity, FrozenBatchNorm2d))
        if not (frozen or (isinstance(m, nn.BatchNorm2d) and not m.training and m.running_mean is not None)):
            return None
    return conv.stride[0]


def _pool_affine(layers: list[nn.Module], features: Tensor, plan: AlignPlan) -> Tensor:
    """``layers(align(features))`` for per-position affine ``layers`` (a stride-s 1×1 conv reads bins ``::s``),
    computed as ``align(f(features) − c) + c`` with ``c = f(0)``: ``[R, C_out, P', P']`` channels-last."""
    conv = copy.copy(layers[0])  # shares the parameters; the stride is spent on choosing the bins
    conv.stride = (1, 1)
    stride = layers[0].stride[0]

    def affine(x: Tensor) -> Tensor:
        for layer in [conv, *layers[1:]]:
            x = layer(x)
        return x

    constant = affine(features.new_zeros((1, features.shape[1], 1, 1)))  # [1, C_out, 1, 1]
    mapped = affine(features) - constant
    pooled = plan.apply(mapped, stride)
    if pooled.requires_grad:  # in place on this view would make autograd copy its whole gradient (CopySlices)
        return pooled + constant
    return pooled.add_(constant)  # in place: the pooled tensor is fresh, and large


def supports_commuted_head(head: nn.Module) -> bool:
    """Whether ``head`` is a C4 conv5 whose first block starts with a per-position affine layer (a bottleneck)."""
    if not isinstance(head, C4Head):
        return False
    first = head.layer4[0]
    return isinstance(first, Bottleneck) and _affine_stride([first.conv1, first.bn1]) is not None


def commuted_head_forward(head: C4Head, pooler: RoIAlign, features: Tensor, boxes: list[Tensor]) -> Tensor:
    """``head(pooler(features, boxes))`` with conv5_1's affine 1×1 layers run on ``features``: ``[R, C_out]``."""
    rois = boxes_to_rois(boxes).to(features.device)
    if rois.shape[0] == 0 or not supports_commuted_head(head):
        return head(pooler(features, boxes))
    plan = plan_roi_align(
        rois, features.shape[2], features.shape[3], output_size=pooler.output_size,
        spatial_scale=pooler.spatial_scale, sampling_ratio=pooler.sampling_ratio, aligned=pooler.aligned,
    )
    first, *rest = list(head.layer4)
    out = first.relu(_pool_affine([first.conv1, first.bn1], features, plan))  # as Bottleneck.forward
    out = first.relu(first.bn2(first.conv2(out)))
    out = first.bn3(first.conv3(out))
    if first.residual:
        shortcut = first.downsample
        if shortcut is None:
            out += plan.apply(features)
        elif isinstance(shortcut, nn.Sequential) and _affine_stride(list(shortcut)) is not None:
            out += _pool_affine(list(shortcut), features, plan)
        else:  # e.g. option A's zero-padding shortcut: pooled densely
            out += shortcut(plan.apply(features))
    out = first.relu(out)
    for block in rest:
        out = block(out)
    return out.mean(dim=(2, 3))  # as C4Head.forward


class CommutedRoIAlignBoxHead(C4BoxHead):
    """``C4BoxHead`` with a :class:`RoIAlign` pooler, computed by :func:`commuted_head_forward`. Same parameters,
    buffers and state-dict keys as the box head it replaces."""

    pooler: RoIAlign

    def __init__(self, *, pooler: RoIAlign, head: C4Head) -> None:
        super().__init__(pooler=pooler, head=head)

    def forward(self, features: Tensor, boxes: list[Tensor], image_sizes: list[tuple[int, int]]) -> Tensor:
        return commuted_head_forward(self.head, self.pooler, features, boxes)
