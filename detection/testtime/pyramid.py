"""Multi-scale testing (ResNet paper, Appendix B, after NoC / Fast R-CNN) as a wrapper of a built detector.

Proposals come from the single-scale RPN (the model's test scale). The trunk runs on an image pyramid; each RoI is
pooled at the two adjacent pyramid levels around the one whose scaled RoI area is nearest 224² (Fast R-CNN's
``_project_im_rois``), both go through the box head (conv5_x, and global context at that level), and the two
features are merged by maxout before the predictor (``levels_per_roi=2``, the paper's; ``levels_per_roi=1`` pools
each RoI at the nearest level only, as Fast R-CNN's single-level assignment: half the box-head work, a speed option
that is not the paper's system). Box refinement re-pools the refined boxes through the same
pyramid, and voting and NMS (0.3 after refinement) are the model's own parts: the wrapper only supplies a
different *scorer* (detection/modeling/postprocess.py) to ``roi_heads.detect``.

Everything runs in the test-scale image's pixels, as single-scale inference does, so a pyramid of the one test
scale gives the single-scale detections exactly (tests/detection/testtime/test_pyramid.py).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from detection.modeling.boxes import scale_boxes
from detection.modeling.faster_rcnn import FasterRCNN, ImageBatch

__all__ = ["CANONICAL_AREA", "MultiScaleDetector", "Pyramid", "choose_levels"]

CANONICAL_AREA = 224.0 * 224.0


def choose_levels(boxes: Tensor, scales: Tensor) -> tuple[Tensor, Tensor]:
    """For RoIs ``[R, 4]`` and pyramid scale factors ``[L]`` relative to the RoIs' frame (ascending), return the
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


def check_levels_per_roi(levels_per_roi: int) -> None:
    if levels_per_roi not in (1, 2):
        raise ValueError(f"levels_per_roi must be 1 (the nearest level) or 2 (the paper's maxout): {levels_per_roi}")


class MultiScaleDetector(nn.Module):
    """``MultiScaleDetector(detector, min_sizes=[200, 400, 600, 800, 1000], max_size=2000)(images)``: the same
    output as ``detector(images)`` (eval mode only), scored over the pyramid. ``min_sizes`` are shorter sides;
    ``levels_per_roi``: 2 (the paper's maxout of two adjacent levels) or 1 (the nearest level only)."""

    def __init__(
        self, detector: FasterRCNN, *, min_sizes: list[int], max_size: int, levels_per_roi: int = 2
    ) -> None:
        super().__init__()
        if not min_sizes:
            raise ValueError("MultiScaleDetector needs at least one pyramid scale")
        check_levels_per_roi(levels_per_roi)
        self.detector = detector
        self.min_sizes = sorted(min_sizes)
        self.max_size = max_size
        self.levels_per_roi = levels_per_roi

    @property
    def num_classes(self) -> int:
        return self.detector.num_classes

    def forward(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        model = self.detector
        if model.training:
            raise RuntimeError("MultiScaleDetector is for inference: call .eval() (train the wrapped detector)")
        original_sizes = [(int(i.shape[-2]), int(i.shape[-1])) for i in images]
        opened = model.propose(images)
        batch = opened.batch
        pyramid = Pyramid(model, images, self.min_sizes, self.max_size, batch, opened.features, self.levels_per_roi)
        detections = model.roi_heads.detect(pyramid.score, opened.proposals)
        return model.transform.postprocess(detections, batch.image_sizes, original_sizes)

    def extra_repr(self) -> str:
        return f"min_sizes={self.min_sizes}, max_size={self.max_size}, levels_per_roi={self.levels_per_roi}"


class Pyramid:
    """The trunk's features at each pyramid level, computed when a RoI first needs that level (the test-scale
    pass is reused where a level has the same image sizes), and the maxout scorer over them."""

    def __init__(
        self,
        model: FasterRCNN,
        images: list[Tensor],
        min_sizes: list[int],
        max_size: int,
        test_batch: ImageBatch,
        test_features: Tensor,
        levels_per_roi: int = 2,
    ) -> None:
        check_levels_per_roi(levels_per_roi)
        self.model, self.images, self.min_sizes, self.max_size = model, images, min_sizes, max_size
        self.levels_per_roi = levels_per_roi
        self.test_sizes = test_batch.image_sizes
        self.test_batch, self.test_features = test_batch, test_features
        self.levels: dict[int, tuple[Tensor, list[tuple[int, int]]]] = {}
        # Per image, each level's scale factor relative to the test-scale image (heights: the rule keeps aspect).
        self.scales = [
            torch.tensor(
                [model.transform.test_size(int(i.shape[-2]), int(i.shape[-1]), min_size=s, max_size=max_size)[0] / th
                 for s in min_sizes],
                device=test_features.device,
            )
            for i, (th, _) in zip(images, self.test_sizes)
        ]

    def level(self, index: int) -> tuple[Tensor, list[tuple[int, int]]]:
        if index not in self.levels:
            batch = self.model.transform(self.images, min_size=self.min_sizes[index], max_size=self.max_size)
            if batch.image_sizes == self.test_sizes and batch.tensor.shape == self.test_batch.tensor.shape:
                self.levels[index] = (self.test_features, self.test_sizes)
            else:
                self.levels[index] = (self.model.trunk(batch.tensor), batch.image_sizes)
        return self.levels[index]

    def score(self, boxes: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """The scorer: per-image boxes in test-scale pixels → probabilities and class boxes in the same pixels."""
        chosen = [choose_levels(b, s) for b, s in zip(boxes, self.scales)]
        if self.levels_per_roi == 1:
            chosen = [(first, first) for first, _ in chosen]
        users_per_level = [[(a == level) | (b == level) for a, b in chosen] for level in range(len(self.min_sizes))]
        heads = self.model.roi_heads
        merged: Tensor | None = None
        for level, users in enumerate(users_per_level):
            if not any(bool(u.any()) for u in users):
                continue
            features, sizes = self.level(level)
            level_boxes = [scale_boxes(b[u], t, s) for b, u, t, s in zip(boxes, users, self.test_sizes, sizes)]
            feats = heads.box_features(features, level_boxes, sizes)
            if merged is None:
                merged = feats.new_full((sum(len(b) for b in boxes), feats.shape[1]), float("-inf"))
            rows = torch.nonzero(torch.cat(users)).squeeze(1)
            merged[rows] = torch.maximum(merged[rows], feats)
        if merged is None:  # no boxes at all: run the head on none, for the right shapes
            merged = heads.box_features(self.test_features, boxes, self.test_sizes)
        return heads.predict(merged, boxes, self.test_sizes)
