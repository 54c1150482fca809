import math

import pytest
import torch
from torch import nn

from detection.modeling.box_head import C4BoxHead, GlobalContextBoxHead
from detection.modeling.pooling import RoIPool
from detection.modeling.postprocess import BoxDecoder, DetectionSelector
from detection.modeling.roi_heads import BoxPredictor, C4RoIHeads


class MeanHead(nn.Module):
    """A stand-in for conv5_x + pool: the per-channel mean of the pooled RoI."""

    out_channels = 4

    def forward(self, x):
        return x.mean(dim=(2, 3))


def make_heads(global_context=False, box_refinement=False, **kw):
    box_head = C4BoxHead(pooler=RoIPool(output_size=2, spatial_scale=1.0), head=MeanHead())
    if global_context:
        box_head = GlobalContextBoxHead(box_head)
    selector = DetectionSelector(score_thresh=0.05, nms_thresh=0.5, detections_per_img=100)
    return C4RoIHeads(
        box_head=box_head,
        predictor=BoxPredictor(box_head.out_channels, 3),
        decoder=BoxDecoder(num_classes=3, weights=(10.0, 10.0, 5.0, 5.0)),
        selector=selector,
        box_refinement=box_refinement,
        **kw,
    )


def test_sampling_labels_and_regression_targets():
    heads = make_heads(batch_size_per_image=8, positive_fraction=0.5, bg_iou_low=0.1)
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    proposals = [torch.tensor([[0.0, 0.0, 10.0, 12.0], [0.0, 0.0, 10.0, 30.0], [50.0, 50.0, 60.0, 60.0]])]
    rois, labels, reg = heads.sample_proposals(proposals, [{"boxes": gt, "labels": torch.tensor([2])}])
    # IoUs: 10/12 = 0.83 (fg), 1/3 (bg), 0 (< 0.1: ignored); the GT itself is added (fg).
    assert sorted(labels.tolist()) == [0, 2, 2]
    fg_rows = torch.nonzero(labels == 2).squeeze(1)
    targets = {tuple(rois[0][i].tolist()): reg[i] for i in fg_rows}
    torch.testing.assert_close(targets[(0.0, 0.0, 10.0, 10.0)], torch.zeros(4))
    # proposal [0,0,10,12] → GT: dy = 10·(5 − 6)/12, dh = 5·log(10/12)
    torch.testing.assert_close(
        targets[(0.0, 0.0, 10.0, 12.0)], torch.tensor([0.0, -10 / 12, 0.0, 5 * math.log(10 / 12)])
    )


def test_losses_hand_made():
    heads = make_heads(batch_size_per_image=2)
    logits = torch.zeros(2, 4)
    deltas = torch.zeros(2, 12)
    deltas[0, 4:8] = torch.tensor([1.0, 0.0, 0.0, 0.0])  # class 2's deltas for the fg RoI
    labels = torch.tensor([2, 0])
    targets = torch.zeros(2, 4)
    losses = heads.losses(logits, deltas, labels, targets, num_images=1)
    torch.testing.assert_close(losses["loss_cls"], torch.tensor(math.log(4.0)))  # uniform over 4 → log 4 each
    torch.testing.assert_close(losses["loss_box"], torch.tensor(0.5 / 2))  # smooth-L1(1, β=1) = 0.5, /2 RoIs


def test_global_context_doubles_features():
    heads = make_heads(global_context=True)
    feats = torch.randn(1, 4, 8, 8)
    out = heads.box_features(feats, [torch.tensor([[0.0, 0.0, 4.0, 4.0], [2.0, 2.0, 6.0, 6.0]])], [(8, 8)])
    assert out.shape == (2, 8)
    torch.testing.assert_close(out[0, 4:], out[1, 4:])  # the same whole-image context for both RoIs
    inner = heads.box_head.box_head
    whole = inner.head(inner.pooler(feats, [torch.tensor([[0.0, 0.0, 8.0, 8.0]])]))
    torch.testing.assert_close(out[0, 4:], whole[0])


def test_box_refinement_scores_the_refined_boxes_again_and_unions():
    heads = make_heads(box_refinement=True)
    heads.eval()
    feats = torch.randn(1, 4, 16, 16)
    proposals = [torch.tensor([[0.0, 0.0, 8.0, 8.0], [4.0, 4.0, 12.0, 12.0]])]
    calls = []

    def scorer(boxes):
        calls.append([b.clone() for b in boxes])
        return heads.score(feats, boxes, [(16, 16)])

    scores, boxes = heads.score(feats, proposals, [(16, 16)])
    detections = heads.detect(scorer, proposals)
    assert len(calls) == 2 and torch.equal(calls[0][0], proposals[0])
    best = scores[0].argmax(dim=1)
    torch.testing.assert_close(calls[1][0], boxes[0][torch.arange(2), best])  # each RoI's box for its best class
    assert set(detections[0]) == {"boxes", "scores", "labels"}


def test_training_forward_needs_targets():
    heads = make_heads()
    heads.train()
    with pytest.raises(ValueError, match="targets"):
        heads(torch.randn(1, 4, 8, 8), [torch.tensor([[0.0, 0.0, 4.0, 4.0]])], [(8, 8)])
