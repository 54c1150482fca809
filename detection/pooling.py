"""RoIPool's forward as one gather from max-pooled copies of the feature map: exactly ``torchvision.ops.roi_pool``,
several times faster on the CPU, in any dtype, and written channels-last for the conv5 head.

RoIPool (Fast R-CNN) splits each RoI, quantised to the feature grid, into ``P × P`` bins and takes the max over
each bin's cells. A bin is a window of ``kh × kw`` cells at ``(hs, ws)``; every such window maximum is one element
of ``max_pool2d(x, (kh, kw), stride=1)``. So: compute the stride-1 max pools for the few window shapes the RoIs
use, stack them in a ``[shapes · N·H·W, C]`` table (channels contiguous) and gather one row per bin. Empty bins
(RoIs clipped off the map) read a zero row, as torchvision's kernel writes 0 there.

The bin boundaries repeat torchvision's CPU/CUDA kernel arithmetic in float32 (``round`` half away from zero,
``floor``/``ceil`` of ``ph · bin_size``, clipping to the map), so the output is bit-identical
(tests/detection/test_pooling.py). Max commutes with rounding to bf16, so pooling bf16 features directly equals
pooling in float32 and rounding. No backward: training uses torchvision's op (its argmax gradient).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def boxes_to_rois(boxes: list[Tensor]) -> Tensor:
    """Per-image ``[K_i, 4]`` boxes → ``[sum K_i, 5]`` rows ``(batch index, x1, y1, x2, y2)`` in float32."""
    if not boxes:
        return torch.zeros((0, 5))
    return torch.cat(
        [torch.cat((torch.full_like(b[:, :1], i, dtype=torch.float32), b.float()), dim=1) for i, b in enumerate(boxes)]
    )


def _round_half_away(x: Tensor) -> Tensor:
    """C's ``round``: halves away from zero (``torch.round`` rounds them to even)."""
    return torch.sign(x) * torch.floor(x.abs() + 0.5)


@torch.no_grad()
def roi_pool_gather(features: Tensor, rois: Tensor, output_size: int, spatial_scale: float) -> Tensor:
    """``torchvision.ops.roi_pool(features, rois, output_size, spatial_scale)`` without autograd.

    ``features``: ``[N, C, H, W]`` (any float dtype, any memory format); ``rois``: ``[R, 5]`` as
    :func:`boxes_to_rois`. Returns ``[R, C, P, P]`` in ``features.dtype``, channels-last.
    """
    n, c, height, width = features.shape
    p, r = output_size, rois.shape[0]
    device = features.device
    scaled = rois[:, 1:].float() * torch.tensor(spatial_scale, dtype=torch.float32, device=device)
    start_w, start_h, end_w, end_h = _round_half_away(scaled).long().unbind(1)
    bin_h = (end_h - start_h + 1).clamp(min=1).float() / p  # malformed RoIs are forced to 1 × 1
    bin_w = (end_w - start_w + 1).clamp(min=1).float() / p
    grid = torch.arange(p, dtype=torch.float32, device=device)

    def bounds(bin_size: Tensor, start: Tensor, limit: int) -> tuple[Tensor, Tensor]:
        lo = (torch.floor(grid * bin_size[:, None]).long() + start[:, None]).clamp(0, limit)
        hi = (torch.ceil((grid + 1) * bin_size[:, None]).long() + start[:, None]).clamp(0, limit)
        return lo, (hi - lo).clamp(min=0)

    hs, kh = bounds(bin_h, start_h, height)  # [R, P] window origins and sizes per bin row / column
    ws, kw = bounds(bin_w, start_w, width)
    kh, kw = kh[:, :, None].expand(r, p, p), kw[:, None, :].expand(r, p, p)
    keys, shape_of_bin = torch.unique(kh * (width + 1) + kw, return_inverse=True)  # window shapes in use
    shapes = torch.stack((keys // (width + 1), keys % (width + 1)), dim=1)

    x = features.contiguous(memory_format=torch.channels_last)
    cells = n * height * width
    # Rows past a window shape's valid origins are never read, so only the last row (empty bins) is zeroed.
    table = torch.empty((len(shapes) * cells + 1, c), dtype=features.dtype, device=device)
    table[-1] = 0
    for t, (a, b) in enumerate(shapes.tolist()):
        if a == 0 or b == 0:
            continue
        pooled = x if (a, b) == (1, 1) else F.max_pool2d(x, (a, b), stride=1)
        table[t * cells : (t + 1) * cells].view(n, height, width, c)[:, : height - a + 1, : width - b + 1] = (
            pooled.permute(0, 2, 3, 1)
        )
    row = shape_of_bin.view(r, p, p) * cells + rois[:, 0].long()[:, None, None] * (height * width)
    row = row + hs[:, :, None] * width + ws[:, None, :]
    row = torch.where((kh == 0) | (kw == 0), len(shapes) * cells, row)
    return table.index_select(0, row.reshape(-1)).view(r, p, p, c).permute(0, 3, 1, 2)
