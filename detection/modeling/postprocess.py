"""Test-time steps after the predictor, each a small part the RoI heads are built with (detection/build.py).

    scores, boxes = scorer(proposals)               # box head → predictor → BoxDecoder, per image
    scores, boxes = refine_boxes(scorer, scores, boxes)   # optional: box refinement (Appendix B)
    detections = [selector(s, b) for s, b in zip(scores, boxes)]   # threshold, per-class NMS, voting, top-k

A *scorer* maps per-image boxes (``[R_i, 4]`` xyxy, in one reference frame) to per-image foreground
probabilities ``[R_i, K]`` and class-specific boxes ``[R_i, K, 4]`` in the same frame. Single-scale inference,
the multi-scale pyramid (detection/testtime/pyramid.py) and later flip or ensemble testing differ only in their scorer,
so refinement, voting and NMS compose with every one of them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import batched_nms

from detection.modeling.boxes import box_voting, clip_boxes_to_image, decode_boxes

__all__ = ["BatchedNMS", "BoxDecoder", "BoxVoting", "DetectionSelector", "Scorer", "refine_boxes"]

Scorer = Callable[[list[Tensor]], tuple[list[Tensor], list[Tensor]]]


class BoxDecoder(nn.Module):
    """Predictor outputs → per image foreground probabilities ``[R, K]`` (softmax without the background column)
    and per-class boxes ``[R, K, 4]``: the class-specific deltas applied to the RoIs, clipped to the image."""

    def __init__(self, *, num_classes: int, weights: tuple[float, float, float, float]) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.weights = tuple(weights)

    def forward(
        self, logits: Tensor, deltas: Tensor, rois: list[Tensor], image_sizes: list[tuple[int, int]]
    ) -> tuple[list[Tensor], list[Tensor]]:
        probs = F.softmax(logits.float(), dim=1)[:, 1:]
        boxes = decode_boxes(deltas.float(), torch.cat(rois), self.weights).view(-1, self.num_classes, 4)
        counts = [r.shape[0] for r in rois]  # not len(): torch.export keeps NMS's data-dependent sizes symbolic
        out_boxes = [
            clip_boxes_to_image(b.reshape(-1, 4), size).view(-1, self.num_classes, 4)
            for b, size in zip(boxes.split(counts), image_sizes)
        ]
        return list(probs.split(counts)), out_boxes

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, weights={self.weights}"


class BoxVoting(nn.Module):
    """Box voting (Appendix B): each kept box becomes the score-weighted mean of its class's candidates (before
    NMS) with IoU ≥ ``iou_thresh``; scores are unchanged (``detection.modeling.boxes.box_voting``)."""

    def __init__(self, *, iou_thresh: float = 0.5) -> None:
        super().__init__()
        self.iou_thresh = iou_thresh

    def forward(
        self, kept_boxes: Tensor, kept_labels: Tensor, boxes: Tensor, scores: Tensor, labels: Tensor
    ) -> Tensor:
        """``kept_*``: after NMS ``[D]``; ``boxes/scores/labels``: the candidates NMS chose from ``[M]``."""
        voted = kept_boxes.clone()
        for label in kept_labels.unique():
            in_class = labels == label
            rows = torch.nonzero(kept_labels == label).squeeze(1)
            voted[rows] = box_voting(kept_boxes[rows], boxes[in_class], scores[in_class], self.iou_thresh)
        return voted

    def extra_repr(self) -> str:
        return f"iou_thresh={self.iou_thresh}"


class BatchedNMS(nn.Module):
    """Per-class greedy NMS as a part (the :class:`DetectionSelector`'s): ``(boxes [M, 4] xyxy, scores [M],
    labels [M], iou_thresh)`` → int64 indices of the kept boxes by decreasing score
    (``torchvision.ops.batched_nms``: boxes of different labels never suppress each other)."""

    def forward(self, boxes: Tensor, scores: Tensor, labels: Tensor, iou_thresh: float) -> Tensor:
        return batched_nms(boxes, scores, labels, iou_thresh)


class DetectionSelector(nn.Module):
    """One image's ``scores [R, K]`` and ``boxes [R, K, 4]`` → ``{"boxes" [D, 4], "scores" [D], "labels" [D]}``:
    score threshold, drop degenerate boxes, per-class NMS at ``nms_thresh`` (0.3 after box refinement, as the
    paper) by the ``nms`` part (default :class:`BatchedNMS`), optional voting, the ``detections_per_img`` best.
    Labels are 1..K.

    Degenerate boxes are those with a side of at most ``min_box_size`` px; ``None`` keeps them all (detectron2
    drops empty boxes only after the top k, in the original image: ``ImageTransform(drop_empty_boxes=True)``)."""

    def __init__(
        self,
        *,
        score_thresh: float,
        nms_thresh: float,
        detections_per_img: int,
        voting: BoxVoting | None = None,
        nms: BatchedNMS | None = None,
        min_box_size: float | None = 1e-2,
    ) -> None:
        super().__init__()
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_img = detections_per_img
        self.voting = voting
        self.nms = BatchedNMS() if nms is None else nms
        self.min_box_size = min_box_size

    def forward(self, scores: Tensor, boxes: Tensor) -> dict[str, Tensor]:
        num_classes = scores.shape[1]
        labels = torch.arange(1, num_classes + 1, device=scores.device).expand_as(scores)
        scores, boxes, labels = scores.reshape(-1), boxes.reshape(-1, 4), labels.reshape(-1)
        keep = scores > self.score_thresh
        if self.min_box_size is not None:
            keep = keep & (boxes[:, 2:] - boxes[:, :2] > self.min_box_size).all(dim=1)
        keep = torch.nonzero(keep).squeeze(1)
        scores, boxes, labels = scores[keep], boxes[keep], labels[keep]
        keep = self.batched_nms(boxes, scores, labels)[: self.detections_per_img]
        kept_boxes = boxes[keep]
        if self.voting is not None and keep.numel():
            kept_boxes = self.voting(kept_boxes, labels[keep], boxes, scores, labels)
        return {"boxes": kept_boxes, "scores": scores[keep], "labels": labels[keep]}

    def batched_nms(self, boxes: Tensor, scores: Tensor, labels: Tensor) -> Tensor:
        """Per-class NMS at ``nms_thresh`` by the ``nms`` part: indices into ``boxes [M, 4]``, by decreasing score
        (detection/deploy/export.py overrides this with a form that has no data-dependent branch)."""
        return self.nms(boxes, scores, labels, self.nms_thresh)

    def extra_repr(self) -> str:
        return (f"score_thresh={self.score_thresh}, nms_thresh={self.nms_thresh}, "
                f"detections_per_img={self.detections_per_img}, min_box_size={self.min_box_size}")


def refine_boxes(scorer: Scorer, scores: list[Tensor], boxes: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
    """Box refinement (Appendix B): each RoI's box for its best class is scored again by ``scorer`` (pooled anew,
    predicted anew); the result is the union of the first and the second predictions, ``[2R, K]`` / ``[2R, K, 4]``.
    """
    refined = [b[torch.arange(len(b), device=b.device), s.argmax(dim=1)] for s, b in zip(scores, boxes)]
    new_scores, new_boxes = scorer(refined)
    return (
        [torch.cat(pair) for pair in zip(scores, new_scores)],
        [torch.cat(pair) for pair in zip(boxes, new_boxes)],
    )
