"""The per-class RPN and the R-CNN stage of the paper's ImageNet localiser (Appendix C).

Both take a classification :class:`~backbones.resnet.ResNet` (pre-trained by ``tools/train_cls.py``) and use its
``forward_features`` (conv1 … conv5_x, stride 32) fully convolutionally.

Where the paper is silent, the choices made here:

- The sibling 1×1 convolutions sit directly on the conv5 map (no 3×3 conv as in the category-agnostic RPN): the
  paper names only the two siblings.
- Per-class targets: an image's anchors are labelled for the image's class only (IoU ≥ ``fg_iou`` with one of its
  boxes: positive, < ``bg_iou``: negative, the best anchor of each box positive as in Faster R-CNN), and only that
  class's logistic output and regressor receive a loss. Each of the K outputs is thus a "class k here or not"
  detector trained on the images of class k, and the class itself is decided by the classifier at test time.
- Sampling: :func:`detection.modeling.sampling.sample_labels` with 8 anchors and a positive fraction of 1/2; an image
  with
  fewer than 4 positives fills up with negatives, as the RPN of Faster R-CNN does.
- Losses: binary cross-entropy and smooth L1 (β = 1/9), both summed and divided by the number of anchors sampled per
  batch (8 × images), as ``detection/modeling/rpn.py``.

Output layout: ``cls`` ``[B, H·W·A, K]`` and ``reg`` ``[B, H·W·A, K, 4]`` in the anchors' (y, x, anchor) order of
:func:`detection.modeling.anchors.grid_anchors`; boxes are 0-based continuous xyxy in the pixels of the network input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detection.modeling.anchors import AnchorGenerator
from detection.modeling.boxes import BETWEEN, box_iou, decode_boxes, encode_boxes, match_boxes
from detection.modeling.rpn import RPN_DELTA_WEIGHTS
from detection.modeling.sampling import sample_labels

__all__ = ["PerClassRPN", "RCNNLocalizer", "assign_anchor_labels", "class_boxes"]

SMOOTH_L1_BETA = 1.0 / 9.0
RCNN_DELTA_WEIGHTS = (10.0, 10.0, 5.0, 5.0)  # Fast R-CNN's, as detection/modeling/roi_heads.py


def assign_anchor_labels(anchors: Tensor, gt_boxes: Tensor, fg_iou: float, bg_iou: float) -> tuple[Tensor, Tensor]:
    """Anchor labels for one image and one class: ``(labels [N] float: 1 positive, 0 negative, -1 ignored,
    matched [N] int64: index of the matched box, or a negative code)``. ``anchors`` [N, 4], ``gt_boxes`` [G, 4]."""
    if gt_boxes.numel() == 0:
        return torch.zeros(anchors.shape[0], device=anchors.device), torch.full(
            (anchors.shape[0],), -1, dtype=torch.int64, device=anchors.device
        )
    matched = match_boxes(box_iou(gt_boxes, anchors), fg_iou, bg_iou, allow_low_quality=True)
    labels = (matched >= 0).float()
    labels[matched == BETWEEN] = -1
    return labels, matched


def class_boxes(deltas: Tensor, references: Tensor, labels: Tensor, weights: tuple[float, ...]) -> Tensor:
    """Per-class decoding: row i takes the regressor of class ``labels[i]``. ``deltas`` [N, K, 4], ``references``
    [N, 4], ``labels`` [N] → boxes [N, 4] xyxy."""
    own = deltas[torch.arange(deltas.shape[0], device=deltas.device), labels]
    return decode_boxes(own, references, weights)


class PerClassRPN(nn.Module):
    """``net`` (a ResNet classifier, its fc unused) → conv5 map → siblings ``cls`` (K·A) and ``reg`` (K·A·4)."""

    def __init__(self, net: nn.Module, num_classes: int, anchor_generator: AnchorGenerator, *, fg_iou: float = 0.7,
                 bg_iou: float = 0.3, anchors_per_image: int = 8, positive_fraction: float = 0.5) -> None:  # fmt: skip
        super().__init__()
        self.net = net
        self.num_classes = num_classes
        self.anchor_generator = anchor_generator
        a = anchor_generator.num_anchors
        self.cls = nn.Conv2d(net.num_features, num_classes * a, 1)
        self.reg = nn.Conv2d(net.num_features, num_classes * a * 4, 1)
        for layer in (self.cls, self.reg):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)
        self.fg_iou, self.bg_iou = fg_iou, bg_iou
        self.anchors_per_image, self.positive_fraction = anchors_per_image, positive_fraction

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``images`` normalised ``[B, 3, H, W]`` → ``(cls logits [B, N, K], deltas [B, N, K, 4], anchors [N, 4])``
        with N = h·w·A anchors of the ``h × w`` conv5 map."""
        features = self.net.forward_features(images)
        b, _, h, w = features.shape
        a, k = self.anchor_generator.num_anchors, self.num_classes
        logits = self.cls(features).view(b, a, k, h, w).permute(0, 3, 4, 1, 2).reshape(b, h * w * a, k)
        deltas = self.reg(features).view(b, a, k, 4, h, w).permute(0, 4, 5, 1, 2, 3).reshape(b, h * w * a, k, 4)
        return logits, deltas, self.anchor_generator(h, w, images.device)

    def losses(self, images: Tensor, boxes: list[Tensor], labels: Tensor,
               generator: torch.Generator | None = None) -> dict[str, Tensor]:  # fmt: skip
        """Training losses for images of classes ``labels`` [B] whose boxes (of that class) are ``boxes``."""
        logits, deltas, anchors = self(images)
        rows, picked, cls_targets, reg_rows, reg_targets = [], [], [], [], []
        for i, gt in enumerate(boxes):
            anchor_labels, matched = assign_anchor_labels(anchors, gt.to(anchors), self.fg_iou, self.bg_iou)
            pos, neg = sample_labels(anchor_labels, self.anchors_per_image, self.positive_fraction, generator)
            chosen = torch.cat((pos, neg))
            rows.append(torch.full_like(chosen, i))
            picked.append(chosen)
            cls_targets.append(torch.cat((torch.ones(len(pos)), torch.zeros(len(neg)))).to(logits))
            if pos.numel():
                reg_rows.append((i, pos))
                reg_targets.append(encode_boxes(gt.to(anchors)[matched[pos]], anchors[pos], RPN_DELTA_WEIGHTS))
        normaliser = self.anchors_per_image * len(boxes)
        row, col = torch.cat(rows), torch.cat(picked)
        loss_cls = F.binary_cross_entropy_with_logits(
            logits[row, col, labels.to(logits.device)[row]].float(), torch.cat(cls_targets), reduction="sum"
        )
        loss_box = deltas.sum() * 0.0
        if reg_rows:
            predicted = torch.cat([deltas[i, pos, int(labels[i])] for i, pos in reg_rows])
            loss_box = loss_box + F.smooth_l1_loss(
                predicted.float(), torch.cat(reg_targets), beta=SMOOTH_L1_BETA, reduction="sum"
            )
        return {"loss_cls": loss_cls / normaliser, "loss_box": loss_box / normaliser}

    @torch.no_grad()
    def predict(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One normalised view ``[1, 3, H, W]`` → ``(scores [N, K] in (0, 1), deltas [N, K, 4], anchors [N, 4])``."""
        logits, deltas, anchors = self(image)
        return logits[0].float().sigmoid(), deltas[0].float(), anchors


class RCNNLocalizer(nn.Module):
    """R-CNN stage: a warped proposal ``[R, 3, S, S]`` → ``net`` (conv1 … conv5, global average pool) → two sibling
    per-class fc layers: ``cls`` ``[R, K]`` (binary logistic per class, as the RPN's) and ``reg`` ``[R, K, 4]``."""

    def __init__(self, net: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.net = net
        self.num_classes = num_classes
        self.cls = nn.Linear(net.num_features, num_classes)
        self.reg = nn.Linear(net.num_features, num_classes * 4)
        nn.init.normal_(self.cls.weight, std=0.01)
        nn.init.normal_(self.reg.weight, std=0.001)
        nn.init.zeros_(self.cls.bias)
        nn.init.zeros_(self.reg.bias)

    def forward(self, crops: Tensor) -> tuple[Tensor, Tensor]:
        pooled = self.net.forward_features(crops).mean((2, 3))
        return self.cls(pooled), self.reg(pooled).view(-1, self.num_classes, 4)

    def losses(self, crops: Tensor, labels: Tensor, positive: Tensor, targets: Tensor) -> dict[str, Tensor]:
        """``crops`` [R, 3, S, S] of class ``labels`` [R]; ``positive`` [R] bool; ``targets`` [R, 4] encoded boxes
        (rows of negatives are ignored). Means over the R RoIs."""
        logits, deltas = self(crops)
        rows = torch.arange(len(labels), device=logits.device)
        loss_cls = F.binary_cross_entropy_with_logits(logits[rows, labels].float(), positive.float())
        own = deltas[rows, labels][positive]
        loss_box = F.smooth_l1_loss(own.float(), targets[positive], beta=1.0, reduction="sum") / len(labels)
        return {"loss_cls": loss_cls, "loss_box": loss_box}
