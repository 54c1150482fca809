"""detection/modeling/pooling.py: the RoI rows handed to torchvision's ops."""

from __future__ import annotations

import torch

from detection.modeling.pooling import boxes_to_rois


def test_boxes_to_rois_numbers_images() -> None:
    boxes = [torch.tensor([[1.0, 2.0, 3.0, 4.0]]), torch.zeros((0, 4)), torch.tensor([[5.0, 6, 7, 8], [0, 0, 1, 1]])]
    rois = boxes_to_rois(boxes)
    assert rois.tolist() == [[0, 1, 2, 3, 4], [2, 5, 6, 7, 8], [2, 0, 0, 1, 1]]
    assert boxes_to_rois([]).shape == (0, 5)
