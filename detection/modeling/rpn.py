"""Region Proposal Network on the conv4 map: 3×3 conv + ReLU, sibling 1×1 objectness (A) and deltas (4A)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detection.modeling.anchors import AnchorGenerator
from detection.modeling.boxes import (
    BELOW_LOW,
    BETWEEN,
    NMS,
    box_iou,
    clip_boxes_to_image,
    decode_boxes,
    encode_boxes,
    match_boxes,
)
from detection.modeling.sampling import sample_labels

# The RPN's deltas are unweighted (Faster R-CNN).
RPN_DELTA_WEIGHTS = (1.0, 1.0, 1.0, 1.0)


class RPNHead(nn.Module):
    """3×3 conv + ReLU, then sibling 1×1 convolutions: objectness (A per position) and deltas (4A)."""

    def __init__(self, in_channels: int, conv_channels: int, num_anchors: int) -> None:
        super().__init__()
        self.num_anchors = num_anchors
        self.conv = nn.Conv2d(in_channels, conv_channels, 3, padding=1)
        self.objectness = nn.Conv2d(conv_channels, num_anchors, 1)
        self.deltas = nn.Conv2d(conv_channels, 4 * num_anchors, 1)
        for layer in (self.conv, self.objectness, self.deltas):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """``[B, C, H, W]`` → objectness logits ``[B, H·W·A]`` and deltas ``[B, H·W·A, 4]`` (anchor order y, x, a)."""
        hidden = F.relu(self.conv(features))
        batch = features.shape[0]
        logits = self.objectness(hidden).permute(0, 2, 3, 1).reshape(batch, -1)
        deltas = self.deltas(hidden)
        h, w = deltas.shape[-2:]
        deltas = deltas.view(batch, -1, 4, h, w).permute(0, 3, 4, 1, 2).reshape(batch, -1, 4)
        return logits, deltas


class RegionProposalNetwork(nn.Module):
    """Proposals for each image and, in training, the RPN losses (objectness BCE + smooth-L1 on positives).

    ``nms`` is the part that keeps the first ``post_nms_top_n`` proposals (default: torchvision's NMS,
    :class:`detection.modeling.boxes.NMS`; ``detection.fast.optimize`` swaps in an exact faster one)."""

    def __init__(
        self,
        *,
        anchor_generator: AnchorGenerator,
        head: RPNHead,
        nms: NMS | None = None,
        fg_iou_thresh: float = 0.7,
        bg_iou_thresh: float = 0.3,
        batch_size_per_image: int = 256,
        positive_fraction: float = 0.5,
        pre_nms_top_n: tuple[int, int] = (12000, 6000),
        post_nms_top_n: tuple[int, int] = (2000, 300),
        nms_thresh: float = 0.7,
        min_box_size: float = 0.0,
        smooth_l1_beta: float = 1.0 / 9.0,
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if head.num_anchors != anchor_generator.num_anchors:
            raise ValueError(
                f"the RPN head predicts {head.num_anchors} anchors per position, the generator makes "
                f"{anchor_generator.num_anchors}"
            )
        self.anchors = anchor_generator
        self.head = head
        self.nms = NMS() if nms is None else nms
        self.fg_iou_thresh = fg_iou_thresh
        self.bg_iou_thresh = bg_iou_thresh
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction
        self.pre_nms_top_n = pre_nms_top_n  # (train, test)
        self.post_nms_top_n = post_nms_top_n
        self.nms_thresh = nms_thresh
        self.min_box_size = min_box_size
        self.smooth_l1_beta = smooth_l1_beta
        self.loss_weight = loss_weight

    def forward(
        self, features: Tensor, image_sizes: list[tuple[int, int]], targets: list[dict[str, Tensor]] | None = None
    ) -> tuple[list[Tensor], dict[str, Tensor]]:
        logits, deltas = self.head(features)
        anchors = self.anchors(features.shape[-2], features.shape[-1], features.device)
        with torch.no_grad():
            proposals = self.select_proposals(anchors, logits.detach().float(), deltas.detach().float(), image_sizes)
        losses: dict[str, Tensor] = {}
        if self.training:
            if targets is None:
                raise ValueError("the RPN needs targets in training mode")
            losses = self.losses(anchors, logits, deltas, targets)
        return proposals, losses

    @torch.no_grad()
    def propose(self, features: Tensor, image_sizes: list[tuple[int, int]]) -> tuple[list[Tensor], list[Tensor]]:
        """Proposals as ``forward`` selects them, with their objectness: per image ``[P, 4]`` xyxy boxes (in the
        pixels of ``image_sizes``) and ``[P]`` probabilities, in descending order (ensembles NMS the union of
        several RPNs' proposals by these scores, detection/testtime/ensemble.py)."""
        logits, deltas = self.head(features)
        anchors = self.anchors(features.shape[-2], features.shape[-1], features.device)
        scored = self.select_scored_proposals(anchors, logits.float(), deltas.float(), image_sizes)
        return [boxes for boxes, _ in scored], [scores.sigmoid() for _, scores in scored]

    def select_proposals(
        self, anchors: Tensor, logits: Tensor, deltas: Tensor, image_sizes: list[tuple[int, int]]
    ) -> list[Tensor]:
        """Per image: top pre-NMS by objectness, decode, clip, drop tiny, NMS, top post-NMS. ``[P, 4]`` each."""
        return [boxes for boxes, _ in self.select_scored_proposals(anchors, logits, deltas, image_sizes)]

    def select_scored_proposals(
        self, anchors: Tensor, logits: Tensor, deltas: Tensor, image_sizes: list[tuple[int, int]]
    ) -> list[tuple[Tensor, Tensor]]:
        """:meth:`select_proposals` with each proposal's objectness logit: per image ``([P, 4], [P])``."""
        mode = 0 if self.training else 1
        pre_n = min(self.pre_nms_top_n[mode], logits.shape[1])
        post_n = self.post_nms_top_n[mode]
        top_logits, top_idx = logits.topk(pre_n, dim=1)
        proposals = []
        for i, size in enumerate(image_sizes):
            boxes = decode_boxes(deltas[i, top_idx[i]], anchors[top_idx[i]], RPN_DELTA_WEIGHTS)
            boxes = clip_boxes_to_image(boxes, size)
            scores = top_logits[i]
            wh = boxes[:, 2:] - boxes[:, :2]
            keep = torch.nonzero((wh > self.min_box_size).all(dim=1) & torch.isfinite(scores)).squeeze(1)
            boxes, scores = boxes[keep], scores[keep]
            keep = self.nms(boxes, scores, self.nms_thresh, post_n)
            proposals.append((boxes[keep], scores[keep]))
        return proposals

    def losses(
        self, anchors: Tensor, logits: Tensor, deltas: Tensor, targets: list[dict[str, Tensor]]
    ) -> dict[str, Tensor]:
        sampled_pos, sampled_neg, regression = [], [], []
        offset = 0
        for target in targets:
            gt = target["boxes"]
            if gt.numel() == 0:
                labels = torch.zeros(anchors.shape[0], device=anchors.device)
                matched = torch.full_like(labels, BELOW_LOW, dtype=torch.int64)
            else:
                matched = match_boxes(box_iou(gt, anchors), self.fg_iou_thresh, self.bg_iou_thresh, True)
                labels = (matched >= 0).float()
                labels[matched == BETWEEN] = -1
            pos, neg = sample_labels(labels, self.batch_size_per_image, self.positive_fraction)
            if pos.numel():
                regression.append(encode_boxes(gt[matched[pos]], anchors[pos], RPN_DELTA_WEIGHTS))
            sampled_pos.append(pos + offset)
            sampled_neg.append(neg + offset)
            offset += anchors.shape[0]
        pos = torch.cat(sampled_pos)
        neg = torch.cat(sampled_neg)
        flat_logits = logits.reshape(-1)
        flat_deltas = deltas.reshape(-1, 4)
        # A fixed normaliser (anchors per image × images) rather than the number actually sampled, so that the
        # mean over data-parallel workers equals the loss of the combined batch.
        num_sampled = self.batch_size_per_image * len(targets)
        objectness_targets = torch.cat((torch.ones_like(pos), torch.zeros_like(neg))).to(flat_logits.dtype)
        loss_objectness = F.binary_cross_entropy_with_logits(
            flat_logits[torch.cat((pos, neg))], objectness_targets, reduction="sum"
        ) / num_sampled
        if pos.numel():
            loss_box = F.smooth_l1_loss(
                flat_deltas[pos].float(), torch.cat(regression), beta=self.smooth_l1_beta, reduction="sum"
            ) / num_sampled
        else:
            loss_box = flat_deltas.sum() * 0.0
        return {
            "loss_rpn_cls": loss_objectness * self.loss_weight,
            "loss_rpn_box": loss_box * self.loss_weight,
        }
