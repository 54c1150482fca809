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

    The RPN keeps 300 of 6000 proposals at test time (2000 of 12000 in training); torchvision's CPU kernel is one
    thread comparing every kept box with all later ones to the end of the list (0.19 s for 6000 → 300 and 0.72 s
    for 12000 → 2000 random boxes). Here the sorted boxes are taken in blocks of 256 (:func:`_greedy_block`): each
    block drops what the boxes kept so far suppress, then settles its own greedy order as a fixed point of matrix
    steps, and the loop ends once ``k`` are kept (3 ms and 75 ms for the same boxes, one thread). Same order
    (stable descending scores), the same float arithmetic and the same strict ``IoU > thresh`` test as the
    kernel's float-against-double comparison, so the same indices (tests/detection/modeling/test_boxes.py). For few
    boxes,
    ``k`` above a quarter of them, or CUDA, torchvision's kernel is used.
    """
    n = boxes.shape[0]
    # Exporters (tools/export.py) record torchvision's NMS operator; this loop's length depends on the data.
    if torch.jit.is_tracing() or torch.compiler.is_compiling() or boxes.device.type != "cpu" or n < 1024 or 4 * k > n:
        return nms(boxes, scores, iou_thresh)[:k]
    order = scores.sort(descending=True, stable=True).indices
    sorted_boxes = boxes[order]
    areas = (sorted_boxes[:, 2] - sorted_boxes[:, 0]) * (sorted_boxes[:, 3] - sorted_boxes[:, 1])
    kept = torch.zeros(0, dtype=torch.int64)
    thresh = _float_below(iou_thresh) if boxes.dtype == torch.float32 else iou_thresh
    block = 256
    for start in range(0, n, block):
        if kept.numel() >= k:
            break
        candidates = torch.arange(start, min(start + block, n))
        if kept.numel():
            suppressed = _iou_above(sorted_boxes[kept], areas[kept], sorted_boxes[candidates], areas[candidates],
                                    thresh).any(dim=0)
            candidates = candidates[~suppressed]
        kept = torch.cat((kept, candidates[_greedy_block(sorted_boxes[candidates], areas[candidates], thresh)]))
    return order[kept[:k]]


def _float_below(thresh: float) -> float:
    """The largest float32 ≤ ``thresh``: for a float32 IoU ``x``, ``x > thresh`` (the kernel compares in float64)
    holds exactly when ``x >`` this value, since no float32 lies strictly between the two; so the comparison can
    stay in float32."""
    below = torch.tensor(thresh, dtype=torch.float32)
    if float(below) > thresh:
        below = torch.nextafter(below, torch.tensor(float("-inf")))
    return float(below)


def _iou_above(a: Tensor, area_a: Tensor, b: Tensor, area_b: Tensor, thresh: float) -> Tensor:
    """``[A, B]``: IoU of each earlier box ``a`` with each later box ``b`` ``> thresh``, computed as torchvision's
    CPU NMS kernel does: intersection and union in the boxes' dtype, in the same order; a NaN IoU suppresses
    nothing. For float32 boxes ``thresh`` comes from :func:`_float_below`; other dtypes compare in float64."""
    w = (torch.minimum(a[:, None, 2], b[None, :, 2]) - torch.maximum(a[:, None, 0], b[None, :, 0])).clamp_(min=0)
    h = (torch.minimum(a[:, None, 3], b[None, :, 3]) - torch.maximum(a[:, None, 1], b[None, :, 1])).clamp_(min=0)
    inter = w.mul_(h)
    iou = inter / (area_a[:, None] + area_b[None, :] - inter)
    return (iou if iou.dtype == torch.float32 else iou.double()) > thresh


def _greedy_block(boxes: Tensor, areas: Tensor, iou_thresh: float) -> Tensor:
    """Greedy NMS within boxes already sorted by score: the indices kept. ``keep[j]`` is "no kept ``i < j``
    overlaps ``j``"; starting from all kept, each step re-evaluates that rule, and after ``t`` steps the first
    ``t`` entries are final (entry ``t`` depends only on earlier ones), so the first repeated state is the greedy
    answer — usually after a few steps (Cluster-NMS, Zheng et al. 2020)."""
    overlaps = _iou_above(boxes, areas, boxes, areas, iou_thresh).triu_(diagonal=1).float()
    keep = torch.ones(boxes.shape[0])
    while True:
        new = (keep @ overlaps == 0).float()
        if torch.equal(new, keep):
            return keep.nonzero().squeeze(1)
        keep = new


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
