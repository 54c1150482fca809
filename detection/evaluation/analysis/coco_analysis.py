"""The COCO ``analyze`` breakdown (Hoiem-style, as the COCO API's ``CocoEval.analyze`` and Detectron / mmdetection
draw it) and the PR curves, with ``COCOeval``'s matching (:mod:`.matching`, held equal to pycocotools).

Per class and object size, seven precision-recall curves, each forgiving one more kind of error (their APs are the
areas under them, 0–1):

- ``C75`` / ``C50``: PR at IoU 0.75 / 0.5 (the ordinary curves);
- ``Loc``: at IoU 0.1 (localisation errors forgiven, duplicates still count);
- ``Sim``: and detections on objects of another class of the same supercategory ignored;
- ``Oth``: and detections on objects of any other class ignored;
- ``BG``: and every remaining false positive (background) removed: precision 1 wherever ``Oth`` reaches;
- ``FN``: and every missed object found: the whole square.

Classes without objects (of a size) are left out of the means.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from detection.evaluation.analysis.data import AnalysisData
from detection.evaluation.analysis.matching import AREA_RANGES, RECALL_THRESHOLDS, Matcher

CURVES = ("C75", "C50", "Loc", "Sim", "Oth", "BG", "FN")
AREAS = tuple(AREA_RANGES)


@dataclass
class COCOAnalysis:
    """``precision[7, R, K, A]`` (the curves above × recall thresholds × classes × areas), ``recall`` ``[R]``,
    and which classes have objects of each size (``has_gt`` ``[K, A]``)."""

    precision: np.ndarray
    recall: np.ndarray
    class_names: list[str]
    has_gt: np.ndarray

    def ap(self) -> np.ndarray:
        """``[7, K, A]``: the area under each curve."""
        return self.precision.mean(axis=1)

    def overall(self) -> np.ndarray:
        """``[7, R, A]``: the curves averaged over the classes with objects (of that size)."""
        out = np.zeros((len(CURVES), self.precision.shape[1], len(AREAS)))
        for a in range(len(AREAS)):
            keep = self.has_gt[:, a]
            if keep.any():
                out[:, :, a] = self.precision[:, :, keep, a].mean(axis=2)
        return out

    def to_dict(self) -> dict[str, Any]:
        ap = self.ap()
        overall = self.overall().mean(axis=1)
        return {
            "overall": {area: dict(zip(CURVES, map(float, overall[:, a]))) for a, area in enumerate(AREAS)},
            "per_class": {name: dict(zip(CURVES, map(float, ap[:, k, 0])))
                          for k, name in enumerate(self.class_names) if self.has_gt[k, 0]},
        }


def confusable(data: AnalysisData, same_supercategory: bool) -> np.ndarray:
    """``[K, K]``: ``[k, j]`` where class ``k``'s detections on class ``j``'s objects are forgiven (``Sim``: the
    same supercategory, ``Oth``: any other class)."""
    k = data.num_classes
    other = ~np.eye(k, dtype=bool)
    if not same_supercategory:
        return other
    supers = np.array([str(data.coco_gt.cats[int(c)].get("supercategory")) for c in data.category_ids])
    named = np.array([data.coco_gt.cats[int(c)].get("supercategory") is not None for c in data.category_ids])
    return other & (supers[:, None] == supers[None]) & named[:, None] & named[None]


def coco_analysis(data: AnalysisData, matcher: Matcher | None = None) -> COCOAnalysis:
    """The seven curves per class and size."""
    matcher = matcher or Matcher(data)
    k = data.num_classes
    precision = np.zeros((len(CURVES), len(RECALL_THRESHOLDS), k, len(AREAS)))
    has_gt = np.zeros((k, len(AREAS)), bool)
    variants = [(0.75, None), (0.5, None), (0.1, None), (0.1, confusable(data, True)), (0.1, confusable(data, False))]
    for a, area in enumerate(AREAS):
        for c, (iou, relabel) in enumerate(variants):
            matched, ignored, num_objects = matcher.match(iou, area, relabel)
            precision[c, :, :, a] = matcher.precision(matched, ignored, num_objects)
        has_gt[:, a] = num_objects > 0
    precision[precision < 0] = 0.0
    precision[5] = precision[4] > 0
    precision[6] = 1.0
    precision[:, :, ~has_gt] = 0.0
    return COCOAnalysis(precision=precision, recall=RECALL_THRESHOLDS, class_names=data.class_names, has_gt=has_gt)
