import math

import pytest
import torch

from detection.modeling.anchors import AnchorGenerator
from detection.modeling.boxes import NMS
from detection.modeling.rpn import RegionProposalNetwork, RPNHead


def make_rpn(**kw):
    return RegionProposalNetwork(anchor_generator=AnchorGenerator([32.0], [1.0], 16), head=RPNHead(8, 8, 1), **kw)


def test_head_and_generator_must_agree_on_anchors_per_position():
    with pytest.raises(ValueError, match="anchors per position"):
        RegionProposalNetwork(anchor_generator=AnchorGenerator([32.0, 64.0], [1.0], 16), head=RPNHead(8, 8, 1))


def test_rpn_loss_on_hand_made_case():
    """4×4 map, one 32-px anchor per cell; a GT equal to the anchor at cell (1, 1) is the only positive.

    With zero head outputs every logit is 0 → BCE = log 2 per sampled anchor. The four anchors beside it overlap
    the GT at IoU 1/3 (between 0.3 and 0.7: ignored), so 12 of the 16 anchors are sampled, normalised by
    batch_size_per_image × images = 16. The positive's regression target and prediction are both 0."""
    torch.manual_seed(0)
    rpn = make_rpn(batch_size_per_image=16, positive_fraction=0.5)
    for p in rpn.parameters():
        torch.nn.init.zeros_(p)
    rpn.train()
    features = torch.randn(1, 8, 4, 4)
    gt = torch.tensor([[0.0, 0.0, 32.0, 32.0]])  # anchor at (16, 16) spans [0, 32]
    _, losses = rpn(features, [(64, 64)], [{"boxes": gt, "labels": torch.tensor([1])}])
    torch.testing.assert_close(losses["loss_rpn_cls"], torch.tensor(12 / 16 * math.log(2.0)))
    torch.testing.assert_close(losses["loss_rpn_box"], torch.tensor(0.0))


def test_rpn_box_loss_value():
    torch.manual_seed(0)
    rpn = make_rpn(batch_size_per_image=4, positive_fraction=0.5, smooth_l1_beta=1.0)
    for p in rpn.parameters():
        torch.nn.init.zeros_(p)
    rpn.train()
    # GT shifted by 8 px in x from the anchor at (16,16): IoU = 24·32/(40·32) = 0.6 < 0.7, but it is the GT's best
    # anchor → positive. Target dx = 8/32 = 0.25 → smooth-L1(β=1) = 0.5·0.25² = 0.03125, /4 sampled.
    gt = torch.tensor([[8.0, 0.0, 40.0, 32.0]])
    _, losses = rpn(torch.randn(1, 8, 4, 4), [(64, 64)], [{"boxes": gt, "labels": torch.tensor([1])}])
    # Anchor at cell (1,1) [0,32] and cell (1,2) [16,48] both have IoU 0.6 with the GT: both are its best → 2 pos.
    torch.testing.assert_close(losses["loss_rpn_box"], torch.tensor(2 * 0.03125 / 4))


def test_proposals_are_clipped_sorted_and_capped():
    torch.manual_seed(0)
    rpn = make_rpn(post_nms_top_n=(5, 3), pre_nms_top_n=(50, 50))
    rpn.eval()
    proposals, losses = rpn(torch.randn(2, 8, 4, 4), [(64, 64), (50, 40)])
    assert losses == {}
    assert [len(p) for p in proposals] == [3, 3]
    assert (proposals[1][:, 2] <= 40).all() and (proposals[1][:, 3] <= 50).all() and (proposals[1] >= 0).all()


def test_proposals_come_from_the_nms_part_with_the_rpns_threshold_and_count():
    """The RPN keeps what its ``nms`` part returns, asked with ``nms_thresh`` and the test-time post-NMS count."""
    calls = []

    class Recording(NMS):
        def forward(self, boxes, scores, iou_thresh, max_kept=None):
            calls.append((len(boxes), iou_thresh, max_kept))
            return super().forward(boxes, scores, iou_thresh, max_kept)

    torch.manual_seed(0)
    plain = make_rpn(pre_nms_top_n=(50, 40), post_nms_top_n=(20, 5), nms_thresh=0.6).eval()
    recording = make_rpn(pre_nms_top_n=(50, 40), post_nms_top_n=(20, 5), nms_thresh=0.6, nms=Recording()).eval()
    recording.load_state_dict(plain.state_dict())
    assert isinstance(plain.nms, NMS) and "Recording()" in repr(recording)
    features = torch.randn(1, 8, 6, 6)
    with torch.no_grad():
        expected, got = plain(features, [(96, 96)])[0], recording(features, [(96, 96)])[0]
    assert calls and all(c[1:] == (0.6, 5) for c in calls)
    assert len(got[0]) <= 5 and torch.equal(got[0], expected[0])
