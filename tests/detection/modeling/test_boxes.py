import math

import pytest
import torch
from torchvision.ops import nms

from detection.modeling.boxes import (
    BELOW_LOW,
    BETWEEN,
    NMS,
    box_voting,
    decode_boxes,
    encode_boxes,
    match_boxes,
    nms_first_k,
    resize_scale,
    resized_shape,
    scale_boxes,
)

WEIGHTS = (10.0, 10.0, 5.0, 5.0)


def test_encode_hand_computed():
    ref = torch.tensor([[0.0, 0.0, 10.0, 20.0]])  # centre (5, 10), w 10, h 20
    gt = torch.tensor([[2.0, 4.0, 22.0, 24.0]])  # centre (12, 14), w 20, h 20
    deltas = encode_boxes(gt, ref, WEIGHTS)
    expected = torch.tensor([[10 * 7 / 10, 10 * 4 / 20, 5 * math.log(2.0), 5 * math.log(1.0)]])
    torch.testing.assert_close(deltas, expected)


def test_round_trip_random_boxes():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(100, 2, generator=g) * 100
    ref = torch.cat((xy, xy + 1 + torch.rand(100, 2, generator=g) * 50), dim=1)
    xy = torch.rand(100, 2, generator=g) * 100
    gt = torch.cat((xy, xy + 1 + torch.rand(100, 2, generator=g) * 50), dim=1)
    for weights in (WEIGHTS, (1.0, 1.0, 1.0, 1.0)):
        torch.testing.assert_close(decode_boxes(encode_boxes(gt, ref, weights), ref, weights), gt, atol=1e-3, rtol=0)


def test_decode_class_specific_layout_and_clamp():
    ref = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    deltas = torch.tensor([[0.0, 0.0, 0.0, 0.0, 10.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1e4, 1e4]])
    out = decode_boxes(deltas, ref, WEIGHTS).view(-1, 3, 4)
    torch.testing.assert_close(out[0, 0], ref[0])
    torch.testing.assert_close(out[0, 1], torch.tensor([10.0, 0.0, 20.0, 10.0]))  # shifted by one width
    assert torch.isfinite(out).all()  # huge log-size deltas are clamped
    assert out[0, 2, 2] - out[0, 2, 0] == pytest.approx(10 * 1000 / 16, rel=1e-4)


def test_match_thresholds_and_low_quality():
    # GT 0 overlaps candidate 0 at 0.8, candidate 1 at 0.5; GT 1's best candidate only reaches 0.2.
    iou = torch.tensor([[0.8, 0.5, 0.1, 0.0], [0.1, 0.1, 0.2, 0.0]])
    plain = match_boxes(iou, high=0.7, low=0.3, allow_low_quality=False)
    assert plain.tolist() == [0, BETWEEN, BELOW_LOW, BELOW_LOW]
    rpn = match_boxes(iou, high=0.7, low=0.3, allow_low_quality=True)
    assert rpn.tolist() == [0, BETWEEN, 1, BELOW_LOW]


def test_match_low_quality_ties_and_empty():
    iou = torch.tensor([[0.4, 0.4, 0.1]])
    assert match_boxes(iou, 0.7, 0.3, True).tolist() == [0, 0, BELOW_LOW]
    assert match_boxes(torch.zeros(0, 3), 0.7, 0.3, True).tolist() == [BELOW_LOW] * 3


def test_box_voting_weighted_mean():
    kept = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    cands = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [50.0, 50.0, 60.0, 60.0]])
    scores = torch.tensor([0.9, 0.3, 0.8])
    voted = box_voting(kept, cands, scores, 0.5)
    expected = (0.9 * cands[0] + 0.3 * cands[1]) / 1.2
    torch.testing.assert_close(voted[0], expected)


def test_nms_part_and_nms_first_k_are_torchvisions_prefix():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(300, 2, generator=g) * 100
    boxes = torch.cat((xy, xy + 5 + torch.rand(300, 2, generator=g) * 30), dim=1)
    scores = torch.rand(300, generator=g)
    expected = nms(boxes, scores, 0.5)
    assert len(expected) > 20
    assert torch.equal(nms_first_k(boxes, scores, 0.5, 20), expected[:20])
    assert torch.equal(NMS()(boxes, scores, 0.5, 20), expected[:20])
    assert torch.equal(NMS()(boxes, scores, 0.5), expected)


def test_resized_shape_rule():
    assert resized_shape(375, 500, 600, 1000) == (600, 800)
    assert resized_shape(300, 900, 600, 1000) == (333, 1000)  # the longer side caps the scale
    assert resize_scale(300, 900, 600, 1000) == 1000 / 900


def test_scale_boxes_per_axis():
    boxes = torch.tensor([[10.0, 20.0, 30.0, 40.0]])
    out = scale_boxes(boxes, (100, 200), (50, 400))  # heights halve, widths double
    torch.testing.assert_close(out, torch.tensor([[20.0, 10.0, 60.0, 20.0]]))
    torch.testing.assert_close(scale_boxes(out, (50, 400), (100, 200)), boxes)
