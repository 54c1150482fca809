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
training (the rewrite is ordinary autograd: gradients reach the same parameters and features). The block itself is
written once, for both fast heads, in ``detection.fast.conv5_first_block``; this module supplies how its
per-position layers run (on the map, before the pooling).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from backbones.c4 import C4Head
from detection.fast.conv5_first_block import head_forward, supports_first_block
from detection.fast.separable_align import AlignPlan, plan_roi_align
from detection.modeling.box_head import C4BoxHead
from detection.modeling.pooling import RoIAlign, boxes_to_rois

__all__ = ["CommutedRoIAlignBoxHead", "commuted_head_forward", "supports_commuted_head"]


class _CommutedAlign:
    """RoIAlign of ``features`` by ``plan`` as ``detection.fast.conv5_first_block.PooledBins``: per-position
    affine layers run on the map before the pooling, ``f(align(x)) = align(f(x) − c) + c`` with ``c = f(0)``.
    ``in_place``: add ``c`` to the fresh pooled tensor in place (inference); out of place when autograd tracks it
    (an in-place add on this view would make autograd copy its whole gradient, CopySlices)."""

    def __init__(self, features: Tensor, plan: AlignPlan, in_place: bool) -> None:
        self.features, self.plan, self.in_place = features, plan, in_place

    def dense(self) -> Tensor:
        return self.plan.apply(self.features)

    def per_position(self, layers: Sequence[nn.Module], stride: int, activation: nn.Module | None) -> Tensor:
        def affine(x: Tensor) -> Tensor:
            for layer in layers:
                x = layer(x)
            return x

        features = self.features
        constant = affine(features.new_zeros((1, features.shape[1], 1, 1)))  # [1, C_out, 1, 1]
        pooled = self.plan.apply(affine(features) - constant, stride)
        pooled = pooled.add_(constant) if self.in_place else pooled + constant
        return pooled if activation is None else activation(pooled)


def supports_commuted_head(head: nn.Module) -> bool:
    """Whether ``head`` is a C4 conv5 whose first block starts with a per-position affine layer (a bottleneck)."""
    return supports_first_block(head)


def commuted_head_forward(
    head: C4Head, pooler: RoIAlign, features: Tensor, boxes: list[Tensor], *, in_place: bool = False
) -> Tensor:
    """``head(pooler(features, boxes))`` with conv5_1's affine 1×1 layers run on ``features``: ``[R, C_out]``.
    ``in_place``: finish the pooled affine layers in place (only where autograd does not track them)."""
    rois = boxes_to_rois(boxes).to(features.device)
    if rois.shape[0] == 0 or not supports_first_block(head):
        return head(pooler(features, boxes))
    plan = plan_roi_align(
        rois, features.shape[2], features.shape[3], output_size=pooler.output_size,
        spatial_scale=pooler.spatial_scale, sampling_ratio=pooler.sampling_ratio, aligned=pooler.aligned,
    )
    return head_forward(head, _CommutedAlign(features, plan, in_place))


class CommutedRoIAlignBoxHead(C4BoxHead):
    """``C4BoxHead`` with a :class:`RoIAlign` pooler, computed by :func:`commuted_head_forward`. Same parameters,
    buffers and state-dict keys as the box head it replaces. ``in_place`` (set by ``optimize_for_inference``,
    not by ``optimize_for_training``) saves a copy of the pooled maps where nothing needs their gradient."""

    pooler: RoIAlign

    def __init__(self, *, pooler: RoIAlign, head: C4Head, in_place: bool = False) -> None:
        super().__init__(pooler=pooler, head=head)
        self.in_place = in_place

    def forward(self, features: Tensor, boxes: list[Tensor], image_sizes: list[tuple[int, int]]) -> Tensor:
        return commuted_head_forward(self.head, self.pooler, features, boxes, in_place=self.in_place)

    def extra_repr(self) -> str:
        return f"in_place={self.in_place}"
