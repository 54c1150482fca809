"""Box functions. Boxes are ``Tensor[N, 4]`` xyxy in continuous pixel coordinates (see docs/DESIGN.md).

IoU, NMS, clipping and small-box removal come from ``torchvision.ops``; this module adds the R-CNN box coding
(Fast R-CNN's parameterisation with per-coordinate weights), the anchor/proposal matcher and box voting.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchvision.ops import box_iou, clip_boxes_to_image, nms, remove_small_boxes

__all__ = [
    "box_iou",
    "clip_boxes_to_image",
    "remove_small_boxes",
    "encode_boxes",
    "decode_boxes",
    "match_boxes",
    "box_voting",
    "nms_first_k",
    "resize_scale",
    "resized_shape",
    "scale_boxes",
]

# Deltas for width/height are clamped so exp() cannot overflow on an early, badly trained iteration.
DELTA_CLAMP = math.log(1000.0 / 16)

BELOW_LOW = -1
BETWEEN = -2


def encode_boxes(targets: Tensor, references: Tensor, weights: tuple[float, ...] | list[float]) -> Tensor:
    """Regression targets that move ``references`` [N, 4] onto ``targets`` [N, 4]: ``[N, 4]`` deltas
    ``(wx·dx/w, wy·dy/h, ww·log(W/w), wh·log(H/h))`` with ``weights = (wx, wy, ww, wh)``.

    Weights (10, 10, 5, 5) are the same as normalising by stds (0.1, 0.1, 0.2, 0.2).
    """
    wx, wy, ww, wh = weights
    rw = references[:, 2] - references[:, 0]
    rh = references[:, 3] - references[:, 1]
    rx = references[:, 0] + 0.5 * rw
    ry = references[:, 1] + 0.5 * rh
    tw = targets[:, 2] - targets[:, 0]
    th = targets[:, 3] - targets[:, 1]
    tx = targets[:, 0] + 0.5 * tw
    ty = targets[:, 1] + 0.5 * th
    return torch.stack(
        (wx * (tx - rx) / rw, wy * (ty - ry) / rh, ww * torch.log(tw / rw), wh * torch.log(th / rh)), dim=1
    )


def decode_boxes(deltas: Tensor, references: Tensor, weights: tuple[float, ...] | list[float]) -> Tensor:
    """Apply ``deltas`` [N, 4·k] to ``references`` [N, 4]; returns [N, 4·k] xyxy boxes (inverse of encode)."""
    references = references.to(deltas.dtype)
    wx, wy, ww, wh = weights
    rw = (references[:, 2] - references[:, 0]).unsqueeze(1)
    rh = (references[:, 3] - references[:, 1]).unsqueeze(1)
    rx = references[:, 0].unsqueeze(1) + 0.5 * rw
    ry = references[:, 1].unsqueeze(1) + 0.5 * rh
    dx = deltas[:, 0::4] / wx
    dy = deltas[:, 1::4] / wy
    dw = (deltas[:, 2::4] / ww).clamp(max=DELTA_CLAMP)
    dh = (deltas[:, 3::4] / wh).clamp(max=DELTA_CLAMP)
    cx = dx * rw + rx
    cy = dy * rh + ry
    half_w = 0.5 * torch.exp(dw) * rw
    half_h = 0.5 * torch.exp(dh) * rh
    out = torch.stack((cx - half_w, cy - half_h, cx + half_w, cy + half_h), dim=2)
    return out.reshape(deltas.shape)


def match_boxes(iou: Tensor, high: float, low: float, allow_low_quality: bool) -> Tensor:
    """Assign each of N candidates (anchors or proposals) to a ground-truth box.

    ``iou`` is [G, N]. Returns ``[N]`` int64: the matched GT index where max IoU ≥ ``high``, ``BELOW_LOW`` (-1)
    where it is < ``low``, ``BETWEEN`` (-2) otherwise. With ``allow_low_quality`` every GT's best candidates
    (ties included) are matched to it even below ``high`` (Faster R-CNN's RPN rule).
    """
    if iou.numel() == 0:
        return torch.full((iou.shape[1],), BELOW_LOW, dtype=torch.int64, device=iou.device)
    best_iou, matches = iou.max(dim=0)
    original = matches.clone() if allow_low_quality else None
    matches[best_iou < low] = BELOW_LOW
    matches[(best_iou >= low) & (best_iou < high)] = BETWEEN
    if original is not None:
        best_per_gt = iou.max(dim=1, keepdim=True).values
        # A GT that overlaps nothing (IoU 0 everywhere) must not grab every candidate.
        _, cand_idx = torch.nonzero((iou == best_per_gt) & (best_per_gt > 0), as_tuple=True)
        matches[cand_idx] = original[cand_idx]
    return matches


def box_voting(
    kept_boxes: Tensor, candidate_boxes: Tensor, candidate_scores: Tensor, iou_thresh: float = 0.5
) -> Tensor:
    """Box voting (ResNet paper, Appendix B): each kept box [K, 4] becomes the score-weighted mean of the
    candidates [M, 4] of the same class with IoU ≥ ``iou_thresh`` (the kept box is among them). Scores unchanged.
    """
    if kept_boxes.numel() == 0 or candidate_boxes.numel() == 0:
        return kept_boxes
    weights = (box_iou(kept_boxes, candidate_boxes) >= iou_thresh).to(candidate_scores.dtype)
    weights = weights * candidate_scores.unsqueeze(0)
    total = weights.sum(dim=1, keepdim=True)
    voted = weights @ candidate_boxes / total.clamp(min=1e-12)
    return torch.where(total > 0, voted, kept_boxes)


def nms_first_k(boxes: Tensor, scores: Tensor, iou_thresh: float, k: int) -> Tensor:
    """``torchvision.ops.nms(boxes, scores, iou_thresh)[:k]``, stopping once ``k`` boxes are kept.

    The RPN keeps 300 of 6000 proposals at test time (2000 of 12000 in training); torchvision's CPU kernel
    compares every kept box with all later ones to the end of the list. Here the greedy pass runs vectorised over
    the remaining boxes and stops at ``k``: same order (stable descending scores), same float arithmetic and the
    same strict ``IoU > thresh`` test (in float64, as the kernel's double threshold), so the same indices
    (tests/detection/test_boxes.py). For few boxes, few to drop, or CUDA, torchvision's kernel is used.
    """
    n = boxes.shape[0]
    # Exporters (tools/export.py) record torchvision's NMS operator; this loop's length depends on the data.
    if torch.jit.is_tracing() or torch.compiler.is_compiling() or boxes.device.type != "cpu" or n < 4096 or 4 * k > n:
        return nms(boxes, scores, iou_thresh)[:k]
    order = scores.sort(descending=True, stable=True).indices
    x1, y1, x2, y2 = boxes[order].unbind(1)
    areas = (x2 - x1) * (y2 - y1)
    alive = torch.ones(n, dtype=torch.bool)
    keep: list[int] = []
    i = 0
    while len(keep) < k:
        remaining = alive[i:].nonzero()
        if remaining.numel() == 0:
            break
        i += int(remaining[0])
        keep.append(i)
        later = slice(i + 1, n)
        w = (torch.minimum(x2[i], x2[later]) - torch.maximum(x1[i], x1[later])).clamp_(min=0)
        h = (torch.minimum(y2[i], y2[later]) - torch.maximum(y1[i], y1[later])).clamp_(min=0)
        inter = w * h
        alive[later] &= ~((inter / (areas[i] + areas[later] - inter)).double() > iou_thresh)  # NaN IoU keeps
        i += 1
    return order[torch.tensor(keep, dtype=torch.int64)]


def resize_scale(height: int, width: int, min_size: int, max_size: int) -> float:
    """Fast R-CNN's resize rule: the factor that brings the shorter side to ``min_size`` unless the longer side
    would then exceed ``max_size`` (then the longer side is ``max_size``). Training (the data pipeline) and testing
    (the model) both use it."""
    # torch.sym_min/sym_max are min/max on numbers, and stay symbolic for torch.export's image sizes (export.py).
    return torch.sym_min(min_size / torch.sym_min(height, width), max_size / torch.sym_max(height, width))


def resized_shape(height: int, width: int, min_size: int, max_size: int) -> tuple[int, int]:
    """``(H', W')`` of an image resized by :func:`resize_scale`, rounded to whole pixels."""
    scale = resize_scale(height, width, min_size, max_size)
    return round(height * scale), round(width * scale)


def scale_boxes(boxes: Tensor, from_size: tuple[int, int], to_size: tuple[int, int]) -> Tensor:
    """Boxes ``[..., 4]`` xyxy in the pixels of an image of ``from_size`` (H, W) → the same boxes in an image of
    ``to_size`` (x by the width ratio, y by the height ratio)."""
    (fh, fw), (th, tw) = from_size, to_size
    factors = torch.tensor([tw / fw, th / fh, tw / fw, th / fh], dtype=boxes.dtype, device=boxes.device)
    return boxes * factors
