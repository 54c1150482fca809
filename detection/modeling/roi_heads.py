"""The C4 RoI heads (Appendix A): a box head (RoI pooling on the conv4 map → conv5_x → mean over space) → sibling
(K+1)-way classifier and class-specific box regressor (4K); in training, RoI sampling and the Fast R-CNN losses;
at test time the post-processing parts of detection/modeling/postprocess.py. Background is class 0, as in torchvision.

Every part is passed in (detection/build.py chooses them): the box head (``detection.modeling.box_head``; global context
wraps it), the predictor, the box decoder, the selector (NMS, voting) and whether to refine boxes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detection.modeling.boxes import BELOW_LOW, box_iou, encode_boxes
from detection.modeling.postprocess import BoxDecoder, DetectionSelector, Scorer, refine_boxes
from detection.modeling.sampling import sample_labels


class BoxPredictor(nn.Module):
    """Sibling layers: ``[R, C]`` → class logits ``[R, K+1]`` and class-specific deltas ``[R, 4K]``."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.cls_score = nn.Linear(in_features, num_classes + 1)
        self.bbox_pred = nn.Linear(in_features, 4 * num_classes)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.cls_score(x), self.bbox_pred(x)


class C4RoIHeads(nn.Module):
    """``forward(features, proposals, image_sizes, targets)``: in training ``([], losses)``; at test time
    ``(detections, {})`` with boxes in the pixels of the batched input. The test-time path is public in pieces
    (:meth:`box_features`, :meth:`predict`, :meth:`score`, :meth:`detect`) so that test-time variants
    (detection/testtime/pyramid.py) reuse it instead of copying it."""

    def __init__(
        self,
        *,
        box_head: nn.Module,
        predictor: BoxPredictor,
        decoder: BoxDecoder,
        selector: DetectionSelector,
        box_refinement: bool = False,
        batch_size_per_image: int = 128,
        positive_fraction: float = 0.25,
        fg_iou_thresh: float = 0.5,
        bg_iou_low: float = 0.0,
        add_gt_as_proposals: bool = True,
        smooth_l1_beta: float = 1.0,
    ) -> None:
        super().__init__()
        self.box_head = box_head
        self.predictor = predictor
        self.decoder = decoder
        self.selector = selector
        self.box_refinement = box_refinement
        self.num_classes = decoder.num_classes
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction
        self.fg_iou_thresh = fg_iou_thresh
        self.bg_iou_low = bg_iou_low
        self.add_gt_as_proposals = add_gt_as_proposals
        self.smooth_l1_beta = smooth_l1_beta

    def forward(
        self,
        features: Tensor,
        proposals: list[Tensor],
        image_sizes: list[tuple[int, int]],
        targets: list[dict[str, Tensor]] | None = None,
    ) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        if not self.training:
            return self.detect(lambda boxes: self.score(features, boxes, image_sizes), proposals), {}
        if targets is None:
            raise ValueError("the RoI head needs targets in training mode")
        rois, labels, regression_targets = self.sample_proposals(proposals, targets)
        logits, deltas = self.predictor(self.box_features(features, rois, image_sizes))
        return [], self.losses(logits, deltas, labels, regression_targets, len(targets))

    # --- the test-time path, in public pieces ----------------------------------------------------------------
    def box_features(self, features: Tensor, boxes: list[Tensor], image_sizes: list[tuple[int, int]]) -> Tensor:
        """The box head: per-image boxes (pixels of ``features``' input) → ``[R, C]`` (``[R, 2C]`` with context)."""
        return self.box_head(features, boxes, image_sizes)

    def predict(
        self, box_features: Tensor, boxes: list[Tensor], image_sizes: list[tuple[int, int]]
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Predictor + decoder: per image probabilities ``[R_i, K]`` and boxes ``[R_i, K, 4]`` clipped to its size."""
        logits, deltas = self.predictor(box_features)
        return self.decoder(logits, deltas, boxes, image_sizes)

    def score(
        self, features: Tensor, boxes: list[Tensor], image_sizes: list[tuple[int, int]]
    ) -> tuple[list[Tensor], list[Tensor]]:
        """:meth:`box_features` then :meth:`predict`: the single-scale scorer."""
        return self.predict(self.box_features(features, boxes, image_sizes), boxes, image_sizes)

    def detect(self, scorer: Scorer, proposals: list[Tensor]) -> list[dict[str, Tensor]]:
        """Score the proposals, refine them if configured (scored again by the same ``scorer``), then select."""
        scores, boxes = scorer(proposals)
        if self.box_refinement:
            scores, boxes = refine_boxes(scorer, scores, boxes)
        return [self.selector(s, b) for s, b in zip(scores, boxes)]

    # --- training -------------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample_proposals(
        self, proposals: list[Tensor], targets: list[dict[str, Tensor]]
    ) -> tuple[list[Tensor], Tensor, Tensor]:
        """128 RoIs per image, ≤ 25% with IoU ≥ 0.5 (foreground, labelled with their GT's class), the rest
        background with IoU in [bg_iou_low, 0.5). Returns per-image RoIs, labels ``[R]``, deltas ``[R, 4]``."""
        rois, all_labels, all_targets = [], [], []
        for boxes, target in zip(proposals, targets):
            gt_boxes, gt_labels = target["boxes"].to(boxes.dtype), target["labels"]
            if self.add_gt_as_proposals and gt_boxes.numel():
                boxes = torch.cat((boxes, gt_boxes))
            if gt_boxes.numel():
                iou, matched = box_iou(gt_boxes, boxes).max(dim=0)
                labels = gt_labels[matched].clone()
                labels[iou < self.fg_iou_thresh] = 0
                labels[iou < self.bg_iou_low] = -1
            else:
                matched = torch.full((boxes.shape[0],), BELOW_LOW, dtype=torch.int64, device=boxes.device)
                labels = torch.zeros(boxes.shape[0], dtype=torch.int64, device=boxes.device)
            pos, neg = sample_labels(labels, self.batch_size_per_image, self.positive_fraction)
            keep = torch.cat((pos, neg))
            rois.append(boxes[keep])
            all_labels.append(labels[keep])
            reg = torch.zeros((keep.numel(), 4), dtype=boxes.dtype, device=boxes.device)
            if pos.numel():
                reg[: pos.numel()] = encode_boxes(gt_boxes[matched[pos]], boxes[pos], self.decoder.weights)
            all_targets.append(reg)
        return rois, torch.cat(all_labels), torch.cat(all_targets)

    def losses(
        self, logits: Tensor, deltas: Tensor, labels: Tensor, regression_targets: Tensor, num_images: int
    ) -> dict[str, Tensor]:
        """Softmax cross-entropy over the sampled RoIs; smooth-L1 on the foreground RoIs' class-specific deltas.

        Both are sums divided by RoIs-per-image × images: the Fast R-CNN mean whenever an image yields its full
        128 RoIs, and a fixed normaliser, so the mean over data-parallel workers is the combined batch's loss."""
        normaliser = self.batch_size_per_image * num_images
        loss_cls = F.cross_entropy(logits.float(), labels, reduction="sum") / normaliser
        fg = torch.nonzero(labels > 0).squeeze(1)
        if fg.numel() == 0:
            return {"loss_cls": loss_cls, "loss_box": deltas.sum() * 0.0}
        deltas = deltas.float().view(deltas.shape[0], self.num_classes, 4)[fg, labels[fg] - 1]
        loss_box = F.smooth_l1_loss(deltas, regression_targets[fg], beta=self.smooth_l1_beta, reduction="sum")
        return {"loss_cls": loss_cls, "loss_box": loss_box / normaliser}
