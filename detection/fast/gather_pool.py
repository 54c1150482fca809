"""RoIPool as one gather from max-pooled copies of the feature map: :class:`GatherRoIPool` computes
``detection.modeling.pooling.RoIPool`` (``torchvision.ops.roi_pool``) exactly, several times faster on the CPU, in any
dtype, and written channels-last for the conv5 head. ``detection.fast.optimize`` swaps it in; a built model never
runs it until then.

RoIPool (Fast R-CNN) splits each RoI, quantised to the feature grid, into ``P × P`` bins and takes the max over each
bin's cells. A bin is a window of ``kh × kw`` cells at ``(hs, ws)``; every such window maximum is one element of
``max_pool2d(x, (kh, kw), stride=1)``. So: name every bin by its window (shape, image, origin), compute the stride-1
max pools for the few window shapes in use, read each distinct window once into a ``[U, C]`` row table (channels
contiguous) and index it per bin (:class:`FactoredRoIPool`). A shape with few windows on a large map (global
context's whole-image RoI, whose bins are 4–7 cells wide on a pyramid level) is cheaper read cell by cell: its
windows' cells are gathered and maxed, instead of max-pooling the whole map for a handful of them
(``windows="auto"``, the inference swap's choice). Empty bins (RoIs clipped off the map) read a zero row, as
torchvision's kernel writes 0 there.

The bin boundaries repeat torchvision's CPU/CUDA kernel arithmetic in float32 (``round`` half away from zero,
``floor``/``ceil`` of ``ph · bin_size``, clipping to the map), so the output is bit-identical
(tests/detection/fast/test_gather_pool.py). Max commutes with rounding to bf16, so pooling bf16 features directly
equals pooling in float32 and rounding. With ``windows="map"`` (the training swap's choice) gradients flow through
``max_pool2d`` and the gather: each bin's gradient goes to the first maximum of its window in row-major order, as
torchvision's kernel sends it (its strict ``>`` scan), and the same window shared by several bins gathers their sum.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from detection.modeling.pooling import RoIPool, boxes_to_rois, is_channels_last

__all__ = ["FactoredRoIPool", "GatherRoIPool", "roi_pool_factored", "roi_pool_gather"]

_WINDOWS = ("auto", "map", "gather")


def _round_half_away(x: Tensor) -> Tensor:
    """C's ``round``: halves away from zero (``torch.round`` rounds them to even)."""
    return torch.sign(x) * torch.floor(x.abs() + 0.5)


@dataclass(frozen=True)
class FactoredRoIPool:
    """RoIPool's output in factored form: bin ``(r, i, j)`` holds ``rows[index[r, i, j]]``.

    ``rows``: ``[U, C]`` distinct window maxima (features' dtype); ``index``: ``[R, P, P]`` int64 into ``rows``.
    Small RoIs repeat cells across bins and overlapping RoIs share windows, so ``U`` is usually a fraction of
    ``R · P²`` (~19% for 300 proposals on a 600×800 image): a per-position (1×1) layer applied to ``rows`` and then
    gathered costs that fraction of applying it to the dense output (``detection.fast.factored_head``).
    """

    rows: Tensor
    index: Tensor

    def dense(self) -> Tensor:
        """``[R, C, P, P]``, channels-last: ``torchvision.ops.roi_pool``'s output."""
        r, p = self.index.shape[0], self.index.shape[1]
        gathered = self.rows.index_select(0, self.index.reshape(-1))
        return gathered.view(r, p, p, self.rows.shape[1]).permute(0, 3, 1, 2)

    def subsample(self, stride: int) -> FactoredRoIPool:
        """The bins a stride-``stride`` 1×1 layer reads (``[:, ::stride, ::stride]``), with their own distinct rows."""
        if stride == 1:
            return self
        distinct, index = torch.unique(self.index[:, ::stride, ::stride], return_inverse=True)
        return FactoredRoIPool(self.rows.index_select(0, distinct), index)


def _bin_windows(
    rois: Tensor, height: int, width: int, output_size: int, spatial_scale: float
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per RoI and bin: window origin and size on the feature grid. Returns ``hs, kh`` (``[R, P]``, per bin row)
    and ``ws, kw`` (``[R, P]``, per bin column), with torchvision's kernel arithmetic."""
    p, device = output_size, rois.device
    scaled = rois[:, 1:].float() * torch.tensor(spatial_scale, dtype=torch.float32, device=device)
    start_w, start_h, end_w, end_h = _round_half_away(scaled).long().unbind(1)
    bin_h = (end_h - start_h + 1).clamp(min=1).float() / p  # malformed RoIs are forced to 1 × 1
    bin_w = (end_w - start_w + 1).clamp(min=1).float() / p
    grid = torch.arange(p, dtype=torch.float32, device=device)

    def bounds(bin_size: Tensor, start: Tensor, limit: int) -> tuple[Tensor, Tensor]:
        lo = (torch.floor(grid * bin_size[:, None]).long() + start[:, None]).clamp(0, limit)
        hi = (torch.ceil((grid + 1) * bin_size[:, None]).long() + start[:, None]).clamp(0, limit)
        return lo, (hi - lo).clamp(min=0)  # lo + size <= limit: every window lies on the map

    hs, kh = bounds(bin_h, start_h, height)
    ws, kw = bounds(bin_w, start_w, width)
    return hs, kh, ws, kw


def roi_pool_factored(
    features: Tensor, rois: Tensor, output_size: int, spatial_scale: float, *, windows: str = "map"
) -> FactoredRoIPool:
    """``torchvision.ops.roi_pool(features, rois, output_size, spatial_scale)`` as a :class:`FactoredRoIPool`.

    ``features``: ``[N, C, H, W]`` (any float dtype, any memory format); ``rois``: ``[R, 5]`` as
    :func:`boxes_to_rois`. Each bin is named by its window (shape, image, origin); the distinct windows are
    computed once, per window shape in use either from one stride-1 ``max_pool2d`` over the whole map
    (``windows="map"``) or by reading each window's cells and taking their max (``"gather"``: a shape with few
    windows on a large map, e.g. global context's whole-image RoI, whose bins are several cells wide). ``"auto"``
    gathers a shape's windows when there are fewer than half as many as the map has positions. All three give the
    same values; only ``"map"`` sends gradients as torchvision's kernel does under ties (to the first maximum), so
    training uses it (:class:`GatherRoIPool`'s ``windows``, chosen by ``detection.fast.optimize``).
    """
    n, c, height, width = features.shape
    p, r = output_size, rois.shape[0]
    hs, kh, ws, kw = _bin_windows(rois, height, width, p, spatial_scale)
    kh, kw = kh[:, :, None].expand(r, p, p), kw[:, None, :].expand(r, p, p)
    keys, shape_of_bin = torch.unique(kh * (width + 1) + kw, return_inverse=True)  # window shapes in use
    shapes = torch.stack((keys // (width + 1), keys % (width + 1)), dim=1).tolist()
    cells = n * height * width
    window = shape_of_bin.view(r, p, p) * cells + rois[:, 0].long()[:, None, None] * (height * width)
    window = window + hs[:, :, None] * width + ws[:, None, :]
    window = torch.where((kh == 0) | (kw == 0), len(shapes) * cells, window)  # empty bins (RoI off the map): 0
    distinct, index = torch.unique(window, return_inverse=True)  # sorted, so grouped by window shape

    if windows not in _WINDOWS:
        raise ValueError(f"windows must be one of {_WINDOWS}: {windows!r}")
    x = features.contiguous(memory_format=torch.channels_last)
    table = x.permute(0, 2, 3, 1).reshape(-1, c)  # [N·H·W, C]: a view of the channels-last map
    bounds = torch.searchsorted(distinct, torch.arange(len(shapes) + 2, device=distinct.device) * cells).tolist()
    pieces = []  # the rows of each window shape in turn (``distinct`` is sorted by shape), then the empty bins'
    for t, (a, b) in enumerate([*shapes, (0, 0)]):
        lo, hi = bounds[t], bounds[t + 1]
        if lo == hi or a == 0 or b == 0:
            pieces.append(features.new_zeros((hi - lo, c)))
            continue
        cell = distinct[lo:hi] - t * cells
        image, y, xx = cell // (height * width), cell // width % height, cell % width
        if (a, b) == (1, 1):
            pieces.append(table.index_select(0, cell))
            continue
        positions = n * (height - a + 1) * (width - b + 1)
        gather = windows == "gather" or (windows == "auto" and 2 * (hi - lo) < positions)
        if gather:  # each window's a·b cells (every window lies on the map), then their max
            dy = torch.arange(a, device=cell.device)[None, :, None] * width
            dx = torch.arange(b, device=cell.device)[None, None, :]
            flat = (cell[:, None, None] + dy + dx).reshape(-1)
            pieces.append(table.index_select(0, flat).view(hi - lo, a * b, c).amax(dim=1))
            continue
        pooled = F.max_pool2d(x, (a, b), stride=1)  # [N, C, H-a+1, W-b+1]
        flat = (image * pooled.shape[2] + y) * pooled.shape[3] + xx
        pieces.append(pooled.permute(0, 2, 3, 1).reshape(-1, c).index_select(0, flat))
    # One concatenation rather than writes into a zero tensor: in training, each slice write would make autograd
    # copy the whole row table's gradient (CopySlices).
    return FactoredRoIPool(torch.cat(pieces) if len(pieces) > 1 else pieces[0], index)


def roi_pool_gather(features: Tensor, rois: Tensor, output_size: int, spatial_scale: float) -> Tensor:
    """``torchvision.ops.roi_pool(features, rois, output_size, spatial_scale)``, gather form.

    ``features``: ``[N, C, H, W]`` (any float dtype, any memory format); ``rois``: ``[R, 5]`` as
    :func:`boxes_to_rois`. Returns ``[R, C, P, P]`` in ``features.dtype``, channels-last.
    """
    return roi_pool_factored(features, rois, output_size, spatial_scale).dense()


class GatherRoIPool(RoIPool):
    """:class:`RoIPool` computed by :func:`roi_pool_factored` (bit-identical, native bf16, channels-last output).
    ``windows`` is :func:`roi_pool_factored`'s: ``"auto"`` for inference (``optimize_for_inference``), ``"map"`` in
    training (``optimize_for_training``: torchvision's gradient routing under ties). :meth:`factored` hands the
    factored form to ``detection.fast.factored_head``."""

    def __init__(self, *, output_size: int, spatial_scale: float, windows: str = "map") -> None:
        super().__init__(output_size=output_size, spatial_scale=spatial_scale)
        if windows not in _WINDOWS:
            raise ValueError(f"windows must be one of {_WINDOWS}: {windows!r}")
        self.windows = windows

    def factored(self, features: Tensor, boxes: list[Tensor]) -> FactoredRoIPool:
        rois = boxes_to_rois(boxes)
        return roi_pool_factored(features, rois, self.output_size, self.spatial_scale, windows=self.windows)

    def forward(self, features: Tensor, boxes: list[Tensor]) -> Tensor:
        pooled = self.factored(features, boxes).dense()
        return pooled if is_channels_last(features) else pooled.contiguous()

    @classmethod
    def from_roi_pool(cls, pooler: RoIPool, *, windows: str = "map") -> GatherRoIPool:
        return cls(output_size=pooler.output_size, spatial_scale=pooler.spatial_scale, windows=windows)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, windows={self.windows!r}"
