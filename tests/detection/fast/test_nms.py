"""detection/fast/nms.py: the blocked NMS keeps the same indices as torchvision's kernel, and is the RPN's part
after optimize_for_inference / optimize_for_training (CPU)."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import nms

from detection.fast.nms import BlockedNMS, blocked_nms_first_k
from detection.modeling.boxes import NMS


@pytest.mark.parametrize("thresh", [0.7, 0.5, 0.3])
def test_blocked_nms_first_k_equals_torchvision_nms_prefix(thresh: float) -> None:
    g = torch.Generator().manual_seed(int(thresh * 10))
    for trial in range(12):
        n = 4096 + int(torch.randint(0, 4000, (), generator=g))
        xy = torch.rand(n, 2, generator=g) * 600
        boxes = torch.cat((xy, xy + torch.rand(n, 2, generator=g) * 200), dim=1)
        scores = torch.rand(n, generator=g)
        if trial % 2:
            boxes, scores = boxes.round(), (scores * 8).round()  # exact IoU and score ties
        if trial % 3 == 0:
            boxes[:50, 2:] = boxes[:50, :2]  # zero-area boxes: NaN IoU, never suppressed
        expected = nms(boxes, scores, thresh)
        for k in (1, 300, n // 4):
            assert torch.equal(blocked_nms_first_k(boxes, scores, thresh, k), expected[:k]), (trial, k)
    few = blocked_nms_first_k(boxes[:10], scores[:10], thresh, 300)
    assert few.tolist() == nms(boxes[:10], scores[:10], thresh).tolist()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_blocked_nms_first_k_training_sizes_and_iou_at_the_threshold(dtype: torch.dtype) -> None:
    """The RPN's training NMS (12000 → 2000, several blocks of 256 and a kept set that grows across them), on
    clustered boxes (long suppression chains inside a block), and pairs whose IoU is the threshold itself or the
    floats next to it, where the float-against-double comparison decides."""
    g = torch.Generator().manual_seed(7)
    centres = torch.rand(400, 2, generator=g) * 800
    xy = centres[torch.randint(0, 400, (12000,), generator=g)] + torch.randn(12000, 2, generator=g) * 6
    boxes = torch.cat((xy, xy + 40 + torch.rand(12000, 2, generator=g) * 30), dim=1).to(dtype)
    scores = torch.rand(12000, generator=g, dtype=dtype)
    # box pairs with IoU exactly 0.5 (10×10 boxes overlapping by a third of the union) and just below/above it
    for i, shift in enumerate((10 / 3, 10 / 3 + 1e-6, 10 / 3 - 1e-6)):
        boxes[2 * i] = torch.tensor([1000.0, 1000.0 * (i + 2), 1010.0, 1000.0 * (i + 2) + 10])
        boxes[2 * i + 1] = boxes[2 * i] + torch.tensor([shift, 0.0, shift, 0.0], dtype=dtype)
        scores[2 * i], scores[2 * i + 1] = 2.0, 1.5
    for thresh in (0.7, 0.5, 0.3):
        expected = nms(boxes, scores, thresh)
        for k in (2000, 300):
            assert torch.equal(blocked_nms_first_k(boxes, scores, thresh, k), expected[:k]), (thresh, k)


def test_blocked_nms_part_is_the_plain_part_exactly() -> None:
    g = torch.Generator().manual_seed(5)
    xy = torch.rand(6000, 2, generator=g) * 800
    boxes = torch.cat((xy, xy + 20 + torch.rand(6000, 2, generator=g) * 100), dim=1)
    scores = torch.rand(6000, generator=g)
    for k in (300, None):
        assert torch.equal(BlockedNMS()(boxes, scores, 0.7, k), NMS()(boxes, scores, 0.7, k))
    assert isinstance(BlockedNMS(), NMS)
