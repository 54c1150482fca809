"""detection/fast/separable_align.py: the tap-sum RoIAlign equals torchvision's ``roi_align``, forward and backward,
including RoIs on, across and beyond the map's border."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import roi_align

from detection.fast.separable_align import plan_roi_align


def border_rois(generator: torch.Generator, count: int, images: int, width: float, height: float) -> torch.Tensor:
    """Random RoIs (some starting off the map, some degenerate or inverted) plus hand-picked border cases."""
    xy = torch.rand(count, 2, generator=generator) * torch.tensor([width, height]) * 1.3 - 0.15 * width
    wh = torch.rand(count, 2, generator=generator) * width * 0.8 - 0.05 * width
    batch = torch.randint(0, images, (count, 1), generator=generator).float()
    rois = torch.cat((batch, xy, xy + wh), dim=1)
    rois[:6, 1:] = torch.tensor([
        [-60.0, -60.0, -20.0, -20.0],  # wholly off the map: every sample dropped
        [-20.0, -10.0, 40.0, 30.0],  # straddles the top-left border: samples in (-1, 0] clamp to row/column 0
        [width - 40.0, height - 30.0, width + 30.0, height + 20.0],  # straddles the bottom-right border
        [0.0, 0.0, width, height],  # the whole map
        [10.0, 12.0, 10.0, 12.0],  # a point (aligned: no samples; not aligned: forced to 1 × 1)
        [30.0, 20.0, 14.0, 8.0],  # inverted
    ])  # fmt: skip
    return rois


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio,scale", [(0, 1 / 16), (2, 1 / 16), (0, 0.5), (3, 1.0)])
def test_equals_torchvision_roi_align(aligned: bool, sampling_ratio: int, scale: float) -> None:
    g = torch.Generator().manual_seed(sampling_ratio)
    features = torch.randn(2, 8, 13, 17, generator=g)
    rois = border_rois(g, 120, 2, width=17 / scale, height=13 / scale)
    expected = roi_align(features, rois, 14, scale, sampling_ratio, aligned)
    plan = plan_roi_align(rois, 13, 17, output_size=14, spatial_scale=scale, sampling_ratio=sampling_ratio,
                          aligned=aligned)
    got = plan.apply(features)
    assert got.shape == expected.shape and got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=2e-6)
    assert (expected[0] == 0).all() and (got[0] == 0).all()  # off the map: zero, as the kernel writes
    strided = plan.apply(features.contiguous(memory_format=torch.channels_last), stride=2)
    torch.testing.assert_close(strided, expected[:, :, ::2, ::2], rtol=1e-5, atol=2e-6)
    assert int(plan.taps().counts[:196].sum()) == 0  # the RoI off the map has no taps at all


@pytest.mark.parametrize("aligned", [False, True])
def test_gradient_equals_torchvision(aligned: bool) -> None:
    g = torch.Generator().manual_seed(4)
    features = torch.randn(2, 4, 11, 15, generator=g, requires_grad=True)
    rois = border_rois(g, 40, 2, width=15 * 16, height=11 * 16)
    upstream = torch.randn(40, 4, 7, 7, generator=g)
    plan = plan_roi_align(rois, 11, 15, output_size=14, spatial_scale=1 / 16, sampling_ratio=0, aligned=aligned)
    expected, = torch.autograd.grad((roi_align(features, rois, 14, 1 / 16, 0, aligned)[:, :, ::2, ::2] * upstream)
                                    .sum(), features)
    got, = torch.autograd.grad((plan.apply(features, stride=2) * upstream).sum(), features)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_taps_are_the_nonzero_weights_only() -> None:
    """A small RoI inside the map: every bin of the adaptive grid (1 sample per side) touches 2 × 2 cells."""
    rois = torch.tensor([[0.0, 40.0, 40.0, 100.0, 90.0]])  # 60 × 50 px at 1/16: bins of ~0.27 cells
    plan = plan_roi_align(rois, 13, 17, output_size=14, spatial_scale=1 / 16, sampling_ratio=0, aligned=True)
    taps = plan.taps()
    assert taps.counts.max() <= 4 and (taps.weights > 0).all()
    torch.testing.assert_close(torch.zeros(taps.counts.numel()).index_add_(
        0, torch.repeat_interleave(torch.arange(taps.counts.numel()), taps.counts), taps.weights),
        torch.ones(taps.counts.numel()))  # bilinear weights of one on-map sample sum to 1


def test_bf16_and_no_rois() -> None:
    g = torch.Generator().manual_seed(5)
    features = torch.randn(1, 16, 9, 12, generator=g)
    rois = border_rois(g, 30, 1, width=12 * 16, height=9 * 16)
    plan = plan_roi_align(rois, 9, 12, output_size=7, spatial_scale=1 / 16, sampling_ratio=0, aligned=True)
    got = plan.apply(features.bfloat16())
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), roi_align(features, rois, 7, 1 / 16, 0, True), rtol=0.02, atol=0.03)
    empty = plan_roi_align(rois[:0], 9, 12, output_size=7, spatial_scale=1 / 16, sampling_ratio=0, aligned=True)
    assert empty.apply(features).shape == (0, 16, 7, 7)
    with pytest.raises(ValueError, match="9×12 map"):
        plan.apply(features[:, :, :8])
