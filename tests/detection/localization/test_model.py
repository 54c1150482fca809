"""Per-class target assignment, the 8-anchor 1:1 sampling, the output layout and per-class decoding."""

from __future__ import annotations

import torch

from backbones import build_resnet
from detection.localization.model import PerClassRPN, RCNNLocalizer, assign_anchor_labels, class_boxes
from detection.modeling.anchors import AnchorGenerator
from detection.modeling.boxes import decode_boxes, encode_boxes
from detection.modeling.sampling import sample_labels


def tiny_rpn(num_classes: int = 3) -> PerClassRPN:
    net = build_resnet(18, num_classes=num_classes, base_width=8)
    return PerClassRPN(net, num_classes, AnchorGenerator([32.0, 64.0], [1.0]))


def test_assignment_by_iou() -> None:
    anchors = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 8], [0, 0, 10, 5], [50, 50, 60, 60], [5, 0, 15, 10]],
                           dtype=torch.float32)  # fmt: skip
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    labels, matched = assign_anchor_labels(anchors, gt, fg_iou=0.7, bg_iou=0.3)
    # IoUs 1, 0.8, 0.5, 0, 1/3: positive, positive, ignored, negative, ignored
    assert labels.tolist() == [1, 1, -1, 0, -1]
    assert matched[:2].tolist() == [0, 0]
    none, _ = assign_anchor_labels(anchors, torch.zeros(0, 4), 0.7, 0.3)
    assert none.tolist() == [0] * 5


def test_eight_anchors_one_to_one() -> None:
    labels = torch.tensor([1.0] * 10 + [0.0] * 50 + [-1.0] * 5)
    for seed in range(5):
        pos, neg = sample_labels(labels, 8, 0.5, torch.Generator().manual_seed(seed))
        assert len(pos) == 4 and len(neg) == 4
        assert (labels[pos] == 1).all() and (labels[neg] == 0).all()
    # Fewer than 4 positives: the rest are negatives (Faster R-CNN's rule), still 8 in all.
    pos, neg = sample_labels(torch.tensor([1.0] + [0.0] * 20), 8, 0.5)
    assert len(pos) == 1 and len(neg) == 7


def test_outputs_follow_the_anchor_order() -> None:
    rpn = tiny_rpn(num_classes=3).eval()
    a, k = rpn.anchor_generator.num_anchors, rpn.num_classes
    with torch.no_grad():
        rpn.cls.bias.copy_(torch.arange(a * k, dtype=torch.float32))  # channel = anchor * K + class
        rpn.cls.weight.zero_()
        logits, deltas, anchors = rpn(torch.zeros(1, 3, 96, 64))
    h, w = 3, 2  # stride 32
    assert logits.shape == (1, h * w * a, k) and deltas.shape == (1, h * w * a, k, 4)
    assert anchors.shape == (h * w * a, 4)
    expected = torch.arange(a * k, dtype=torch.float32).view(a, k).repeat(h * w, 1)
    assert torch.equal(logits[0], expected)


def test_per_class_decoding_takes_the_class_regressor() -> None:
    refs = torch.tensor([[0.0, 0.0, 10.0, 10.0], [10.0, 10.0, 30.0, 20.0]])
    targets = torch.tensor([[[2.0, 2.0, 12.0, 12.0], [0, 0, 5, 5], [1, 1, 9, 9]],
                            [[10.0, 10.0, 30.0, 20.0], [12, 8, 32, 22], [0, 0, 1, 1]]])  # fmt: skip
    weights = (1.0, 1.0, 1.0, 1.0)
    deltas = torch.stack([encode_boxes(targets[:, c], refs, weights) for c in range(3)], dim=1)  # [2, 3, 4]
    labels = torch.tensor([2, 1])
    out = class_boxes(deltas, refs, labels, weights)
    assert torch.allclose(out, torch.stack([targets[0, 2], targets[1, 1]]), atol=1e-5)
    assert torch.allclose(out[0], decode_boxes(deltas[0, 2][None], refs[:1], weights)[0])


def test_losses_reach_only_the_image_class() -> None:
    torch.manual_seed(0)
    rpn = tiny_rpn(num_classes=3)
    images = torch.randn(2, 3, 64, 64)
    boxes = [torch.tensor([[10.0, 10.0, 50.0, 54.0]]), torch.tensor([[0.0, 4.0, 30.0, 40.0]])]
    labels = torch.tensor([1, 1])
    losses = rpn.losses(images, boxes, labels, torch.Generator().manual_seed(0))
    sum(losses.values()).backward()
    a = rpn.anchor_generator.num_anchors
    cls_grad = rpn.cls.bias.grad.view(a, 3)
    reg_grad = rpn.reg.bias.grad.view(a, 3, 4)
    assert cls_grad[:, 1].abs().sum() > 0 and cls_grad[:, [0, 2]].abs().sum() == 0
    assert reg_grad[:, 1].abs().sum() > 0 and reg_grad[:, [0, 2]].abs().sum() == 0
    assert all(torch.isfinite(v) for v in losses.values())


def test_rcnn_heads_are_per_class() -> None:
    rcnn = RCNNLocalizer(build_resnet(18, num_classes=4, base_width=8), 4)
    logits, deltas = rcnn(torch.randn(3, 3, 32, 32))
    assert logits.shape == (3, 4) and deltas.shape == (3, 4, 4)
    losses = rcnn.losses(torch.randn(3, 3, 32, 32), torch.tensor([0, 2, 3]), torch.tensor([True, False, True]),
                         torch.randn(3, 4))  # fmt: skip
    sum(losses.values()).backward()
    grad = rcnn.reg.bias.grad.view(4, 4)
    assert grad[1].abs().sum() == 0 and grad[2].abs().sum() == 0  # class 1 absent, class 2's RoI is negative
    assert grad[0].abs().sum() > 0 and grad[3].abs().sum() > 0
