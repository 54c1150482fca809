"""Turn a run's predictions into the dataset's own submission files and its official metric.

The dataset says which metric (``dataset.protocol``) and provides what that metric needs as typed attributes;
every number comes from ``detection.evaluation`` (one implementation per protocol):
- ``"coco"``: results JSON with the dataset's category ids (``label_to_cat_id``) and ``[x, y, w, h]`` →
  pycocotools' 12 numbers against ``dataset.coco``; with ``headline_voc07`` (the generated shapes set) VOC07
  11-point mAP@0.5 too, as the headline number.
- ``"voc"``: ``comp4_det_<split>_<class>.txt`` (1-based, ``image_names()``; ``<split>`` is the devkit's, ``test``
  for ``2007_test``) → mAP@0.5 with the devkit's AP of the
  dataset's year (``use_07_metric``: 11-point for VOC2007, area for VOC2010 on).
- ``"imagenet_det"``: devkit result lines (``wnids``, ``label_to_class_index``) → the ILSVRC DET mAP, skipping
  the devkit blacklist's (image, class) pairs (``blacklist_file``), as ``tools/eval_imagenet.py det`` does.

``metrics["mAP50"]`` is always the headline IoU-0.5 mAP as a fraction; ``metrics["metric"]`` says which one. A test
split without public annotations (``has_annotations`` False) gets the server's submission files instead
(detection/engine/submission.py) and ``mAP50 = None``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from detection.data import CocoDetection, ImageNetDetDataset, ImageNetDetection, VOCDataset, VOCDetection
from detection.data.base import ConcatDetectionDataset, DetectionDataset
from detection.devkit import to_devkit_boxes
from detection.engine.inference import Predictions
from detection.engine.submission import write_submission
from detection.evaluation.coco import coco_eval, xyxy_to_coco_results
from detection.evaluation.imagenet_det import imagenet_det_eval, read_det_blacklist, write_det_results
from detection.evaluation.tables import ap_table, coco_stats_table, per_class_table
from detection.evaluation.voc import VOCEvaluator, VOCResult, write_voc_results
from detection.files import write_text

logger = logging.getLogger(__name__)


def evaluate_predictions(
    dataset_name: str,
    dataset: DetectionDataset | ConcatDetectionDataset,
    predictions: Predictions,
    output_dir: Path,
    split: str,
) -> tuple[dict[str, Any], str]:
    """Write submission files under ``output_dir`` and score them with ``dataset.protocol``.

    Returns ``(metrics, markdown table)``; ``dataset_name`` and ``split`` label the metrics and the files.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    if not dataset.has_annotations:  # a test split for the evaluation server: its files, no number
        metrics, table = write_submission(dataset, predictions, output_dir, split)
    elif dataset.protocol == "coco":
        metrics, table = _evaluate_coco(dataset, predictions, output_dir, split)
    elif dataset.protocol == "voc":
        metrics, table = _evaluate_voc(dataset, predictions, output_dir, split)
    elif dataset.protocol == "imagenet_det":
        metrics, table = _evaluate_imagenet_det(dataset, predictions, output_dir, split)
    else:
        raise ValueError(f"{type(dataset).__name__} has no known evaluation protocol: {dataset.protocol!r}")
    metrics.update(dataset=dataset_name, split=split, images=len(predictions.outputs),
                   skipped_images=predictions.skipped, failed_images=list(predictions.failed))
    return metrics, table


def _voc_style(
    classes: list[str], predictions: Predictions, use_07_metric: bool
) -> tuple[VOCEvaluator, VOCResult]:
    evaluator = VOCEvaluator(classes)
    for target, output in zip(predictions.targets, predictions.outputs):
        # Crowd regions (COCO format) can neither be hit nor missed: VOC's "difficult" rule does exactly that.
        ignore = target.get("difficult", target.get("iscrowd"))
        evaluator.add(target["image_id"], output, {"boxes": target["boxes"], "labels": target["labels"],
                                                   "difficult": ignore})
    return evaluator, evaluator.evaluate(use_07_metric=use_07_metric)


def _evaluate_coco(
    dataset: CocoDetection, predictions: Predictions, output_dir: Path, split: str
) -> tuple[dict[str, Any], str]:
    results: list[dict[str, Any]] = []
    for target, output in zip(predictions.targets, predictions.outputs):
        cat_ids = [dataset.label_to_cat_id[int(label)] for label in output["labels"]]
        results.extend(xyxy_to_coco_results(target["image_id"], output["boxes"], output["scores"], cat_ids))
    path = output_dir / f"coco_results_{split}.json"
    write_text(path, json.dumps(results))
    evaluated_ids = [int(t["image_id"]) for t in predictions.targets]
    coco = dataset.coco
    if len(evaluated_ids) != len(coco.getImgIds()):
        coco = _subset(coco, evaluated_ids)
    result = coco_eval(coco, results)
    metrics: dict[str, Any] = {
        "mAP50": result.ap50,
        "mAP": result.ap,
        "metric": "COCO mAP@0.5 (pycocotools)",
        "coco_stats": result.stats,
        "per_class": result.per_class,
        "results_file": str(path),
    }
    table = coco_stats_table(result.stats) + "\n\n" + per_class_table(result.per_class)
    if dataset.headline_voc07:
        _, voc = _voc_style(dataset.classes, predictions, use_07_metric=True)
        metrics.update(mAP50=voc.mAP, metric="VOC07 11-point mAP@0.5", voc07_ap=dict(voc.ap), coco_AP50=result.ap50)
        table = ap_table(voc.ap, voc.mAP) + "\n\n" + table
    return metrics, table


def _subset(coco: Any, image_ids: list[int]) -> Any:
    """A COCO object restricted to the images that were actually evaluated (unreadable ones and those the model
    failed on were skipped)."""
    from pycocotools.coco import COCO

    keep = set(image_ids)
    sub = COCO()
    sub.dataset = {
        "images": [im for im in coco.dataset["images"] if im["id"] in keep],
        "annotations": [a for a in coco.dataset["annotations"] if a["image_id"] in keep],
        "categories": coco.dataset["categories"],
    }
    sub.createIndex()
    return sub


def _evaluate_voc(
    dataset: VOCDataset | VOCDetection, predictions: Predictions, output_dir: Path, split: str
) -> tuple[dict[str, Any], str]:
    evaluator, result = _voc_style(dataset.classes, predictions, use_07_metric=dataset.use_07_metric)
    names = dataset.image_names()  # devkit files name images ("000001"); targets carry the index in the split list
    detections = {
        cls: [(names[int(image_id)], score, box) for image_id, score, box in items]
        for cls, items in evaluator.detections.items()
    }
    # Named by the devkit's own split ("test" for "2007_test"): the name tools/eval_voc.py --split looks for.
    write_voc_results(output_dir / "results", dataset.split, detections, dataset.classes)
    metrics = {
        "mAP50": result.mAP,
        "metric": "VOC07 11-point mAP@0.5" if result.use_07_metric else "VOC area mAP@0.5",
        "ap": dict(result.ap),
        "results_dir": str(output_dir / "results"),
    }
    return metrics, ap_table(result.ap, result.mAP)


def _evaluate_imagenet_det(
    dataset: ImageNetDetDataset | ImageNetDetection, predictions: Predictions, output_dir: Path, split: str
) -> tuple[dict[str, Any], str]:
    wnids = dataset.wnids
    detections, ground_truth = [], {}
    for target, output in zip(predictions.targets, predictions.outputs):
        image = int(target["image_id"])
        ground_truth[image] = [
            (wnids[int(label) - 1], tuple(box)) for box, label in
            zip(to_devkit_boxes(target["boxes"]).tolist(), target["labels"].tolist())
        ]
        for box, score, label in zip(to_devkit_boxes(output["boxes"]).tolist(), output["scores"].tolist(),
                                     output["labels"].tolist()):
            detections.append((image, wnids[int(label) - 1], float(score), tuple(box)))
    class_index = {wnid: dataset.label_to_class_index[label] for label, wnid in enumerate(wnids, start=1)}
    write_det_results(output_dir / f"ilsvrc_det_{split}.txt", detections, class_index)
    names = dict(zip(wnids, dataset.classes))
    blacklist_file = dataset.blacklist_file  # the devkit's: the same numbers as tools/eval_imagenet.py det
    blacklist = read_det_blacklist(blacklist_file, wnids) if blacklist_file else set()
    result = imagenet_det_eval(detections, ground_truth, wnids, blacklist, names=names)
    metrics = {"mAP50": result.mAP, "metric": "ILSVRC DET mAP", "ap": dict(result.ap),
               "blacklist": str(blacklist_file) if blacklist_file else None}
    return metrics, ap_table(result.ap, result.mAP, names=names)


def summarize_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe copy (numpy/tensor numbers → float)."""

    def clean(v: Any) -> Any:
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        if isinstance(v, (np.floating, np.integer)):
            return v.item()
        if torch.is_tensor(v):
            return v.tolist()
        return v

    return clean(metrics)
