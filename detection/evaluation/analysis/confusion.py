"""The class confusion matrix with background, at one IoU and one score threshold.

Rows are the ground-truth classes then ``background``, columns the predicted classes then ``background``. Per
image, the detections scoring ≥ ``score_thresh`` and the objects are paired one to one, highest IoU first, over
all classes, while IoU ≥ ``iou_thresh``: a pair counts in ``[object class, detected class]`` (the diagonal: right),
an object left alone in ``[class, background]`` (missed), a detection left alone in ``[background, class]`` (a false
alarm). Detections inside a crowd region (more than ``iou_thresh`` of their area) are not counted; crowd regions
are not objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from detection.evaluation.analysis.data import AnalysisData, box_iou, group_by_image


@dataclass
class ConfusionResult:
    """``counts`` ``[K + 1, K + 1]`` (last row / column: background); per image ``missed`` and ``false_pos``
    ``[I]`` (an object not found as its class; a detection not on an object of its class)."""

    counts: np.ndarray
    class_names: list[str]
    iou_thresh: float
    score_thresh: float
    missed: np.ndarray
    false_pos: np.ndarray

    def normalized(self) -> np.ndarray:
        """Each row divided by its sum (rows without objects stay 0)."""
        totals = self.counts.sum(axis=1, keepdims=True)
        return np.divide(self.counts, totals, out=np.zeros(self.counts.shape), where=totals > 0)

    def to_dict(self) -> dict[str, Any]:
        return {"labels": [*self.class_names, "background"], "counts": self.counts.tolist(),
                "iou_thresh": self.iou_thresh, "score_thresh": self.score_thresh}


def confusion_matrix(data: AnalysisData, iou_thresh: float = 0.5, score_thresh: float = 0.5) -> ConfusionResult:
    """See the module docstring."""
    k = data.num_classes
    counts = np.zeros((k + 1, k + 1), np.int64)
    missed = np.zeros(data.num_images, np.int64)
    false_pos = np.zeros(data.num_images, np.int64)
    confident = np.flatnonzero(data.det_score >= score_thresh)
    d_order = confident[np.argsort(data.det_image[confident], kind="stable")]
    d_starts = group_by_image(data.det_image[confident], data.num_images)
    g_order = np.argsort(data.gt_image, kind="stable")
    g_starts = group_by_image(data.gt_image, data.num_images)
    for i in range(data.num_images):
        dets = d_order[d_starts[i]:d_starts[i + 1]]
        gts = g_order[g_starts[i]:g_starts[i + 1]]
        crowd = data.gt_crowd[gts]
        objs, regions = gts[~crowd], gts[crowd]
        if len(regions) and len(dets):
            inside = (box_iou(data.det_box[dets], data.gt_box[regions], crowd=True) > iou_thresh).any(1)
            dets = dets[~inside]
        d_cls, g_cls = data.det_class[dets], data.gt_class[objs]
        det_match = np.full(len(dets), -1)
        gt_match = np.full(len(objs), -1)
        if len(dets) and len(objs):
            iou = box_iou(data.det_box[dets], data.gt_box[objs])
            rows, cols = np.nonzero(iou >= iou_thresh)
            for p in np.argsort(-iou[rows, cols], kind="stable"):
                d, g = rows[p], cols[p]
                if det_match[d] < 0 and gt_match[g] < 0:
                    det_match[d], gt_match[g] = g, d
        paired = det_match >= 0
        np.add.at(counts, (g_cls[det_match[paired]], d_cls[paired]), 1)
        np.add.at(counts, (g_cls[gt_match < 0], k), 1)
        np.add.at(counts, (k, d_cls[~paired]), 1)
        right = paired.copy()
        right[paired] = g_cls[det_match[paired]] == d_cls[paired]
        false_pos[i] = int((~right).sum())
        missed[i] = len(objs) - int(right.sum())
    return ConfusionResult(counts, list(data.class_names), iou_thresh, score_thresh, missed, false_pos)
