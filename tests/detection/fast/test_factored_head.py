"""detection/fast/factored_head.py: conv5 on RoIPool's factored output equals the head on the dense output."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from backbones import build_resnet, split_c4
from backbones.c4 import C4Head
from detection.fast.factored_head import factored_head_forward
from detection.fast.gather_pool import FactoredRoIPool, roi_pool_factored
from detection.fast.optimize import optimize_for_inference, optimize_for_training


def make_head(depth: int = 50, **kwargs: object) -> C4Head:
    torch.manual_seed(0)
    _, head = split_c4(build_resnet(depth, frozen_bn=True, base_width=8, **kwargs))
    for m in head.modules():  # non-trivial frozen statistics, so folding them is exercised
        if hasattr(m, "running_var"):
            m.running_var.uniform_(0.5, 2.0)
            m.running_mean.normal_(0.0, 0.2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0.0, 0.2)
    return head.eval()


def pooled_inputs(channels: int, count: int = 60) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    features = torch.randn(2, channels, 19, 25, generator=g).relu()
    xy = torch.rand(count, 2, generator=g) * 300
    wh = torch.rand(count, 2, generator=g) * 200 + 4
    rois = torch.cat((torch.randint(0, 2, (count, 1), generator=g).float(), xy, xy + wh), dim=1)
    return features, rois


@pytest.mark.parametrize(
    "variant", ["plain", "optimised", "training_fold", "msra", "shortcut_c", "shortcut_a", "no_shortcuts", "resnet18"]
)
def test_factored_forward_equals_dense(variant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    kwargs = {"msra": {"style": "msra"}, "shortcut_c": {"shortcut": "C"}, "shortcut_a": {"shortcut": "A"},
              "no_shortcuts": {"plain": True}}.get(variant, {})  # fmt: skip
    head = make_head(18 if variant == "resnet18" else 50, **kwargs)
    if variant == "optimised":
        head = optimize_for_inference(head)
    elif variant == "training_fold":
        head = optimize_for_training(head).eval()
    channels = head.layer4[0].conv1.in_channels
    features, rois = pooled_inputs(channels)
    pooled = roi_pool_factored(features, rois, 14, 1 / 16)
    with torch.inference_mode():
        expected = head(pooled.dense())
        if variant not in ("shortcut_a", "resnet18"):  # bottleneck + 1×1 shortcut: never densified
            monkeypatch.setattr(FactoredRoIPool, "dense", lambda self: pytest.fail("dense() called"))
        got = factored_head_forward(head, pooled)
    assert got.shape == expected.shape == (60, head.out_channels)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_bf16_autocast_matches_dense_and_pads_odd_row_counts() -> None:
    head = optimize_for_inference(make_head())
    features, rois = pooled_inputs(head.layer4[0].conv1.in_channels, count=7)
    pooled = roi_pool_factored(features.to(torch.bfloat16), rois, 14, 1 / 16)
    assert pooled.rows.shape[0] % 64 != 0
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = head(pooled.dense()).float()
        got = factored_head_forward(head, pooled).float()
    torch.testing.assert_close(got, expected, rtol=0.02, atol=0.05)


def test_parameters_are_shared_not_copied() -> None:
    head = make_head()
    features, rois = pooled_inputs(head.layer4[0].conv1.in_channels, count=5)
    pooled = roi_pool_factored(features, rois, 14, 1 / 16)
    before = factored_head_forward(head, pooled)
    with torch.no_grad():
        head.layer4[0].conv1.weight.mul_(2.0)  # a later load_state_dict must reach the factored path
    changed = copy.deepcopy(head)
    torch.testing.assert_close(factored_head_forward(head, pooled), changed(pooled.dense()), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(before, factored_head_forward(head, pooled))
    assert isinstance(head.layer4[0].conv1, nn.Conv2d) and head.layer4[0].conv1.stride == (1, 1)


def test_no_rois() -> None:
    head = optimize_for_inference(make_head())
    features, rois = pooled_inputs(head.layer4[0].conv1.in_channels)
    pooled = roi_pool_factored(features, rois[:0], 14, 1 / 16)
    with torch.inference_mode():
        assert factored_head_forward(head, pooled).shape == (0, head.out_channels)
