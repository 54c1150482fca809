"""The C4 RoI head (Appendix A): RoI pooling on the conv4 map → conv5_x + global average pool per RoI →
sibling (K+1)-way classifier and class-specific box regressor (4K). Background is class 0, as in torchvision.

Appendix B's improvements live here too: global context (the whole-image box pooled through the same conv5 head
and concatenated to every RoI's feature), box refinement (a second pass on the regressed boxes, union with the
first) and box voting.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import batched_nms, roi_align, roi_pool

from backbones.c4 import C4Head
from detection.boxes import BELOW_LOW, box_iou, box_voting, clip_boxes_to_image, decode_boxes, encode_boxes
from detection.factored_head import factored_head_forward
from detection.pooling import FactoredRoIPool, boxes_to_rois, roi_pool_factored, roi_pool_gather
from detection.sampling import sample_labels


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
    def __init__(
        self,
        *,
        head: nn.Module,
        head_channels: int,
        num_classes: int,
        pooler: str = "roipool",
        pooler_resolution: int = 14,
        sampling_ratio: int = 0,
        spatial_scale: float = 1.0 / 16,
        batch_size_per_image: int = 128,
        positive_fraction: float = 0.25,
        fg_iou_thresh: float = 0.5,
        bg_iou_low: float = 0.0,
        add_gt_as_proposals: bool = True,
        bbox_reg_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0),
        smooth_l1_beta: float = 1.0,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        detections_per_img: int = 100,
        global_context: bool = False,
        box_refinement: bool = False,
        box_voting: bool = False,
        voting_iou_thresh: float = 0.5,
        refinement_nms_thresh: float = 0.3,
    ) -> None:
        super().__init__()
        if pooler not in ("roipool", "roialign"):
            raise ValueError(f"pooler must be 'roipool' or 'roialign', got {pooler!r}")
        self.head = head
        self.num_classes = num_classes
        self.pooler = pooler
        self.pooler_resolution = pooler_resolution
        self.sampling_ratio = sampling_ratio
        self.spatial_scale = spatial_scale
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction
        self.fg_iou_thresh = fg_iou_thresh
        self.bg_iou_low = bg_iou_low
        self.add_gt_as_proposals = add_gt_as_proposals
        self.bbox_reg_weights = tuple(bbox_reg_weights)
        self.smooth_l1_beta = smooth_l1_beta
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_img = detections_per_img
        self.global_context = global_context
        self.box_refinement = box_refinement
        self.box_voting = box_voting
        self.voting_iou_thresh = voting_iou_thresh
        self.refinement_nms_thresh = refinement_nms_thresh
        self.predictor = BoxPredictor(head_channels * (2 if global_context else 1), num_classes)

    # --- features -------------------------------------------------------------------------------------------
    def pool(self, features: Tensor, boxes: list[Tensor]) -> Tensor:
        """RoI pooling of per-image boxes (xyxy, pixels of the batched input) → ``[R, C, P, P]``."""
        size = (self.pooler_resolution, self.pooler_resolution)
        # The RoI ops return NCHW; hand a channels-last head (detection/optimize.py) channels-last RoIs, converted
        # once here rather than once per consumer (conv1 and the shortcut of the first conv5 block).
        channels_last = features.dim() == 4 and not features.is_contiguous() and features.is_contiguous(
            memory_format=torch.channels_last
        )
        if self._pool_factored(features):
            pooled = roi_pool_gather(features, boxes_to_rois(boxes), self.pooler_resolution, self.spatial_scale)
            return pooled if channels_last else pooled.contiguous()
        dtype = features.dtype
        if dtype in (torch.float16, torch.bfloat16):
            # Pool low-precision (autocast) features in float32: box coordinates in bf16 are off by pixels at
            # 1000 px, and the CPU RoIPool kernel has no bf16 version.
            features = features.float()
        boxes = [b.to(features.dtype) for b in boxes]
        if self.pooler == "roipool":
            pooled = roi_pool(features, boxes, size, self.spatial_scale)
        else:
            pooled = roi_align(features, boxes, size, self.spatial_scale, self.sampling_ratio, aligned=True)
        return pooled.to(dtype=dtype, memory_format=torch.channels_last if channels_last else torch.contiguous_format)

    def _pool_factored(self, features: Tensor) -> bool:
        # Inference on the CPU: the same numbers as torchvision's kernel, several times faster, in the features'
        # dtype, and in factored form for the head (detection/factored_head.py). Features that need a gradient
        # (training a trunk stage) keep torchvision's op for its backward; CUDA keeps its kernel until the factored
        # path is measured there.
        return self.pooler == "roipool" and features.device.type == "cpu" and not features.requires_grad

    def _roi_pool_factored(self, features: Tensor, boxes: list[Tensor]) -> FactoredRoIPool:
        return roi_pool_factored(features, boxes_to_rois(boxes), self.pooler_resolution, self.spatial_scale)

    def run_head(self, features: Tensor, boxes: list[Tensor]) -> Tensor:
        """RoI pooling + conv5 head: ``[R, C]``."""
        if self._pool_factored(features) and isinstance(self.head, C4Head):
            return factored_head_forward(self.head, self._roi_pool_factored(features, boxes))
        return self.head(self.pool(features, boxes))

    def box_features(self, features: Tensor, boxes: list[Tensor], image_sizes: list[tuple[int, int]]) -> Tensor:
        """conv5_x + pool per RoI → ``[R, C]`` (``[R, 2C]`` with global context)."""
        roi_features = self.run_head(features, boxes)
        if not self.global_context:
            return roi_features
        whole = [torch.tensor([[0.0, 0.0, w, h]], device=features.device) for h, w in image_sizes]
        context = self.run_head(features, whole)
        counts = torch.tensor([len(b) for b in boxes], device=features.device)
        return torch.cat((roi_features, context.repeat_interleave(counts, dim=0)), dim=1)

    # --- forward --------------------------------------------------------------------------------------------
    def forward(
        self,
        features: Tensor,
        proposals: list[Tensor],
        image_sizes: list[tuple[int, int]],
        targets: list[dict[str, Tensor]] | None = None,
    ) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        if self.training:
            if targets is None:
                raise ValueError("the RoI head needs targets in training mode")
            rois, labels, regression_targets = self.sample_proposals(proposals, targets)
            logits, deltas = self.predictor(self.box_features(features, rois, image_sizes))
            return [], self.losses(logits, deltas, labels, regression_targets, len(targets))
        logits, deltas = self.predictor(self.box_features(features, proposals, image_sizes))
        scores, boxes = self.decode(logits, deltas, proposals, image_sizes)
        nms_thresh = self.nms_thresh
        if self.box_refinement:
            scores, boxes = self.refine(features, scores, boxes, image_sizes)
            nms_thresh = self.refinement_nms_thresh
        return [self.select(s, b, nms_thresh) for s, b in zip(scores, boxes)], {}

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
                reg[: pos.numel()] = encode_boxes(gt_boxes[matched[pos]], boxes[pos], self.bbox_reg_weights)
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

    # --- inference ------------------------------------------------------------------------------------------
    def decode(
        self, logits: Tensor, deltas: Tensor, proposals: list[Tensor], image_sizes: list[tuple[int, int]]
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Per image: foreground probabilities ``[R, K]`` and per-class boxes ``[R, K, 4]`` clipped to the image."""
        probs = F.softmax(logits.float(), dim=1)[:, 1:]
        rois = torch.cat(proposals)
        boxes = decode_boxes(deltas.float(), rois, self.bbox_reg_weights).view(-1, self.num_classes, 4)
        counts = [len(p) for p in proposals]
        out_boxes = [
            clip_boxes_to_image(b.reshape(-1, 4), size).view(-1, self.num_classes, 4)
            for b, size in zip(boxes.split(counts), image_sizes)
        ]
        return list(probs.split(counts)), out_boxes

    def refine(
        self, features: Tensor, scores: list[Tensor], boxes: list[Tensor], image_sizes: list[tuple[int, int]]
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Box refinement: pool again from each RoI's box for its best class, predict again, and return the union
        of the original and the new predictions."""
        refined_rois = []
        for s, b in zip(scores, boxes):
            best = s.argmax(dim=1)
            refined_rois.append(b[torch.arange(len(b), device=b.device), best])
        logits, deltas = self.predictor(self.box_features(features, refined_rois, image_sizes))
        new_scores, new_boxes = self.decode(logits, deltas, refined_rois, image_sizes)
        return (
            [torch.cat(pair) for pair in zip(scores, new_scores)],
            [torch.cat(pair) for pair in zip(boxes, new_boxes)],
        )

    def select(self, scores: Tensor, boxes: Tensor, nms_thresh: float) -> dict[str, Tensor]:
        """Score threshold, per-class NMS, optional box voting, top-k. ``scores`` [R, K], ``boxes`` [R, K, 4]."""
        labels = torch.arange(1, self.num_classes + 1, device=scores.device).expand_as(scores)
        scores, boxes, labels = scores.reshape(-1), boxes.reshape(-1, 4), labels.reshape(-1)
        wh = boxes[:, 2:] - boxes[:, :2]
        keep = torch.nonzero((scores > self.score_thresh) & (wh > 1e-2).all(dim=1)).squeeze(1)
        scores, boxes, labels = scores[keep], boxes[keep], labels[keep]
        keep = batched_nms(boxes, scores, labels, nms_thresh)[: self.detections_per_img]
        kept_boxes = boxes[keep]
        if self.box_voting and keep.numel():
            kept_boxes = kept_boxes.clone()
            for label in labels[keep].unique():
                in_class = labels == label
                rows = torch.nonzero(labels[keep] == label).squeeze(1)
                kept_boxes[rows] = box_voting(
                    kept_boxes[rows], boxes[in_class], scores[in_class], self.voting_iou_thresh
                )
        return {"boxes": kept_boxes, "scores": scores[keep], "labels": labels[keep]}
