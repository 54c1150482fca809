"""Exact blocked greedy NMS for the CPU: the RPN's NMS part swapped in by ``detection.fast.optimize``.

The RPN keeps 300 of 6000 proposals at test time (2000 of 12000 in training); torchvision's CPU kernel is one
thread comparing every kept box with all later ones to the end of the list (0.19 s for 6000 → 300 and 0.72 s for
12000 → 2000 random boxes). :class:`BlockedNMS` takes the sorted boxes in blocks of 256 (:func:`_greedy_block`):
each block drops what the boxes kept so far suppress, then settles its own greedy order as a fixed point of matrix
steps, and the loop ends once ``k`` are kept (3 ms and 75 ms for the same boxes, one thread). Same order (stable
descending scores), the same float arithmetic and the same strict ``IoU > thresh`` test as the kernel's
float-against-double comparison, so the same indices as ``torchvision.ops.nms(...)[:k]``
(tests/detection/fast/test_nms.py).
"""

from __future__ import annotations

import torch
from torch import Tensor

from detection.modeling.boxes import NMS, nms_first_k

__all__ = ["BlockedNMS", "blocked_nms_first_k"]

_BLOCK = 256


class BlockedNMS(NMS):
    """:class:`detection.modeling.boxes.NMS` computed by :func:`blocked_nms_first_k` (the same indices).
    ``optimize_for_inference`` / ``optimize_for_training`` swap it in for the RPN's NMS when the model's parameters
    are on the CPU."""

    def forward(self, boxes: Tensor, scores: Tensor, iou_thresh: float, max_kept: int | None = None) -> Tensor:
        if max_kept is None:
            return super().forward(boxes, scores, iou_thresh)
        return blocked_nms_first_k(boxes, scores, iou_thresh, max_kept)


def blocked_nms_first_k(boxes: Tensor, scores: Tensor, iou_thresh: float, k: int) -> Tensor:
    """``torchvision.ops.nms(boxes, scores, iou_thresh)[:k]``, stopping once ``k`` boxes are kept.

    ``boxes``: ``[N, 4]`` xyxy; ``scores``: ``[N]``; returns int64 indices into them by decreasing score. For few
    boxes (under 1024) or ``k`` above a quarter of them, torchvision's kernel is as fast and is used. So is it
    while ``torch.export`` / the ONNX tracer record an optimized model: this loop's length depends on the data,
    and the graph must hold torchvision's NMS operator instead.
    """
    n = boxes.shape[0]
    if torch.jit.is_tracing() or torch.compiler.is_compiling() or n < 1024 or 4 * k > n:
        return nms_first_k(boxes, scores, iou_thresh, k)
    order = scores.sort(descending=True, stable=True).indices
    sorted_boxes = boxes[order]
    areas = (sorted_boxes[:, 2] - sorted_boxes[:, 0]) * (sorted_boxes[:, 3] - sorted_boxes[:, 1])
    kept = torch.zeros(0, dtype=torch.int64, device=boxes.device)
    thresh = _float_below(iou_thresh) if boxes.dtype == torch.float32 else iou_thresh
    for start in range(0, n, _BLOCK):
        if kept.numel() >= k:
            break
        candidates = torch.arange(start, min(start + _BLOCK, n), device=boxes.device)
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
    keep = torch.ones(boxes.shape[0], device=boxes.device)
    while True:
        new = (keep @ overlaps == 0).float()
        if torch.equal(new, keep):
            return keep.nonzero().squeeze(1)
        keep = new
