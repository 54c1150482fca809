"""Test-time views, the mapping back to the image, the merge of candidates over views, the R-CNN warp."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backbones import build_resnet
from backbones.data import Normalizer
from detection.localization.inference import (
    RPNOutputs,
    dense_views,
    merge_candidates,
    one_crop_views,
    rcnn_targets,
    warp_crops,
)
from detection.localization.model import PerClassRPN
from detection.modeling.anchors import AnchorGenerator


def test_one_crop_maps_back_to_the_image() -> None:
    image = np.zeros((100, 200, 3), np.uint8)  # shorter side 100 -> 128: 256 x 128, centre crop 112
    (view,) = one_crop_views(image, crop=112, resize=128)
    assert view.pixels.shape == (3, 112, 112) and view.left == 72 and view.top == 8
    whole_crop = torch.tensor([[0.0, 0.0, 112.0, 112.0]])
    expected = torch.tensor([[72 / 1.28, 8 / 1.28, 184 / 1.28, 120 / 1.28]])
    assert torch.allclose(view.to_original(whole_crop), expected)


def test_dense_views_and_flip() -> None:
    image = np.zeros((50, 80, 3), np.uint8)
    views = dense_views(image, [50, 100], flip=True)
    assert [tuple(v.pixels.shape[1:]) for v in views] == [(50, 80), (50, 80), (100, 160), (100, 160)]
    flipped = views[3]
    assert flipped.flipped and flipped.scale == 2.0
    # A box at the left of the mirrored view is at the right of the image.
    assert flipped.to_original(torch.tensor([[0.0, 10.0, 20.0, 30.0]])).tolist() == [[70.0, 5.0, 80.0, 15.0]]


def test_merge_takes_the_best_and_votes() -> None:
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [2.0, 0.0, 12.0, 10.0], [50.0, 50.0, 60.0, 60.0]])
    scores = torch.tensor([0.9, 0.3, 0.8])
    box, score = merge_candidates(boxes, scores, vote_top=0)
    assert box.tolist() == [0, 0, 10, 10] and score == np.float32(0.9)
    box, _ = merge_candidates(boxes, scores, vote_top=3)  # IoU(0, 1) = 8/12 >= 0.5: weighted mean of the two
    assert torch.allclose(box, torch.tensor([0.5, 0.0, 10.5, 10.0]))
    degenerate = torch.tensor([[5.0, 5.0, 5.0, 9.0], [1.0, 1.0, 4.0, 4.0]])
    box, _ = merge_candidates(degenerate, torch.tensor([0.99, 0.1]), vote_top=0)
    assert box.tolist() == [1, 1, 4, 4]


def test_dense_candidates_pool_every_view() -> None:
    torch.manual_seed(0)
    rpn = PerClassRPN(build_resnet(18, num_classes=2, base_width=8), 2, AnchorGenerator([32.0], [1.0])).eval()
    image = np.random.default_rng(0).integers(0, 255, (64, 96, 3), dtype=np.uint8)
    normalizer = Normalizer((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    outputs = RPNOutputs(rpn, dense_views(image, [64, 128]), normalizer, (64, 96))
    boxes, scores = outputs.candidates(1)
    assert boxes.shape == (2 * 3 + 4 * 6, 4) and scores.shape == (30,)  # 2x3 map at 64, 4x6 at 128
    assert (boxes[:, 0::2] <= 96).all() and (boxes[:, 1::2] <= 64).all() and (boxes >= 0).all()
    assert ((scores > 0) & (scores < 1)).all()


def test_warp_crops_resample_the_box() -> None:
    image = torch.zeros(3, 40, 40, dtype=torch.uint8)
    image[:, 10:20, 10:30] = 200
    crops = warp_crops(image, torch.tensor([[10.0, 10.0, 30.0, 20.0], [0.0, 0.0, 5.0, 5.0]]), 8)
    assert crops.shape == (2, 3, 8, 8)
    # Inside, the box's pixels; on its rim, bilinear sampling (pixel centres) mixes in a little of the outside.
    assert torch.allclose(crops[0, :, 1:-1, 1:-1], torch.full((3, 6, 6), 200.0)) and crops[0].min() > 150
    assert crops[1].abs().max() == 0


def test_rcnn_targets() -> None:
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    proposals = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 4.0]])
    positive, targets = rcnn_targets(proposals, gt, 0.5)
    assert positive.tolist() == [True, False] and targets[0].abs().max() == 0


def test_warp_context_shows_the_surroundings() -> None:
    image = torch.zeros(3, 40, 40, dtype=torch.uint8)
    image[:, 10:30, 10:30] = 200
    # 4 of 16 warp pixels per side are context: the box [10, 30] grows by 20 * 4 / 8 = 10 on each side.
    crops = warp_crops(image, torch.tensor([[10.0, 10.0, 30.0, 30.0]]), 16, context=4)
    assert crops[0, :, 5:11, 5:11].min() == 200 and crops[0, :, :3, :3].max() == 0
    assert torch.equal(warp_crops(image, torch.tensor([[0.0, 0.0, 40.0, 40.0]]), 16, context=4)[0, :, 0, 0],
                       torch.zeros(3))  # fmt: skip
    with pytest.raises(ValueError, match="context padding 8 leaves no room"):
        warp_crops(image, torch.tensor([[0.0, 0.0, 4.0, 4.0]]), 16, context=8)
