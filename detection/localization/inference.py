"""Testing the localiser: the "1-crop" and "dense" views, one box per asked class, and the R-CNN rescoring.

- 1-crop: shorter side ``resize``, the centre ``crop`` x ``crop`` (256 → 224 in the paper).
- dense: the whole image at each shorter side of ``dense_scales`` (and flipped, optionally), fully convolutional.

Every view's anchors give, for a class k, candidate boxes (the anchors moved by class k's regressor) scored by class
k's logistic output; they are mapped back to the original image and pooled over the views. The class's box is the
best-scored candidate, moved by box voting (:func:`detection.modeling.boxes.box_voting`) over the ``vote_top`` best
candidates: the "merge" of the dense scales (the paper does not say how it merged them). The R-CNN stage takes the
``proposals`` best candidates of a class, warps each to ``warp_size``², and rescores and regresses them with that
class's outputs; its best (voted) box replaces the RPN's.

Boxes are 0-based continuous xyxy in the original image's pixels; :func:`detection.devkit.to_devkit_boxes` turns
them into the CSV's 1-based ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.ops import roi_align

from backbones.classify import fullconv_scores, tencrop_scores
from backbones.data import MultiScaleView, TenCropView, center_crop, resize_shorter
from detection.localization.model import RCNN_DELTA_WEIGHTS, PerClassRPN, RCNNLocalizer, class_boxes
from detection.modeling.boxes import box_iou, box_voting, clip_boxes_to_image, encode_boxes
from detection.modeling.rpn import RPN_DELTA_WEIGHTS

__all__ = ["View", "one_crop_views", "dense_views", "RPNOutputs", "merge_candidates", "warp_crops",
           "rcnn_rescore", "classifier_probabilities", "rcnn_targets"]  # fmt: skip


@dataclass
class View:
    """One network input cut from an image: ``pixels`` uint8 ``[3, h, w]``; a point (x, y) of it is
    ``((x + left) / scale, (y + top) / scale)`` in the original (after un-flipping when ``flipped``)."""

    pixels: Tensor
    scale: float
    left: int = 0
    top: int = 0
    flipped: bool = False

    def to_original(self, boxes: Tensor) -> Tensor:
        """Boxes ``[M, 4]`` in the view → the original image's pixels."""
        if self.flipped:
            w = self.pixels.shape[-1]
            boxes = torch.stack((w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]), 1)
        offset = boxes.new_tensor([self.left, self.top, self.left, self.top])
        return (boxes + offset) / self.scale


def _chw(image: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


def one_crop_views(image: np.ndarray, crop: int, resize: int) -> list[View]:
    """The paper's "1-crop": shorter side ``resize``, then the centre ``crop``² (``image`` HWC uint8)."""
    resized = resize_shorter(image, resize)
    h, w = resized.shape[:2]
    scale = resized.shape[0] / image.shape[0]
    return [View(_chw(center_crop(resized, crop)), scale, (w - crop) // 2, (h - crop) // 2)]


def dense_views(image: np.ndarray, scales: Sequence[int], flip: bool = False) -> list[View]:
    """The whole image at each shorter side of ``scales`` (and its mirror image when ``flip``)."""
    views = []
    for s in scales:
        resized = resize_shorter(image, s)
        pixels = _chw(resized)
        views.append(View(pixels, resized.shape[0] / image.shape[0]))
        if flip:
            views.append(View(pixels.flip(-1), resized.shape[0] / image.shape[0], flipped=True))
    return views


class RPNOutputs:
    """The per-class RPN run once over every view of one image; :meth:`candidates` then reads any class."""

    def __init__(self, rpn: PerClassRPN, views: list[View], normalizer: nn.Module, image_size: tuple[int, int]):
        self.image_size = image_size
        device = next(rpn.parameters()).device
        self.parts = [(view, *rpn.predict(normalizer(view.pixels[None].to(device)))) for view in views]

    def candidates(self, label: int) -> tuple[Tensor, Tensor]:
        """All views' boxes for class ``label`` ``[M, 4]`` (original pixels, clipped) and their scores ``[M]``."""
        boxes, scores = [], []
        for view, s, deltas, anchors in self.parts:
            labels = torch.full((anchors.shape[0],), label, dtype=torch.int64, device=anchors.device)
            moved = class_boxes(deltas, anchors, labels, RPN_DELTA_WEIGHTS)
            boxes.append(clip_boxes_to_image(view.to_original(moved), self.image_size))
            scores.append(s[:, label])
        return torch.cat(boxes).cpu(), torch.cat(scores).cpu()


def merge_candidates(boxes: Tensor, scores: Tensor, vote_top: int) -> tuple[Tensor, float]:
    """One box ``[4]`` and its score from candidates ``[M, 4]``, ``[M]``: the best, voted over the ``vote_top``
    best (0: no voting). Degenerate (zero-area) candidates are skipped unless nothing else is left."""
    valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    if valid.any():
        boxes, scores = boxes[valid], scores[valid]
    best = int(scores.argmax())
    box = boxes[best : best + 1]
    if vote_top > 0:
        top = scores.topk(min(vote_top, len(scores))).indices
        box = box_voting(box, boxes[top], scores[top])
    return box[0], float(scores[best])


def warp_crops(image: Tensor, boxes: Tensor, size: int, context: int = 0) -> Tensor:
    """R-CNN's warp: each box ``[R, 4]`` of ``image`` (uint8 ``[3, H, W]``) resampled bilinearly to
    ``[R, 3, size, size]`` (float, still 0–255) whatever its aspect ratio. With ``context`` > 0 the box is first
    grown so that ``context`` pixels of the warp show its surroundings on every side (R-CNN's 16 of 227); outside
    the image is zero."""
    if not 0 <= 2 * context < size:
        raise ValueError(f"context padding {context} leaves no room in a {size}x{size} warp (needs 2 * context < size)")
    if context > 0:
        grow = (boxes[:, 2:] - boxes[:, :2]) * context / (size - 2 * context)
        boxes = torch.cat((boxes[:, :2] - grow, boxes[:, 2:] + grow), dim=1)
    pixels = image.float()[None]
    return roi_align(pixels, [boxes.to(pixels)], output_size=(size, size), spatial_scale=1.0, sampling_ratio=2,
                     aligned=True)  # fmt: skip


@torch.no_grad()
def rcnn_rescore(rcnn: RCNNLocalizer, image: Tensor, proposals: Tensor, label: int, normalizer: nn.Module,
                 warp_size: int, context: int = 0, batch: int = 256) -> tuple[Tensor, Tensor]:  # fmt: skip
    """New boxes ``[R, 4]`` and scores ``[R]`` of ``proposals`` ``[R, 4]`` for class ``label`` (class k's outputs)."""
    device = next(rcnn.parameters()).device
    boxes, scores = [], []
    for start in range(0, len(proposals), batch):
        chunk = proposals[start : start + batch]
        logits, deltas = rcnn(normalizer(warp_crops(image, chunk, warp_size, context).to(device)))
        labels = torch.full((len(chunk),), label, dtype=torch.int64, device=device)
        boxes.append(class_boxes(deltas.float(), chunk.to(device), labels, RCNN_DELTA_WEIGHTS).cpu())
        scores.append(logits[:, label].float().sigmoid().cpu())
    h, w = image.shape[-2:]
    return clip_boxes_to_image(torch.cat(boxes), (h, w)), torch.cat(scores)


def rcnn_targets(proposals: Tensor, gt_boxes: Tensor, fg_iou: float) -> tuple[Tensor, Tensor]:
    """``(positive [R] bool, encoded targets [R, 4])`` of proposals ``[R, 4]`` against the class's boxes [G, 4]:
    positive when the best IoU ≥ ``fg_iou``, regressed towards that box (Fast R-CNN's weights)."""
    iou = box_iou(gt_boxes, proposals)
    best, index = iou.max(0)
    return best >= fg_iou, encode_boxes(gt_boxes[index], proposals, RCNN_DELTA_WEIGHTS)


@torch.no_grad()
def classifier_probabilities(classifier: nn.Module, image: np.ndarray, normalizer: nn.Module, mode: str,
                             crop: int, resize: int, scales: Sequence[int]) -> Tensor:  # fmt: skip
    """Softmax probabilities ``[K]`` of the classification network, with the paper's 10-crop or fully
    convolutional multi-scale test (``backbones/classify.py``)."""
    device = next(classifier.parameters()).device
    if mode == "10crop":
        crops = TenCropView(crop, resize)(image).to(device)
        return tencrop_scores(classifier, normalizer(crops)[None])[0].cpu()
    if mode == "fullconv":
        views = [normalizer(v[None].to(device)) for v in MultiScaleView(scales)(image)]
        return fullconv_scores(classifier, views)[0].cpu()
    raise ValueError(f"classifier mode must be '10crop' or 'fullconv', got {mode!r}")

