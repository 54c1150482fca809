"""detection/fast/gather_pool.py: the gather RoIPool (dense and factored) equals torchvision's kernel bit for bit."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.ops import roi_pool

from backbones import build_resnet, split_c4
from detection.fast.factored_head import FactoredC4BoxHead
from detection.fast.gather_pool import GatherRoIPool, roi_pool_factored, roi_pool_gather
from detection.fast.optimize import swap_gather_box_heads
from detection.modeling.box_head import C4BoxHead, GlobalContextBoxHead, conv5_of
from detection.modeling.pooling import RoIAlign, RoIPool


def random_rois(generator: torch.Generator, count: int, images: int, extent: float) -> torch.Tensor:
    xy = torch.rand(count, 2, generator=generator) * extent * 1.2 - 0.1 * extent  # some start off the map
    wh = torch.rand(count, 2, generator=generator) * extent * 0.8 - 0.05 * extent  # some degenerate / inverted
    batch = torch.randint(0, images, (count, 1), generator=generator).float()
    rois = torch.cat((batch, xy, xy + wh), dim=1)
    rois[:4, 1:] = torch.tensor([[7.5, 8.5, 23.5, 40.5], [8.0, 8.0, 8.0, 8.0], [-40.0, -40.0, -20.0, -20.0],
                                 [0.5, 1.5, 2.5, 3.5]])  # fmt: skip  # halves, a point, off the map, tiny
    return rois


@pytest.mark.parametrize("output_size,scale", [(7, 1 / 16), (14, 1 / 16), (8, 1 / 8), (3, 1.0)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_equals_torchvision_roi_pool(output_size: int, scale: float, channels_last: bool) -> None:
    g = torch.Generator().manual_seed(output_size)
    features = torch.randn(3, 16, 21, 33, generator=g)
    if channels_last:
        features = features.contiguous(memory_format=torch.channels_last)
    rois = random_rois(g, 300, 3, extent=33 / scale)
    expected = roi_pool(features, rois, output_size, scale)
    pooled = roi_pool_gather(features, rois, output_size, scale)
    assert pooled.shape == expected.shape and pooled.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(pooled, expected)
    assert (expected == 0).any()  # empty bins (RoIs off the map) were exercised


@pytest.mark.parametrize("windows", ["map", "gather"])
def test_both_ways_of_computing_windows_equal_torchvision(windows: str) -> None:
    """Each window shape's maxima from the whole-map max pool or from gathering the windows' cells: the same
    bits, including a whole-image RoI (global context: bins several cells wide, a handful of windows)."""
    g = torch.Generator().manual_seed(3)
    features = torch.randn(2, 16, 23, 31, generator=g).contiguous(memory_format=torch.channels_last)
    rois = torch.cat((random_rois(g, 150, 2, extent=31 * 16), torch.tensor([[1.0, 0, 0, 31 * 16, 23 * 16]])))
    expected = roi_pool(features, rois, 14, 1 / 16)
    factored = roi_pool_factored(features, rois, 14, 1 / 16, windows=windows)
    assert torch.equal(factored.dense(), expected)
    with pytest.raises(ValueError, match="windows"):
        roi_pool_factored(features, rois, 14, 1 / 16, windows="dense")


def test_auto_gathers_few_windows_and_map_pools_the_map() -> None:
    """A lone whole-image RoI on a large map: ``windows="auto"`` (the inference swap) gathers its few windows (no
    full-map max pool of a wide window), ``"map"`` (the training swap: torchvision's gradient routing) pools the
    map; the same bits either way. The choice is the module's, shown in its repr, not the grad mode's."""
    features = torch.randn(1, 8, 64, 84)
    rois = torch.tensor([[0.0, 0, 0, 84 * 16, 64 * 16]])
    calls = []
    original = torch.nn.functional.max_pool2d

    def spy(*args, **kwargs):
        calls.append(args[1])
        return original(*args, **kwargs)

    expected = roi_pool(features, rois, 14, 1 / 16)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.nn.functional, "max_pool2d", spy)
        auto = roi_pool_factored(features.requires_grad_(), rois, 14, 1 / 16, windows="auto").dense()
        assert calls == []
        tracked = roi_pool_factored(features, rois, 14, 1 / 16).dense()  # the default: "map"
        assert calls
    assert torch.equal(auto.detach(), expected.detach()) and torch.equal(tracked.detach(), expected.detach())
    pooler = GatherRoIPool.from_roi_pool(RoIPool(output_size=14, spatial_scale=1 / 16), windows="auto")
    assert "windows='auto'" in repr(pooler)
    with pytest.raises(ValueError, match="windows"):
        GatherRoIPool(output_size=14, spatial_scale=1 / 16, windows="dense")


def test_bf16_equals_rounding_the_float32_result_and_empty_input() -> None:
    g = torch.Generator().manual_seed(0)
    features = torch.randn(2, 8, 19, 25, generator=g)
    rois = random_rois(g, 100, 2, extent=400)
    expected = roi_pool(features, rois, 14, 1 / 16).to(torch.bfloat16)
    assert torch.equal(roi_pool_gather(features.to(torch.bfloat16), rois, 14, 1 / 16), expected)
    assert roi_pool_gather(features, rois[:0], 14, 1 / 16).shape == (0, 8, 14, 14)


def test_factored_form_holds_each_window_once_and_subsamples() -> None:
    g = torch.Generator().manual_seed(1)
    features = torch.randn(2, 16, 19, 25, generator=g)
    rois = random_rois(g, 200, 2, extent=400)
    expected = roi_pool(features, rois, 14, 1 / 16)
    factored = roi_pool_factored(features, rois, 14, 1 / 16)
    assert torch.equal(factored.dense(), expected)
    assert factored.index.shape == (200, 14, 14) and factored.index.dtype == torch.int64
    assert factored.rows.shape[0] < 200 * 14 * 14 / 3  # RoIs of < 14 cells repeat cells; overlaps share windows
    assert torch.unique(factored.index).numel() == factored.rows.shape[0]  # every row is used
    half = factored.subsample(2)
    assert torch.equal(half.dense(), expected[:, :, ::2, ::2])
    assert half.rows.shape[0] == torch.unique(half.index).numel() <= factored.rows.shape[0]
    assert factored.subsample(1) is factored


@pytest.mark.parametrize("channels_last", [False, True])
def test_gradient_equals_torchvision_roi_pool_with_ties(channels_last: bool) -> None:
    """Each bin's gradient goes to the first maximum of its window, as torchvision's kernel sends it: features of
    a few integer levels tie everywhere (as ReLU's zeros do)."""
    g = torch.Generator().manual_seed(7)
    features = torch.randint(0, 3, (2, 8, 13, 17), generator=g).float()
    if channels_last:
        features = features.contiguous(memory_format=torch.channels_last)
    rois = random_rois(g, 80, 2, extent=17 * 16)
    upstream = torch.randn(80, 8, 14, 14, generator=g)
    grads = []
    for pool in (roi_pool, roi_pool_gather):
        x = features.clone().requires_grad_()
        (pool(x, rois, 14, 1 / 16) * upstream).sum().backward()
        grads.append(x.grad)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-5)



def narrow_conv5(depth: int) -> nn.Module:
    torch.manual_seed(0)
    return split_c4(build_resnet(depth, frozen_bn=True, base_width=8))[1].eval()


def test_gather_pool_equals_roi_pool(pool_inputs):
    features, boxes = pool_inputs
    plain = RoIPool(output_size=14, spatial_scale=1 / 16)
    gather = GatherRoIPool.from_roi_pool(plain)
    assert torch.equal(gather(features, boxes), plain(features, boxes))


@pytest.mark.parametrize("depth", [18, 50])
def test_swap_gather_box_heads(depth):
    conv5 = narrow_conv5(depth)
    holder = nn.Module()
    holder.box_head = GlobalContextBoxHead(C4BoxHead(pooler=RoIPool(output_size=14, spatial_scale=1 / 16), head=conv5))
    holder.align = C4BoxHead(pooler=RoIAlign(output_size=14, spatial_scale=1 / 16, sampling_ratio=0, aligned=True),
                             head=conv5)
    features = torch.randn(1, conv5.layer4[0].conv1.in_channels, 8, 8)
    boxes, sizes = [torch.tensor([[0.0, 0.0, 64.0, 64.0], [8.0, 8.0, 40.0, 40.0]])], [(128, 128)]
    with torch.no_grad():
        before = holder.box_head(features, boxes, sizes)
        swap_gather_box_heads(holder)
        after = holder.box_head(features, boxes, sizes)
    inner = holder.box_head.box_head
    assert isinstance(inner.pooler, GatherRoIPool)
    assert isinstance(inner, FactoredC4BoxHead) == (depth == 50)  # bottleneck conv5_1 starts with 1×1 layers
    assert conv5_of(holder.box_head) is conv5  # parameters shared, not copied
    assert type(holder.align.pooler) is RoIAlign  # RoIAlign has no gather form
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
