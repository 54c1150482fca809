"""Box functions. Boxes are ``Tensor[N, 4]`` xyxy in continuous pixel coordinates (see docs/DESIGN.md).

IoU, NMS, clipping and small-box removal come from ``torchvision.ops``; this module adds the R-CNN box coding
(Fast R-CNN's parameterisation with per-coordinate weights), the anchor/proposal matcher, box voting and the
RPN's NMS as a part (:class:`NMS`, which ``detection.fast.optimize`` may swap).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
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
    "NMS",
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
    """The first ``k`` boxes greedy NMS keeps: ``torchvision.ops.nms(boxes, scores, iou_thresh)[:k]``, int64
    indices into ``boxes [N, 4]`` by decreasing score."""
    return nms(boxes, scores, iou_thresh)[:k]


class NMS(nn.Module):
    """Greedy NMS as a part (the RPN's): ``(boxes [N, 4] xyxy, scores [N], iou_thresh, max_kept)`` → int64 indices
    of the kept boxes by decreasing score, the first ``max_kept`` of them (all when ``None``). torchvision's
    kernel; ``detection.fast.nms.BlockedNMS`` is the exact CPU swap (``optimize_for_inference``)."""

    def forward(self, boxes: Tensor, scores: Tensor, iou_thresh: float, max_kept: int | None = None) -> Tensor:
        keep = nms(boxes, scores, iou_thresh)
        return keep if max_kept is None else keep[:max_kept]


def resize_scale(height: int, width: int, min_size: int, max_size: int) -> float:
    """Fast R-CNN's resize rule: the factor that brings the shorter side to ``min_size`` unless the longer side
    would then exceed ``max_size`` (then the longer side is ``max_size``). Training (the data pipeline) and testing
    (the model) both use it."""
    # torch.sym_min/sym_max are min/max on numbers, and stay symbolic for torch.export's image sizes (export.py).
    return torch.sym_min(min_size / torch.sym_min(height, width), max_size / torch.sym_max(height, width))


def resized_shape(height: int, width: int, min_size: int, max_size: int) -> tuple[int, int]:
    """``(H', W')`` of an image resized by :func:`resize_scale`, rounded to whole pixels and at least 1: a 10×10000
    strip at ``max_size`` 1000 is 1×1000, never 0×1000 (which left the trunk an empty map and ended the run)."""
    scale = resize_scale(height, width, min_size, max_size)
    return torch.sym_max(round(height * scale), 1), torch.sym_max(round(width * scale), 1)


def scale_boxes(boxes: Tensor, from_size: tuple[int, int], to_size: tuple[int, int]) -> Tensor:
    """Boxes ``[..., 4]`` xyxy in the pixels of an image of ``from_size`` (H, W) → the same boxes in an image of
    ``to_size`` (x by the width ratio, y by the height ratio)."""
    (fh, fw), (th, tw) = from_size, to_size
    factors = torch.tensor([tw / fw, th / fh, tw / fw, th / fh], dtype=boxes.dtype, device=boxes.device)
    return boxes * factors
