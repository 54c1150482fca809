"""The one in-memory form every analysis reads: COCO ground truth and COCO results as flat numpy arrays.

Boxes stay in COCO's ``[x, y, w, h]`` (continuous pixels, no ``+1``), as pycocotools and TIDE measure them.
Images are numbered ``0..I-1`` in the ground truth's ``images`` order and classes ``0..K-1`` in increasing category
id order (``category_ids[k]``, ``class_names[k]``). Crowd objects (``iscrowd``) are kept with ``gt_crowd`` set: they
are ignore regions, never objects to find.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pycocotools.coco import COCO

from detection.evaluation.coco import validate_coco_results


@dataclass
class AnalysisData:
    """Ground truth ``gt_*`` ``[G]`` (in the file's order) and detections ``det_*`` ``[D]`` (in the results'
    order); ``*_image`` index ``image_ids``, ``*_class`` index ``category_ids``; ``gt_area`` is the annotation's
    ``area`` (pycocotools' size ranges read it)."""

    coco_gt: COCO
    image_ids: np.ndarray
    category_ids: np.ndarray
    class_names: list[str]
    gt_image: np.ndarray
    gt_class: np.ndarray
    gt_box: np.ndarray
    gt_crowd: np.ndarray
    gt_area: np.ndarray
    det_image: np.ndarray
    det_class: np.ndarray
    det_box: np.ndarray
    det_score: np.ndarray

    @property
    def num_images(self) -> int:
        return len(self.image_ids)

    @property
    def num_classes(self) -> int:
        return len(self.category_ids)


def analysis_data(coco_gt: COCO, results: Sequence[Mapping[str, Any]], source: str = "results") -> AnalysisData:
    """Validate ``results`` against ``coco_gt`` (unknown images or categories raise
    :class:`~detection.errors.EvaluationInputError` naming ``source``) and flatten both."""
    validate_coco_results(coco_gt, results, source)
    image_ids = np.array([im["id"] for im in coco_gt.dataset["images"]], dtype=np.int64)
    category_ids = np.array(sorted(coco_gt.getCatIds()), dtype=np.int64)
    names = [coco_gt.cats[int(c)]["name"] for c in category_ids]
    image_index = {int(i): k for k, i in enumerate(image_ids)}
    class_index = {int(c): k for k, c in enumerate(category_ids)}
    anns = coco_gt.dataset.get("annotations", [])
    gt_box = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
    det_box = np.array([r["bbox"] for r in results], dtype=np.float64).reshape(-1, 4)
    return AnalysisData(
        coco_gt=coco_gt,
        image_ids=image_ids,
        category_ids=category_ids,
        class_names=names,
        gt_image=np.array([image_index[a["image_id"]] for a in anns], dtype=np.int64),
        gt_class=np.array([class_index[a["category_id"]] for a in anns], dtype=np.int64),
        gt_box=gt_box,
        gt_crowd=np.array([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool),
        gt_area=np.array([a.get("area", a["bbox"][2] * a["bbox"][3]) for a in anns], dtype=np.float64),
        det_image=np.array([image_index[r["image_id"]] for r in results], dtype=np.int64),
        det_class=np.array([class_index[r["category_id"]] for r in results], dtype=np.int64),
        det_box=det_box,
        det_score=np.array([r["score"] for r in results], dtype=np.float64),
    )


def box_iou(a: np.ndarray, b: np.ndarray, crowd: bool = False) -> np.ndarray:
    """IoU ``[A, B]`` of ``[x, y, w, h]`` boxes as pycocotools computes it; ``crowd``: intersection over the area
    of ``a`` (how much of a detection lies inside a crowd region)."""
    ax2, ay2 = a[:, 0] + a[:, 2], a[:, 1] + a[:, 3]
    bx2, by2 = b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    w = np.minimum(ax2[:, None], bx2[None]) - np.maximum(a[:, None, 0], b[None, :, 0])
    h = np.minimum(ay2[:, None], by2[None]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.where((w > 0) & (h > 0), w * h, 0.0)
    area_a = a[:, 2] * a[:, 3]
    union = area_a[:, None] if crowd else area_a[:, None] + (b[:, 2] * b[:, 3])[None] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def group_by_image(image: np.ndarray, num_images: int) -> np.ndarray:
    """``starts[I + 1]``: the rows of image ``i`` are ``order[starts[i]:starts[i + 1]]`` for a stable
    ``order = argsort(image)``."""
    return np.searchsorted(np.sort(image, kind="stable"), np.arange(num_images + 1), side="left")
