"""Ensembles (ResNet paper, Appendix B) and horizontal-flip testing, as one test-time wrapper of built detectors.

The wrapper looks at the images through several *views*: each member model (``models``), and with ``flip=True``
each member again on the mirrored images. A view runs its model's opening (``FasterRCNN.propose``: transform,
trunk, RPN), and offers

- ``proposals`` and ``objectness``: its RPN's proposals (after the RPN's own NMS) and their probabilities, per
  image, in the view's test-scale pixels;
- ``score(boxes)``: its model's per-region classifier on any boxes in those pixels — single scale
  (``roi_heads.score``), or over the image pyramid (``detection.testtime.pyramid.Pyramid``) when ``pyramid_min_sizes``
  is given — returning probabilities ``[R, K]`` and class boxes ``[R, K, 4]``.

Everything is expressed in one reference frame: the first view's test-scale image (the same frame a single model
works in). The union of every view's proposals (the paper: "the union set of proposals") goes through NMS once
more, by objectness, at the RPN's NMS threshold and keeping as many as one RPN does at test time (both settable:
``proposal_nms_thresh``, ``proposals_per_image``; config ``test.ensemble_nms_thresh``,
``test.ensemble_proposals``), so the ensemble's classifiers see as many, as distinct regions as one model's do.
Those proposals are scored by every view and the probabilities and class boxes are averaged; that average is a
*scorer* (detection/modeling/postprocess.py) handed to the first model's ``roi_heads.detect``, so its box refinement
(refined boxes scored again by the whole ensemble), voting and NMS compose with ensembles, flips and the pyramid
alike.

Exactness (tests/detection/testtime/test_ensemble.py): an ensemble of one model, or of copies of one model, gives that
model's detections bit for bit. With the union NMS this holds because one RPN's output is already what that NMS
keeps: its boxes come in descending objectness, no two overlap by more than the threshold and there are at most
``proposals_per_image`` of them, so NMS at the same threshold (a stable sort, the same IoU arithmetic) keeps every
one in the same order; a copy's repeats of a box have IoU 1 with it and the same score, and fall behind it in the
stable order, so they are the ones suppressed. Mirroring is exact (``mirror_boxes`` twice is the identity on whole
pixels), and with ``flip=True`` a mirror-symmetric image gives a mirror-symmetric set of detections.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from detection.modeling.boxes import nms_first_k, scale_boxes
from detection.modeling.faster_rcnn import FasterRCNN
from detection.testtime.pyramid import Pyramid, check_levels_per_roi

__all__ = ["EnsembleDetector", "mirror_boxes", "nms_union_of_proposals"]

Sizes = list[tuple[int, int]]


def mirror_boxes(boxes: Tensor, width: int) -> Tensor:
    """Boxes ``[..., 4]`` xyxy in an image ``width`` pixels wide → the same boxes in the horizontally mirrored
    image: ``x1' = W - x2``, ``x2' = W - x1`` (continuous pixel coordinates, so ``[0, W]`` maps to itself)."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack((width - x2, y1, width - x1, y2), dim=-1)


def nms_union_of_proposals(
    proposals: Sequence[Tensor], scores: Sequence[Tensor], iou_thresh: float, keep: int,
    nms: Callable[[Tensor, Tensor, float, int], Tensor] = nms_first_k,
) -> Tensor:
    """The union of several ``[P_i, 4]`` proposal sets (objectness ``[P_i]`` each, comparable across sets) after
    NMS at ``iou_thresh``: at most ``keep`` boxes ``[P, 4]`` in descending objectness (ties in set order). ``nms``:
    ``(boxes, scores, iou_thresh, max_kept) -> indices``; the ensemble passes its first model's RPN NMS part, so an
    optimised model's exact CPU NMS runs here too."""
    boxes, objectness = torch.cat(list(proposals)), torch.cat(list(scores))
    return boxes[nms(boxes, objectness, iou_thresh, keep)]


class _View:
    """One model on one version of the images (plain or mirrored): its proposals and its scorer, in its own
    test-scale pixels (``image_sizes``)."""

    def __init__(
        self, model: FasterRCNN, images: list[Tensor], min_sizes: list[int], max_size: int, levels_per_roi: int
    ) -> None:
        batch, features, proposals, objectness, _ = model.propose(images)
        assert objectness is not None  # eval mode (EnsembleDetector.forward checks)
        self.image_sizes: Sizes = batch.image_sizes
        self.proposals, self.objectness = proposals, objectness
        if min_sizes:
            self._score = Pyramid(model, images, min_sizes, max_size, batch, features, levels_per_roi).score
        else:
            self._score = lambda boxes: model.roi_heads.score(features, boxes, batch.image_sizes)

    def score(self, boxes: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        return self._score(boxes)


class _MirroredView:
    """A view computed on mirrored images, seen from the unmirrored images: boxes are mirrored on the way in and
    the class boxes on the way out, so it proposes and scores in the same frame as an unmirrored view."""

    def __init__(self, view: _View) -> None:
        self.view = view
        self.image_sizes = view.image_sizes
        self.proposals = [mirror_boxes(p, w) for p, (_, w) in zip(view.proposals, view.image_sizes)]
        self.objectness = view.objectness

    def score(self, boxes: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        widths = [w for _, w in self.image_sizes]
        probs, class_boxes = self.view.score([mirror_boxes(b, w) for b, w in zip(boxes, widths)])
        return probs, [mirror_boxes(b, w) for b, w in zip(class_boxes, widths)]


class EnsembleDetector(nn.Module):
    """``EnsembleDetector([model_a, model_b, …], pyramid_min_sizes=[], pyramid_max_size=2000, flip=False)(images)``:
    the output of ``model_a(images)`` (eval mode only), proposed and scored by the whole ensemble.

    ``images``: float RGB ``[3, H, W]`` in [0, 1]; returns per image ``{"boxes": [N, 4] xyxy in original pixels,
    "scores": [N], "labels": [N] in 1..K}``. All members must predict the same classes. The first member's
    transform sets the reference frame and its RoI heads' refinement, NMS and voting settings apply.
    ``proposal_nms_thresh`` and ``proposals_per_image`` (default: the first member's RPN NMS threshold and test
    post-NMS count) set the NMS over the union of the views' proposals.
    """

    def __init__(
        self,
        models: Sequence[FasterRCNN],
        *,
        pyramid_min_sizes: Sequence[int] = (),
        pyramid_max_size: int = 2000,
        pyramid_levels_per_roi: int = 2,
        flip: bool = False,
        proposal_nms_thresh: float | None = None,
        proposals_per_image: int | None = None,
    ) -> None:
        super().__init__()
        if not models:
            raise ValueError("EnsembleDetector needs at least one model")
        classes = {m.num_classes for m in models}
        if len(classes) != 1:
            raise ValueError(f"ensemble members predict different numbers of classes: {sorted(classes)}")
        self.models = nn.ModuleList(models)
        self.pyramid_min_sizes = sorted(pyramid_min_sizes)
        self.pyramid_max_size = pyramid_max_size
        check_levels_per_roi(pyramid_levels_per_roi)
        self.pyramid_levels_per_roi = pyramid_levels_per_roi
        self.flip = flip
        rpn = models[0].rpn
        self.proposal_nms_thresh = rpn.nms_thresh if proposal_nms_thresh is None else proposal_nms_thresh
        self.proposals_per_image = rpn.post_nms_top_n[1] if proposals_per_image is None else proposals_per_image

    @property
    def num_classes(self) -> int:
        return self.models[0].num_classes

    def forward(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        if any(m.training for m in self.models):
            raise RuntimeError("EnsembleDetector is for inference: call .eval() (train the members one by one)")
        original_sizes = [(int(i.shape[-2]), int(i.shape[-1])) for i in images]
        views = self.views(images)
        reference = views[0].image_sizes
        proposals = [
            nms_union_of_proposals(
                [scale_boxes(v.proposals[i], v.image_sizes[i], reference[i]) for v in views],
                [v.objectness[i] for v in views], self.proposal_nms_thresh, self.proposals_per_image,
                nms=self.models[0].rpn.nms,
            )
            for i in range(len(images))
        ]
        first = self.models[0]
        detections = first.roi_heads.detect(lambda boxes: _average_scores(views, reference, boxes), proposals)
        return first.transform.postprocess(detections, reference, original_sizes)

    def views(self, images: list[Tensor]) -> list[_View | _MirroredView]:
        """Each member on the images, then (``flip``) each member on the mirrored images."""
        args = (self.pyramid_min_sizes, self.pyramid_max_size, self.pyramid_levels_per_roi)
        views: list[_View | _MirroredView] = [_View(m, images, *args) for m in self.models]
        if self.flip:
            mirrored = [i.flip(-1) for i in images]
            views += [_MirroredView(_View(m, mirrored, *args)) for m in self.models]
        return views

    def extra_repr(self) -> str:
        return (f"pyramid_min_sizes={self.pyramid_min_sizes}, pyramid_max_size={self.pyramid_max_size}, "
                f"pyramid_levels_per_roi={self.pyramid_levels_per_roi}, "
                f"flip={self.flip}, proposal_nms_thresh={self.proposal_nms_thresh}, "
                f"proposals_per_image={self.proposals_per_image}")


def _average_scores(
    views: Sequence[_View | _MirroredView], reference: Sizes, boxes: list[Tensor]
) -> tuple[list[Tensor], list[Tensor]]:
    """The ensemble's scorer: ``boxes`` per image in the reference frame → the views' mean probabilities
    ``[R, K]`` and mean class boxes ``[R, K, 4]``, in the reference frame."""
    all_probs, all_boxes = [], []
    for view in views:
        local = [scale_boxes(b, r, s) for b, r, s in zip(boxes, reference, view.image_sizes)]
        probs, class_boxes = view.score(local)
        all_probs.append(probs)
        all_boxes.append([scale_boxes(c, s, r) for c, s, r in zip(class_boxes, view.image_sizes, reference)])
    per_image = range(len(boxes))
    mean_probs = [_mean([p[i] for p in all_probs]) for i in per_image]
    mean_boxes = [_mean([b[i] for b in all_boxes]) for i in per_image]
    return mean_probs, mean_boxes


def _mean(values: list[Tensor]) -> Tensor:
    """The mean, as the first value plus the mean difference from it: exactly the value when all are equal (a
    plain sum over three copies then ÷ 3 is not), so copies of one model reproduce it bit for bit."""
    first = values[0]
    if len(values) == 1:
        return first
    return first + torch.stack([v - first for v in values[1:]]).sum(dim=0) / len(values)
