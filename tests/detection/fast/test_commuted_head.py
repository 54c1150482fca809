"""detection/fast/commuted_head.py: conv5 with its first affine layers moved before RoIAlign equals the plain box head,
forward and gradients, with RoIs across and beyond the map's border."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from backbones.c4 import C4Head
from detection.fast.commuted_head import CommutedRoIAlignBoxHead, supports_commuted_head
from detection.fast.optimize import optimize_for_inference, optimize_for_training, swap_commuted_box_heads
from detection.modeling.box_head import C4BoxHead, GlobalContextBoxHead
from detection.modeling.pooling import RoIAlign
from tests.detection.fast.test_factored_head import make_head


def inputs(channels: int, seed: int = 3) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Features of a 2-image batch (11×15 cells at stride 16) and boxes, some crossing or beyond the border."""
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(2, channels, 11, 15, generator=g).relu()
    xy = torch.rand(24, 2, generator=g) * 260 - 20
    boxes = torch.cat((xy, xy + torch.rand(24, 2, generator=g) * 150 + 2), dim=1)
    border = torch.tensor([[-50.0, -40.0, -5.0, -3.0], [-30.0, -20.0, 60.0, 40.0], [200.0, 150.0, 290.0, 210.0],
                           [0.0, 0.0, 240.0, 176.0]])  # fmt: skip
    return features, [torch.cat((border, boxes[:12])), boxes[12:]]


def box_heads(head: C4Head, aligned: bool) -> tuple[C4BoxHead, CommutedRoIAlignBoxHead]:
    pooler = RoIAlign(output_size=14, spatial_scale=1 / 16, sampling_ratio=0, aligned=aligned)
    return C4BoxHead(pooler=pooler, head=head), CommutedRoIAlignBoxHead(pooler=pooler, head=head)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize(
    "variant", ["plain", "optimised", "training_fold", "msra", "shortcut_c", "shortcut_a", "no_shortcuts"]
)
def test_forward_equals_plain_box_head(variant: str, aligned: bool) -> None:
    kwargs = {"msra": {"style": "msra"}, "shortcut_c": {"shortcut": "C"}, "shortcut_a": {"shortcut": "A"},
              "no_shortcuts": {"plain": True}}.get(variant, {})  # fmt: skip
    head = make_head(**kwargs)
    if variant == "optimised":
        head = optimize_for_inference(head)
    elif variant == "training_fold":
        head = optimize_for_training(head).eval()
    plain, commuted = box_heads(head, aligned)
    features, boxes = inputs(head.layer4[0].conv1.in_channels)
    with torch.inference_mode():
        expected = plain(features, boxes, [])
        got = commuted(features, boxes, [])
    assert got.shape == expected.shape == (28, head.out_channels)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("aligned", [False, True])
def test_gradients_equal_plain_box_head(aligned: bool) -> None:
    """Same gradients for every conv5 parameter and for the features. (The seed is one where no pre-activation lies
    within float rounding of 0: there a ReLU may flip either way, on either path.)"""
    head = optimize_for_training(make_head()).train()
    plain, commuted = box_heads(head, aligned)
    features, boxes = inputs(head.layer4[0].conv1.in_channels)
    grads = []
    for box_head in (plain, commuted):
        x = features.clone().requires_grad_()
        head.zero_grad()
        box_head(x, boxes, []).square().sum().backward()
        grads.append([x.grad] + [p.grad.clone() for p in head.parameters()])
    for got, expected in zip(grads[1], grads[0]):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


def test_swap_keeps_parameters_and_shows_in_repr() -> None:
    head = make_head()
    holder = nn.Module()
    holder.context = GlobalContextBoxHead(box_heads(head, True)[0])
    holder.roipool = C4BoxHead(pooler=nn.Identity(), head=head)  # not a RoIAlign pooler: left alone
    swap_commuted_box_heads(holder)
    assert isinstance(holder.context.box_head, CommutedRoIAlignBoxHead)
    assert holder.context.box_head.head is head and type(holder.roipool) is C4BoxHead
    assert "CommutedRoIAlignBoxHead" in repr(holder)
    features, boxes = inputs(head.layer4[0].conv1.in_channels)
    with torch.no_grad():
        head.layer4[0].conv1.weight.mul_(2.0)  # a later load_state_dict must reach the commuted path
        torch.testing.assert_close(holder.context(features, boxes, [(176, 240)] * 2),
                                   GlobalContextBoxHead(box_heads(copy.deepcopy(head), True)[0])(
                                       features, boxes, [(176, 240)] * 2), rtol=1e-5, atol=1e-5)


def test_basic_block_heads_and_no_rois_take_the_plain_path() -> None:
    assert not supports_commuted_head(make_head(18))
    assert supports_commuted_head(make_head(50))
    plain, commuted = box_heads(make_head(18), True)
    features, boxes = inputs(plain.head.layer4[0].conv1.in_channels)
    with torch.inference_mode():
        torch.testing.assert_close(commuted(features, boxes, []), plain(features, boxes, []))
        assert commuted(features, [b[:0] for b in boxes], []).shape == (0, plain.out_channels)
