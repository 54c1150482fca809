"""The C4 box head (Appendix A): RoI pooling on the conv4 map → conv5_x → global average pool, one feature vector
per RoI; and global context (Appendix B) as a wrapper of it.

A box head is a module ``(features [N, C, H, W], boxes: per-image [K_i, 4] xyxy in the batched input's pixels,
image_sizes: per-image (H, W)) -> [sum K_i, out_channels]``. detectron2 calls the first part
``Res5ROIHeads._shared_roi_transform``; torchvision's ``RoIHeads`` takes ``box_roi_pool`` and ``box_head``
separately. ``detection.fast.optimize`` swaps :class:`C4BoxHead` for ``detection.fast.factored_head.FactoredC4BoxHead``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from backbones.c4 import C4Head

__all__ = ["C4BoxHead", "GlobalContextBoxHead", "conv5_of"]


class C4BoxHead(nn.Module):
    """``pooler`` (``detection.modeling.pooling.RoIPool`` / ``RoIAlign``: ``[R, C4, P, P]``) then ``head``
    (conv5_x + mean
    over space: ``[R, out_channels]``). ``image_sizes`` is unused here; it is part of the box-head interface."""

    def __init__(self, *, pooler: nn.Module, head: C4Head) -> None:
        super().__init__()
        self.pooler = pooler
        self.head = head
        self.out_channels = head.out_channels

    def forward(self, features: Tensor, boxes: list[Tensor], image_sizes: list[tuple[int, int]]) -> Tensor:
        return self.head(self.pooler(features, boxes))


class GlobalContextBoxHead(nn.Module):
    """Global context (Appendix B): the whole image's box goes through the same ``box_head`` (one RoI per image,
    "pooled" from the full feature map) and its feature is concatenated to every RoI's: ``[R, 2 · out]``.
    Trained end to end with the rest; the predictor after it takes twice the width."""

    def __init__(self, box_head: nn.Module) -> None:
        super().__init__()
        self.box_head = box_head
        self.out_channels = 2 * box_head.out_channels

    def forward(self, features: Tensor, boxes: list[Tensor], image_sizes: list[tuple[int, int]]) -> Tensor:
        roi_features = self.box_head(features, boxes, image_sizes)
        whole = [torch.tensor([[0.0, 0.0, w, h]], device=features.device) for h, w in image_sizes]
        context = self.box_head(features, whole, image_sizes)
        counts = torch.tensor([len(b) for b in boxes], device=features.device)
        return torch.cat((roi_features, context.repeat_interleave(counts, dim=0)), dim=1)


def conv5_of(box_head: nn.Module) -> C4Head:
    """The conv5_x module inside a box head (through any wrappers): where ImageNet weights for ``layer4`` go."""
    while not isinstance(box_head, C4BoxHead):
        box_head = box_head.box_head
    return box_head.head
