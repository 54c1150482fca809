"""Multi-scale testing (ResNet paper, Appendix B, after NoC / Fast R-CNN).

Proposals come from the single-scale RPN (the model's test scale). The trunk runs on an image pyramid; each RoI is
pooled at the two adjacent pyramid levels around the one whose scaled RoI area is nearest 224² (Fast R-CNN's
``_project_im_rois``), both go through conv5_x, and their features are merged by maxout before the cls/reg layers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from detection.model import resized_shape

if TYPE_CHECKING:
    from detection.model import FasterRCNN

CANONICAL_AREA = 224.0 * 224.0


def choose_levels(boxes: Tensor, scales: Tensor) -> tuple[Tensor, Tensor]:
    """For RoIs ``[R, 4]`` (original-image pixels) and pyramid scale factors ``[L]`` (ascending), return the
    level whose scaled area is nearest 224² and its neighbour on the side of 224² (clamped): ``[R]``, ``[R]``."""
    area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).clamp(min=1.0)
    scaled = area[:, None] * scales[None, :] ** 2
    first = (scaled - CANONICAL_AREA).abs().argmin(dim=1)
    chosen_area = scaled.gather(1, first[:, None]).squeeze(1)
    step = torch.where(chosen_area > CANONICAL_AREA, -1, 1)
    second = first + step
    out_of_range = (second < 0) | (second >= len(scales))
    second = torch.where(out_of_range, first - step, second).clamp(0, len(scales) - 1)
    return first, second


@torch.no_grad()
def multi_scale_detect(
    model: FasterRCNN, images: list[Tensor], pyramid_min_sizes: list[int], pyramid_max_size: int
) -> list[dict[str, Tensor]]:
    transform, heads = model.transform, model.roi_heads
    original_sizes = [(int(i.shape[-2]), int(i.shape[-1])) for i in images]
    batch, image_sizes, _ = transform(images)
    proposals, _ = model.rpn(model.trunk(batch), image_sizes)
    # Proposals in original-image pixels.
    proposals = [
        p * torch.tensor([ow / w, oh / h, ow / w, oh / h], device=p.device)
        for p, (h, w), (oh, ow) in zip(proposals, image_sizes, original_sizes)
    ]
    first_levels, second_levels = [], []
    for p, (oh, ow) in zip(proposals, original_sizes):
        scales = torch.tensor(
            [resized_shape(oh, ow, s, pyramid_max_size)[0] / oh for s in pyramid_min_sizes], device=p.device
        )
        a, b = choose_levels(p, scales)
        first_levels.append(a)
        second_levels.append(b)
    num_rois = sum(len(p) for p in proposals)
    merged: Tensor | None = None
    for level, min_size in enumerate(pyramid_min_sizes):
        users = [((a == level) | (b == level)) for a, b in zip(first_levels, second_levels)]
        if not any(bool(u.any()) for u in users):
            continue
        level_batch, level_sizes, _ = transform(images, min_size=min_size, max_size=pyramid_max_size)
        features = model.trunk(level_batch)
        level_boxes = [
            p[u] * torch.tensor([w / ow, h / oh, w / ow, h / oh], device=p.device)
            for p, u, (h, w), (oh, ow) in zip(proposals, users, level_sizes, original_sizes)
        ]
        feats = heads.box_features(features, level_boxes, level_sizes)
        if merged is None:
            merged = feats.new_full((num_rois, feats.shape[1]), float("-inf"))
        rows = torch.nonzero(torch.cat(users)).squeeze(1)
        merged[rows] = torch.maximum(merged[rows], feats)
    assert merged is not None, "no pyramid level was used"
    logits, deltas = heads.predictor(merged)
    scores, boxes = heads.decode(logits, deltas, proposals, original_sizes)
    return [heads.select(s, b, heads.nms_thresh) for s, b in zip(scores, boxes)]
