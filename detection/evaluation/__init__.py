"""Evaluation that matches the official programs; one module per protocol (see docs/evaluation.md).

- :mod:`~detection.evaluation.voc` — PASCAL VOC AP (py-faster-rcnn ``voc_eval``), devkit result files.
- :mod:`~detection.evaluation.coco` — COCO bbox via pycocotools ``COCOeval``, per-class AP / AP50.
- :mod:`~detection.evaluation.imagenet_det` — ILSVRC DET mAP (``eval_detection.m``).
- :mod:`~detection.evaluation.imagenet_loc` — ILSVRC CLS-LOC top-1/top-5 error (``eval_clsloc.m``).
- :mod:`~detection.evaluation.tables` — the paper's tables in markdown.

Each has an in-memory function (used by training and testing) and file readers (used by ``tools/eval_*.py``)
that share one implementation. VOC and ILSVRC boxes are the devkit's 1-based inclusive pixels
(:func:`to_devkit_boxes` converts internal xyxy); COCO boxes are ``[x, y, w, h]``.
"""

from detection.evaluation.coco import COCOResult, coco_eval, coco_eval_files, xyxy_to_coco_results
from detection.evaluation.imagenet_det import DETResult, evaluate_det_files, imagenet_det_eval
from detection.evaluation.imagenet_loc import LOCResult, evaluate_loc_files, imagenet_loc_eval
from detection.evaluation.tables import coco_table, comparison_tables, voc_table
from detection.evaluation.voc import (
    VOC_CLASSES,
    EvaluationInputError,
    VOCEvaluator,
    VOCResult,
    detections_from_tensors,
    ground_truth_from_tensors,
    load_voc_ground_truth,
    read_voc_results,
    to_devkit_boxes,
    voc_eval,
    write_voc_results,
)

__all__ = [
    "VOC_CLASSES",
    "COCOResult",
    "DETResult",
    "EvaluationInputError",
    "LOCResult",
    "VOCEvaluator",
    "VOCResult",
    "coco_eval",
    "coco_eval_files",
    "coco_table",
    "comparison_tables",
    "detections_from_tensors",
    "evaluate_det_files",
    "evaluate_loc_files",
    "ground_truth_from_tensors",
    "imagenet_det_eval",
    "imagenet_loc_eval",
    "load_voc_ground_truth",
    "read_voc_results",
    "to_devkit_boxes",
    "voc_eval",
    "voc_table",
    "write_voc_results",
    "xyxy_to_coco_results",
]
