"""RoIAlign as a weighted sum of map rows per bin (``embedding_bag``), for any subset of bins, with autograd.

``torchvision.ops.roi_align`` averages, in every bin, a ``gh × gw`` grid of bilinear samples. A sample at ``(y, x)``
weighs the four cells around it by ``hy·hx, hy·lx, ly·hx, ly·lx``, i.e. by a product of a weight on its row and a
weight on its column; the kernel drops a sample when its ``y`` *or* its ``x`` is off the map (``< -1`` or beyond
the size), which is again a product (a zero row weight or a zero column weight); and the average's ``1 / (gh · gw)``
splits as ``1/gh · 1/gw``. So for RoI ``r`` on image ``n``::

    pooled[r, :, p, q] = Σ_y Σ_x Ay[r, p, y] · Ax[r, q, x] · F[n, :, y, x]        (Ay: [P, H], Ax: [P, W])

with ``Ay[r, p, y]`` the sum over bin row ``p``'s valid samples of their bilinear weight on map row ``y``, over
``gh``. Bin row ``p`` touches only the few rows its samples fall between (``gh + 1`` for the adaptive grid), so
the plan keeps, per bin row and per bin column, the rows (columns) with non-zero weight; their products are the
bin's taps. Each bin is then one weighted sum of map positions, ``F.embedding_bag(cells, map [N·H·W, C],
per_sample_weights=weights, mode="sum")`` on the channels-last map: one multi-threaded pass that reads each tap's
``C`` contiguous values once and writes ``[R·P·P, C]``, i.e. ``[R, P, P, C]`` (channels-last) directly. Large RoIs
cost their taps (≤ ``(gh + 1)(gw + 1)`` per bin), not their area; no window is copied. The op is linear in the
map, so its backward is the same sum over the transposed taps (each map position gathers the bins that read it;
built on the first backward) and keeps no activations.

The sample coordinates repeat the kernel's float32 arithmetic (``roi_align_kernel.cpp``: the ``aligned`` half-pixel
offset, malformed RoIs forced to 1 × 1 when not aligned, the adaptive grid ``ceil(roi / P)``, clamping at the
border), so the result equals ``roi_align`` up to the order of the float additions
(tests/detection/fast/test_separable_align.py, border and off-map RoIs included). A ``stride`` of 2 returns only bins
``[::2, ::2]``, what a stride-2 1×1 convolution reads, at a quarter of the cost.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["AlignPlan", "plan_roi_align"]


@dataclass(frozen=True)
class _Taps:
    """Every bin's non-zero taps, flattened bin after bin (``F.embedding_bag``'s input): ``cells`` ``[T]`` int64
    flat index into the ``[N·H·W, C]`` map, ``weights`` ``[T]`` float32, ``offsets`` ``[B]`` where each bin
    starts, ``counts`` ``[B]`` taps per bin (0: every sample off the map, output 0)."""

    cells: Tensor
    weights: Tensor
    offsets: Tensor
    counts: Tensor

    def transposed(self, positions: int) -> _Taps:
        """The taps grouped by map position instead of by bin: position ``i`` sums the bins that read it, with the
        same weights (the backward of the sum)."""
        bins = torch.repeat_interleave(torch.arange(self.counts.numel(), device=self.cells.device), self.counts)
        order = _argsort(self.cells)
        counts = torch.bincount(self.cells, minlength=positions)
        return _Taps(bins[order], self.weights[order], torch.cumsum(counts, 0) - counts, counts)

    def apply(self, rows: Tensor) -> Tensor:
        """``rows [M, C]`` → ``[B, C]``: each bin's weighted sum of its tap rows, in ``rows.dtype``."""
        with torch.autocast(rows.device.type, enabled=False):  # keep bf16 maps bf16
            return F.embedding_bag(self.cells, rows, self.offsets, mode="sum",
                                   per_sample_weights=self.weights.to(rows.dtype))


@dataclass(frozen=True)
class AlignPlan:
    """Where every bin reads and with what weights; made once by :func:`plan_roi_align` and applied to any number
    of maps of the same spatial size (e.g. conv5_1's reduced map and its projected shortcut). Per bin row (column):
    ``rows`` / ``cols`` ``[R, P, T]`` the map rows (columns) with non-zero weight, ``row_weights`` / ``col_weights``
    the weights (0 where a bin has fewer than ``T``); ``image`` ``[R]`` int64."""

    rows: Tensor
    row_weights: Tensor
    cols: Tensor
    col_weights: Tensor
    image: Tensor
    output_size: int
    height: int
    width: int
    _taps: dict[int, _Taps] = field(default_factory=dict, compare=False, repr=False)

    @property
    def num_rois(self) -> int:
        return self.image.numel()

    def taps(self, stride: int = 1) -> _Taps:
        """The bins ``[::stride, ::stride]`` as tap lists (made on first use, then kept)."""
        if stride not in self._taps:
            self._taps[stride] = self._bin_taps(stride)
        return self._taps[stride]

    def _bin_taps(self, stride: int) -> _Taps:
        ys, wy = self.rows[:, ::stride], self.row_weights[:, ::stride]  # [R, P', Ty]
        xs, wx = self.cols[:, ::stride], self.col_weights[:, ::stride]  # [R, P', Tx]
        r, p, ty = ys.shape
        tx = xs.shape[2]
        base = (self.image * self.height)[:, None, None, None, None] + ys[:, :, None, :, None]
        cells = (base * self.width + xs[:, None, :, None, :]).reshape(r * p * p, ty * tx)
        weights = (wy[:, :, None, :, None] * wx[:, None, :, None, :]).reshape(r * p * p, ty * tx)
        keep = weights.ne(0)
        counts = keep.sum(1)
        return _Taps(cells[keep], weights[keep], torch.cumsum(counts, 0) - counts, counts)

    def apply(self, features: Tensor, stride: int = 1) -> Tensor:
        """``roi_align(features, rois, ...)[:, :, ::stride, ::stride]``: ``[N, C, H, W]`` (any memory format,
        any float dtype; the weights are cast to it) → ``[R, C, P', P']`` channels-last. Differentiable in
        ``features``; the backward applies the transposed weights and keeps no activations (the op is linear)."""
        if tuple(features.shape[2:]) != (self.height, self.width):
            raise ValueError(f"AlignPlan made for a {self.height}×{self.width} map, got "
                             f"{features.shape[2]}×{features.shape[3]}")
        size = len(range(0, self.output_size, stride))
        if self.num_rois == 0:
            return features.new_zeros((0, features.shape[1], size, size)).contiguous(memory_format=torch.channels_last)
        pooled = _ApplyPlan.apply(features, self, stride)  # [R·P'·P', C], not a view: callers may modify it
        return pooled.view(self.num_rois, size, size, -1).permute(0, 3, 1, 2)


class _ApplyPlan(torch.autograd.Function):
    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, features: Tensor, plan: AlignPlan, stride: int) -> Tensor:
        n, c, h, w = features.shape
        ctx.plan, ctx.stride, ctx.shape = plan, stride, (n, c, h, w)
        ctx.channels_last = features.is_contiguous(memory_format=torch.channels_last)
        flat = features.permute(0, 2, 3, 1).reshape(n * h * w, c)  # a view when channels-last
        return plan.taps(stride).apply(flat)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> tuple[Tensor, None, None]:
        n, c, h, w = ctx.shape
        taps = ctx.plan.taps(ctx.stride).transposed(n * h * w)
        flat = taps.apply(grad.contiguous())  # [R·P'·P', C] → [N·H·W, C]
        grad_features = flat.view(n, h, w, c).permute(0, 3, 1, 2)
        return (grad_features if ctx.channels_last else grad_features.contiguous()), None, None


def _axis(
    start: Tensor, extent: Tensor, grid: Tensor, output_size: int, length: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One axis of every RoI's samples: ``(low, high, w_low, w_high)``, each ``[R, P, G]`` (``G`` the largest
    grid), with the kernel's arithmetic. ``start``, ``extent`` (bin size): ``[R]`` float32; ``grid``: ``[R]`` int."""
    g_max = max(int(grid.max()), 1)
    bins = torch.arange(output_size, dtype=torch.float32, device=start.device)[None, :, None]
    steps = torch.arange(g_max, dtype=torch.float32, device=start.device)[None, None, :]
    grid_f = grid.clamp(min=1).float()[:, None, None]
    size = extent[:, None, None]
    coord = (start[:, None, None] + bins * size) + ((steps + 0.5) * size) / grid_f
    valid = (steps < grid[:, None, None]) & (coord >= -1.0) & (coord <= length)
    coord = coord.clamp(min=0.0)
    low = coord.floor().long()
    at_end = low >= length - 1
    low = torch.where(at_end, length - 1, low)
    high = torch.where(at_end, length - 1, low + 1)
    frac = torch.where(at_end, 0.0, coord - low.float())
    share = valid.float() / grid_f
    return low, high, (1.0 - frac) * share, frac * share



def _argsort(keys: Tensor) -> Tensor:
    """``torch.argsort(keys, stable=True)`` of non-negative int64 keys ``[T]``. On the CPU: a radix sort, 16 bits
    a pass from the lowest, each pass NumPy's stable sort of ``uint16`` digits (itself a radix sort), all on the
    calling thread. torch's parallel sort under load took 290 ms for 241k keys on this 2-core machine and 14 ms
    on one thread; this takes a few ms, without touching the process's thread setting (two models may run in two
    threads). A stable sort's permutation is unique, so the indices are torch's."""
    if keys.device.type != "cpu":
        return torch.argsort(keys, stable=True)
    values = keys.numpy()
    top = int(values.max()) if values.size else 0
    order = np.argsort((values & 0xFFFF).astype(np.uint16), kind="stable")
    shift = 16
    while top >> shift:
        digits = ((values[order] >> shift) & 0xFFFF).astype(np.uint16)
        order = order[np.argsort(digits, kind="stable")]
        shift += 16
    return torch.from_numpy(order)


def _nonzero_taps(low: Tensor, high: Tensor, w_low: Tensor, w_high: Tensor, length: int) -> tuple[Tensor, Tensor]:
    """Per bin row (column), the map rows (columns) with non-zero weight, ascending, and their weights:
    ``[R, P, T]`` each, ``T`` the most any bin has (padding: weight 0)."""
    r, p, _ = low.shape
    dense = torch.zeros((r, p, length), dtype=torch.float32, device=low.device)
    for tap, weight in ((low, w_low), (high, w_high)):
        dense.scatter_add_(2, tap, weight)  # dropped samples weigh 0 wherever they are clamped to
    nonzero = dense.ne(0)
    t = max(int(nonzero.sum(2).max()), 1)
    order = torch.sort(nonzero.logical_not().to(torch.uint8), dim=2, stable=True).indices[:, :, :t]
    return order, dense.gather(2, order)


@torch.no_grad()
def plan_roi_align(
    rois: Tensor,
    height: int,
    width: int,
    *,
    output_size: int,
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool,
) -> AlignPlan:
    """The sampling plan of ``torchvision.ops.roi_align(features, rois, output_size, spatial_scale,
    sampling_ratio, aligned)`` on a ``height × width`` map. ``rois``: ``[R, 5]`` rows ``(image, x1, y1, x2, y2)``
    in input pixels (``detection.modeling.pooling.boxes_to_rois``)."""
    rois = rois.float()
    p = output_size
    image = rois[:, 0].long()
    if rois.shape[0] == 0:
        empty = torch.zeros((0, p, 1), dtype=torch.int64, device=rois.device)
        return AlignPlan(empty, empty.float(), empty, empty.float(), image, p, height, width)
    offset = 0.5 if aligned else 0.0
    scaled = rois[:, 1:] * torch.tensor(spatial_scale, dtype=torch.float32, device=rois.device) - offset
    start_x, start_y, end_x, end_y = scaled.unbind(1)
    roi_w, roi_h = end_x - start_x, end_y - start_y
    if not aligned:  # the kernel forces malformed RoIs to 1 × 1
        roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
    bin_w, bin_h = roi_w / p, roi_h / p
    if sampling_ratio > 0:
        grid_w = grid_h = torch.full_like(bin_w, sampling_ratio, dtype=torch.int64)
    else:  # ceil(roi / P); zero or negative for empty RoIs (aligned): no samples, output 0
        grid_w, grid_h = torch.ceil(bin_w).long(), torch.ceil(bin_h).long()
    rows, row_weights = _nonzero_taps(*_axis(start_y, bin_h, grid_h, p, height), height)
    cols, col_weights = _nonzero_taps(*_axis(start_x, bin_w, grid_w, p, width), width)
    return AlignPlan(rows, row_weights, cols, col_weights, image, p, height, width)
