"""detection/modeling/postprocess.py: decoding, selection (NMS, voting, top-k) and refinement on hand-made cases."""

import torch

from detection.modeling.postprocess import BatchedNMS, BoxDecoder, BoxVoting, DetectionSelector, refine_boxes


def test_select_thresholds_nms_and_topk():
    selector = DetectionSelector(score_thresh=0.1, nms_thresh=0.5, detections_per_img=2)
    scores = torch.tensor([[0.9, 0.05, 0.0], [0.8, 0.0, 0.7], [0.3, 0.0, 0.0]])
    box = torch.tensor([0.0, 0.0, 10.0, 10.0])
    boxes = torch.stack([box.repeat(3, 1), box.repeat(3, 1), (box + 100).repeat(3, 1)])
    out = selector(scores, boxes)
    # class 1: RoI0 (0.9) suppresses RoI1 (0.8) at IoU 1; RoI2 (0.3) survives; class 3: 0.7 kept → top-2 by score
    assert out["labels"].tolist() == [1, 3]
    torch.testing.assert_close(out["scores"], torch.tensor([0.9, 0.7]))


def test_nms_threshold_is_the_selectors():
    # Two class-1 boxes with IoU 0.4: kept apart at NMS 0.5, merged at 0.3 (the paper's threshold after refinement).
    boxes = torch.tensor([[[0.0, 0.0, 10.0, 10.0]], [[0.0, 0.0, 10.0, 4.0]]])
    scores = torch.tensor([[0.9], [0.8]])
    assert len(DetectionSelector(score_thresh=0.0, nms_thresh=0.5, detections_per_img=10)(scores, boxes)["boxes"]) == 2
    assert len(DetectionSelector(score_thresh=0.0, nms_thresh=0.3, detections_per_img=10)(scores, boxes)["boxes"]) == 1


def test_nms_is_the_selectors_part():
    """The selector's per-class NMS is the part it was built with, called with its threshold."""
    calls = []

    class Recording(BatchedNMS):
        def forward(self, boxes, scores, labels, iou_thresh):
            calls.append((len(boxes), labels.tolist(), iou_thresh))
            return super().forward(boxes, scores, labels, iou_thresh)

    boxes = torch.tensor([[[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]], [[0.0, 0.0, 10.0, 4.0]] * 2])
    scores = torch.tensor([[0.9, 0.6], [0.8, 0.7]])
    selector = DetectionSelector(score_thresh=0.0, nms_thresh=0.3, detections_per_img=10, nms=Recording())
    assert "Recording()" in repr(selector)
    out = selector(scores, boxes)
    assert calls == [(4, [1, 2, 1, 2], 0.3)]
    assert out["labels"].tolist() == [1, 2]  # per class: boxes of different labels never suppress each other
    assert isinstance(DetectionSelector(score_thresh=0.0, nms_thresh=0.3, detections_per_img=1).nms, BatchedNMS)


def test_voting_averages_the_kept_box_with_its_class_candidates():
    selector = DetectionSelector(score_thresh=0.0, nms_thresh=0.3, detections_per_img=10,
                                 voting=BoxVoting(iou_thresh=0.5))
    boxes = torch.tensor([[[0.0, 0.0, 10.0, 10.0]], [[0.0, 0.0, 10.0, 12.0]], [[50.0, 50.0, 60.0, 60.0]]])
    scores = torch.tensor([[0.6], [0.2], [0.5]])
    out = selector(scores, boxes)
    # box 0 keeps; box 1 (IoU 10/12 ≥ 0.5) votes with weight 0.2: y2 = (0.6·10 + 0.2·12) / 0.8 = 10.5
    torch.testing.assert_close(out["boxes"][0], torch.tensor([0.0, 0.0, 10.0, 10.5]))
    torch.testing.assert_close(out["boxes"][1], torch.tensor([50.0, 50.0, 60.0, 60.0]))
    torch.testing.assert_close(out["scores"], torch.tensor([0.6, 0.5]))


def test_decoder_softmax_without_background_and_clips():
    decoder = BoxDecoder(num_classes=2, weights=(10.0, 10.0, 5.0, 5.0))
    logits = torch.tensor([[0.0, 0.0, 0.0]])
    deltas = torch.tensor([[0.0, 0.0, 0.0, 0.0, 10.0, 0.0, 0.0, 0.0]])  # class 2 moves right by one width
    scores, boxes = decoder(logits, deltas, [torch.tensor([[0.0, 0.0, 10.0, 10.0]])], [(20, 15)])
    torch.testing.assert_close(scores[0], torch.full((1, 2), 1 / 3))
    torch.testing.assert_close(boxes[0][0, 0], torch.tensor([0.0, 0.0, 10.0, 10.0]))
    torch.testing.assert_close(boxes[0][0, 1], torch.tensor([10.0, 0.0, 15.0, 10.0]))  # clipped at x = 15


def test_refine_boxes_rescores_best_class_boxes_and_keeps_both():
    scores = [torch.tensor([[0.2, 0.7]])]
    boxes = [torch.tensor([[[0.0, 0.0, 5.0, 5.0], [1.0, 1.0, 6.0, 6.0]]])]
    seen = []

    def scorer(rois):
        seen.append(rois)
        return [torch.tensor([[0.1, 0.9]])], [rois[0][:, None, :].repeat(1, 2, 1) + 1]

    s, b = refine_boxes(scorer, scores, boxes)
    torch.testing.assert_close(seen[0][0], torch.tensor([[1.0, 1.0, 6.0, 6.0]]))
    assert s[0].shape == (2, 2) and b[0].shape == (2, 2, 4)
    torch.testing.assert_close(b[0][1, 0], torch.tensor([2.0, 2.0, 7.0, 7.0]))
