import math

import torch
from torch import nn

from detection.roi_heads import C4RoIHeads


class MeanHead(nn.Module):
    """A stand-in for conv5_x + pool: the per-channel mean of the pooled RoI."""

    out_channels = 4

    def forward(self, x):
        return x.mean(dim=(2, 3))


def make_heads(**kw):
    args = dict(head=MeanHead(), head_channels=4, num_classes=3, pooler_resolution=2, spatial_scale=1.0)
    args.update(kw)
    return C4RoIHeads(**args)


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


def test_select_thresholds_nms_and_topk():
    heads = make_heads(score_thresh=0.1, nms_thresh=0.5, detections_per_img=2)
    scores = torch.tensor([[0.9, 0.05, 0.0], [0.8, 0.0, 0.7], [0.3, 0.0, 0.0]])
    box = torch.tensor([0.0, 0.0, 10.0, 10.0])
    boxes = torch.stack([box.repeat(3, 1), box.repeat(3, 1), (box + 100).repeat(3, 1)])
    out = heads.select(scores, boxes, 0.5)
    # class 1: RoI0 (0.9) suppresses RoI1 (0.8) at IoU 1; RoI2 (0.3) survives; class 3: 0.7 kept → top-2 by score
    assert out["labels"].tolist() == [1, 3]
    torch.testing.assert_close(out["scores"], torch.tensor([0.9, 0.7]))


def test_global_context_doubles_features():
    heads = make_heads(global_context=True)
    feats = torch.randn(1, 4, 8, 8)
    out = heads.box_features(feats, [torch.tensor([[0.0, 0.0, 4.0, 4.0], [2.0, 2.0, 6.0, 6.0]])], [(8, 8)])
    assert out.shape == (2, 8)
    torch.testing.assert_close(out[0, 4:], out[1, 4:])  # the same whole-image context for both RoIs
    whole = heads.head(heads.pool(feats, [torch.tensor([[0.0, 0.0, 8.0, 8.0]])]))
    torch.testing.assert_close(out[0, 4:], whole[0])


def test_box_refinement_unions_predictions():
    heads = make_heads(box_refinement=True)
    heads.eval()
    feats = torch.randn(1, 4, 16, 16)
    proposals = [torch.tensor([[0.0, 0.0, 8.0, 8.0], [4.0, 4.0, 12.0, 12.0]])]
    logits, deltas = heads.predictor(heads.box_features(feats, proposals, [(16, 16)]))
    scores, boxes = heads.decode(logits, deltas, proposals, [(16, 16)])
    s2, b2 = heads.refine(feats, scores, boxes, [(16, 16)])
    assert s2[0].shape == (4, 3) and b2[0].shape == (4, 3, 4)
    torch.testing.assert_close(s2[0][:2], scores[0])
