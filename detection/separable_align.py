"""RoIAlign as two small matrix products per RoI, for any subset of bins, with autograd.

``torchvision.ops.roi_align`` averages, in every bin, a ``gh × gw`` grid of bilinear samples. A sample at ``(y, x)``
weighs the four cells around it by ``hy·hx, hy·lx, ly·hx, ly·lx``, i.e. by a product of a weight on its row and a
weight on its column; the kernel drops a sample when its ``y`` *or* its ``x`` is off the map (``< -1`` or beyond
the size), which is again a product (a zero row weight or a zero column weight); and the average's ``1 / (gh · gw)``
splits as ``1/gh · 1/gw``. So for RoI ``r`` on image ``n``::

    pooled[r, :, p, q] = Σ_y Σ_x Ay[r, p, y] · Ax[r, q, x] · F[n, :, y, x]        (Ay: [P, H], Ax: [P, W])

with ``Ay[r, p, y]`` the sum over bin row ``p``'s valid samples of their bilinear weight on map row ``y``, over
``gh``. Only a window of rows and columns around the RoI has non-zero weight, so each RoI reads a ``Ky × Kx``
window of the map (channels-last, one gather) and pools it with two batched matrix products, ``Ay · window`` then
``· Axᵀ``, writing ``[R, P, P, C]`` (channels-last) directly. RoIs are bucketed by window size (powers of two,
capped at the map) so that each bucket is one gather and two ``matmul`` calls (in chunks for large windows). The
op is linear in the map, so its backward is the same products transposed (an ``index_add`` into the map's
gradient) and keeps no activations.

The sample coordinates repeat the kernel's float32 arithmetic (``roi_align_kernel.cpp``: the ``aligned`` half-pixel
offset, malformed RoIs forced to 1 × 1 when not aligned, the adaptive grid ``ceil(roi / P)``, clamping at the
border), so the result equals ``roi_align`` up to the order of the float additions
(tests/detection/test_separable_align.py, border and off-map RoIs included). A ``stride`` of 2 returns only bins
``[::2, ::2]``, what a stride-2 1×1 convolution reads, at a quarter of the cost.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["AlignPlan", "plan_roi_align"]


_CHUNK_ELEMENTS = 1 << 23  # at most this many window values gathered at once (32 MiB in float32)


@dataclass(frozen=True)
class _Bucket:
    rois: Tensor  # [Rb] int64: which RoIs (rows of the output)
    cells: Tensor  # [Rb, Ky, Kx] int64: flat index of each window cell into the [N·H·W, C] map
    ay: Tensor  # [Rb, P, Ky] float32: row weights (bin row p, window row)
    ax: Tensor  # [Rb, P, Kx] float32: column weights

    def chunks(self, channels: int) -> list[_Bucket]:
        """The bucket in pieces whose gathered windows hold at most ``_CHUNK_ELEMENTS`` values."""
        rb, ky, kx = self.cells.shape
        step = max(1, _CHUNK_ELEMENTS // (ky * kx * channels))
        if step >= rb:
            return [self]
        return [_Bucket(self.rois[i : i + step], self.cells[i : i + step], self.ay[i : i + step],
                        self.ax[i : i + step]) for i in range(0, rb, step)]


@dataclass(frozen=True)
class AlignPlan:
    """Where every RoI reads and with what weights; made once by :func:`plan_roi_align` and applied to any
    number of maps of the same spatial size (e.g. conv5_1's reduced map and its projected shortcut). Buckets of
    large windows are processed in chunks, so the gathered windows never hold more than 32 MiB (float32)."""

    buckets: list[_Bucket]
    num_rois: int
    output_size: int
    height: int
    width: int

    def apply(self, features: Tensor, stride: int = 1) -> Tensor:
        """``roi_align(features, rois, ...)[:, :, ::stride, ::stride]``: ``[N, C, H, W]`` (any memory format,
        any float dtype; the weights are cast to it) → ``[R, C, P', P']`` channels-last. Differentiable in
        ``features``; the backward applies the transposed weights and keeps no activations (the op is linear)."""
        if tuple(features.shape[2:]) != (self.height, self.width):
            raise ValueError(f"AlignPlan made for a {self.height}×{self.width} map, got "
                             f"{features.shape[2]}×{features.shape[3]}")
        return _ApplyPlan.apply(features, self, stride)

    def forward_rows(self, flat: Tensor, stride: int) -> Tensor:
        """``flat``: the map as ``[N·H·W, C]`` rows → ``[R, P', P', C]``."""
        c = flat.shape[1]
        size = len(range(0, self.output_size, stride))
        out = flat.new_empty((self.num_rois, size, size, c))
        for b in (chunk for bucket in self.buckets for chunk in bucket.chunks(c)):
            rb, ky, kx = b.cells.shape
            window = flat.index_select(0, b.cells.reshape(-1)).view(rb, ky, kx * c)
            ay = b.ay[:, ::stride].to(flat.dtype)  # [Rb, P', Ky]
            ax = b.ax[:, ::stride].to(flat.dtype)  # [Rb, P', Kx]
            rows = torch.bmm(ay, window).view(rb, size, kx, c)  # bin rows × window columns
            out.index_copy_(0, b.rois, torch.matmul(ax[:, None], rows))
        return out

    def backward_rows(self, grad: Tensor, cells: int, stride: int) -> Tensor:
        """The transpose of :meth:`forward_rows`: ``grad [R, P', P', C]`` → ``[cells, C]``."""
        c = grad.shape[3]
        out = grad.new_zeros((cells, c))
        for b in (chunk for bucket in self.buckets for chunk in bucket.chunks(c)):
            rb, ky, kx = b.cells.shape
            ay = b.ay[:, ::stride].to(grad.dtype)
            ax = b.ax[:, ::stride].to(grad.dtype)
            g = grad.index_select(0, b.rois)  # [Rb, P', P', C]
            rows = torch.matmul(ax.transpose(1, 2)[:, None], g)  # [Rb, P', Kx, C]
            window = torch.bmm(ay.transpose(1, 2), rows.reshape(rb, ay.shape[1], kx * c))  # [Rb, Ky, Kx·C]
            out.index_add_(0, b.cells.reshape(-1), window.view(-1, c))
        return out


class _ApplyPlan(torch.autograd.Function):
    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, features: Tensor, plan: AlignPlan, stride: int) -> Tensor:
        n, c, h, w = features.shape
        ctx.plan, ctx.stride, ctx.shape = plan, stride, (n, c, h, w)
        ctx.channels_last = features.is_contiguous(memory_format=torch.channels_last)
        flat = features.permute(0, 2, 3, 1).contiguous().view(n * h * w, c)
        return plan.forward_rows(flat, stride).permute(0, 3, 1, 2)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> tuple[Tensor, None, None]:
        n, c, h, w = ctx.shape
        flat = ctx.plan.backward_rows(grad.permute(0, 2, 3, 1).contiguous(), n * h * w, ctx.stride)
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


def _window(low: Tensor, high: Tensor, weight_low: Tensor) -> tuple[Tensor, Tensor]:
    """Per RoI: first cell of the taps with a valid sample and the number of cells they span (``[R]`` each)."""
    valid = weight_low.ne(0)  # (1 - frac) · 1/grid > 0 exactly for the samples the kernel keeps
    big = torch.iinfo(torch.int64).max
    first = torch.where(valid, low, big).flatten(1).amin(dim=1)
    last = torch.where(valid, high, -1).flatten(1).amax(dim=1)
    empty = last < 0
    first = torch.where(empty, 0, first)
    return first, torch.where(empty, 1, last - first + 1)


def _weights(low: Tensor, high: Tensor, w_low: Tensor, w_high: Tensor, origin: Tensor, size: int) -> Tensor:
    """``[R, P, size]`` weights of bin ``p`` on window cell ``k`` (cell ``origin + k`` of the map)."""
    r, p, _ = low.shape
    out = torch.zeros((r, p, size), dtype=torch.float32, device=low.device)
    for tap, weight in ((low, w_low), (high, w_high)):
        index = (tap - origin[:, None, None]).clamp(0, size - 1)
        out.scatter_add_(2, index, weight)  # dropped samples weigh 0 wherever they are clamped to
    return out


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
    in input pixels (``detection.pooling.boxes_to_rois``)."""
    rois = rois.float()
    p = output_size
    if rois.shape[0] == 0:
        return AlignPlan([], 0, p, height, width)
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
    ys = _axis(start_y, bin_h, grid_h, p, height)
    xs = _axis(start_x, bin_w, grid_w, p, width)
    y0, band_y = _window(ys[0], ys[1], ys[2])
    x0, band_x = _window(xs[0], xs[1], xs[2])
    # Windows are square powers of two (capped at the map), so that few buckets hold all RoIs.
    side = torch.maximum(band_y, band_x).float().log2().ceil().exp2().long()
    ky, kx = side.clamp(max=height), side.clamp(max=width)
    y0 = torch.minimum(y0, height - ky)
    x0 = torch.minimum(x0, width - kx)
    ay = _weights(*ys, y0, height)
    ax = _weights(*xs, x0, width)
    image = rois[:, 0].long()
    buckets = []
    for key in torch.unique(ky * (width + 1) + kx).tolist():
        h, w = divmod(key, width + 1)
        members = torch.nonzero((ky == h) & (kx == w)).squeeze(1)
        rows = y0[members, None] + torch.arange(h, device=rois.device)
        cols = x0[members, None] + torch.arange(w, device=rois.device)
        base = (image[members] * height)[:, None, None] + rows[:, :, None]
        cells = base * width + cols[:, None, :]
        buckets.append(_Bucket(members, cells, ay[members, :, :h], ax[members, :, :w]))
    return AlignPlan(buckets, rois.shape[0], p, height, width)
