"""detection/modeling/pooling.py's pooler modules and detection/modeling/box_head.py: what each computes."""

import pytest
import torch
from torch import nn
from torchvision.ops import roi_align, roi_pool

from backbones import build_resnet, split_c4
from detection.modeling.box_head import C4BoxHead, GlobalContextBoxHead, conv5_of
from detection.modeling.pooling import RoIAlign, RoIPool


def test_roi_pool_module_is_torchvisions_op(pool_inputs):
    features, boxes = pool_inputs
    pooled = RoIPool(output_size=7, spatial_scale=1 / 16)(features, boxes)
    assert torch.equal(pooled, roi_pool(features, boxes, (7, 7), 1 / 16))


@pytest.mark.parametrize("aligned", [False, True])
def test_roi_align_module_passes_aligned(aligned, pool_inputs):
    features, boxes = pool_inputs
    pooler = RoIAlign(output_size=7, spatial_scale=1 / 16, sampling_ratio=2, aligned=aligned)
    assert f"aligned={aligned}" in repr(pooler)
    expected = roi_align(features, boxes, (7, 7), 1 / 16, 2, aligned=aligned)
    assert torch.equal(pooler(features, boxes), expected)
    other = roi_align(features, boxes, (7, 7), 1 / 16, 2, aligned=not aligned)
    assert not torch.equal(expected, other)


def test_low_precision_features_pool_in_float32_and_keep_dtype_and_layout(pool_inputs):
    features, boxes = pool_inputs
    pooled = RoIPool(output_size=7, spatial_scale=1 / 16)(
        features.to(torch.bfloat16).contiguous(memory_format=torch.channels_last), boxes
    )
    assert pooled.dtype == torch.bfloat16 and pooled.is_contiguous(memory_format=torch.channels_last)
    expected = roi_pool(features.to(torch.bfloat16).float(), boxes, (7, 7), 1 / 16).to(torch.bfloat16)
    assert torch.equal(pooled, expected)


def narrow_conv5(depth: int) -> nn.Module:
    torch.manual_seed(0)
    return split_c4(build_resnet(depth, frozen_bn=True, base_width=8))[1].eval()


def test_global_context_wraps_and_conv5_is_found_through_it():
    conv5 = narrow_conv5(50)
    box_head = GlobalContextBoxHead(C4BoxHead(pooler=RoIPool(output_size=14, spatial_scale=1 / 16), head=conv5))
    assert box_head.out_channels == 2 * conv5.out_channels and conv5_of(box_head) is conv5
    features = torch.randn(1, conv5.layer4[0].conv1.in_channels, 8, 8)
    with torch.no_grad():
        out = box_head(features, [torch.tensor([[0.0, 0.0, 64.0, 64.0], [8.0, 8.0, 40.0, 40.0]])], [(128, 128)])
    assert out.shape == (2, 2 * conv5.out_channels)
    torch.testing.assert_close(out[0, conv5.out_channels:], out[1, conv5.out_channels:])
