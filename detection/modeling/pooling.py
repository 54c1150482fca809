"""RoI poolers: modules ``(features [N, C, H, W], per-image boxes) -> [R, C, P, P]`` for the C4 box head.

:class:`RoIPool` (the paper's) and :class:`RoIAlign` (``aligned`` false: Mask R-CNN's original; true: detectron2's
ROIAlignV2) run torchvision's ops. Their exact CPU forms (the gather RoIPool, the separable RoIAlign) live in
``detection/fast`` and are swapped in by ``detection.fast.optimize``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.ops import roi_align, roi_pool


def boxes_to_rois(boxes: list[Tensor]) -> Tensor:
    """Per-image ``[K_i, 4]`` boxes → ``[sum K_i, 5]`` rows ``(batch index, x1, y1, x2, y2)`` in float32."""
    if not boxes:
        return torch.zeros((0, 5))
    return torch.cat(
        [torch.cat((torch.full_like(b[:, :1], i, dtype=torch.float32), b.float()), dim=1) for i, b in enumerate(boxes)]
    )


def is_channels_last(x: Tensor) -> bool:
    """A 4-d tensor stored channels-last (and not also contiguous, as 1×1 maps are both)."""
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


class RoIPool(nn.Module):
    """Fast R-CNN's RoIPool (``torchvision.ops.roi_pool``): ``features [N, C, H, W]`` and per-image boxes
    ``[K_i, 4]`` (xyxy, pixels of the batched input) → ``[sum K_i, C, P, P]`` in the features' dtype and memory
    format. Low-precision (autocast) features are pooled in float32: box coordinates in bf16 are off by pixels at
    1000 px, and the CPU kernel has no bf16 version."""

    def __init__(self, *, output_size: int, spatial_scale: float) -> None:
        super().__init__()
        self.output_size = output_size
        self.spatial_scale = spatial_scale

    def pool(self, features: Tensor, boxes: list[Tensor]) -> Tensor:
        return roi_pool(features, boxes, (self.output_size, self.output_size), self.spatial_scale)

    def forward(self, features: Tensor, boxes: list[Tensor]) -> Tensor:
        # The RoI ops return NCHW; a channels-last head (detection/fast/optimize.py) gets channels-last RoIs, converted
        # once here rather than once per consumer (conv1 and the shortcut of the first conv5 block).
        layout = torch.channels_last if is_channels_last(features) else torch.contiguous_format
        dtype = features.dtype
        if dtype in (torch.float16, torch.bfloat16):
            features = features.float()
        pooled = self.pool(features, [b.to(features.dtype) for b in boxes])
        return pooled.to(dtype=dtype, memory_format=layout)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}, spatial_scale={self.spatial_scale}"


class RoIAlign(RoIPool):
    """RoIAlign (``torchvision.ops.roi_align``) with ``sampling_ratio`` samples per bin side (0: adaptive) and
    ``aligned`` (True: pixel centres at +0.5, detectron2's ROIAlignV2; False: Mask R-CNN's original)."""

    def __init__(self, *, output_size: int, spatial_scale: float, sampling_ratio: int, aligned: bool) -> None:
        super().__init__(output_size=output_size, spatial_scale=spatial_scale)
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned

    def pool(self, features: Tensor, boxes: list[Tensor]) -> Tensor:
        size = (self.output_size, self.output_size)
        return roi_align(features, boxes, size, self.spatial_scale, self.sampling_ratio, aligned=self.aligned)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, sampling_ratio={self.sampling_ratio}, aligned={self.aligned}"
