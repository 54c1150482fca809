"""Evaluation that matches the official programs: one module per protocol (see docs/evaluation.md).

- :mod:`detection.evaluation.voc` — PASCAL VOC AP (py-faster-rcnn ``voc_eval``), devkit result files.
"""

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
    "EvaluationInputError",
    "VOCEvaluator",
    "VOCResult",
    "detections_from_tensors",
    "ground_truth_from_tensors",
    "load_voc_ground_truth",
    "read_voc_results",
    "to_devkit_boxes",
    "voc_eval",
    "write_voc_results",
]
