"""``tools/test_det.py --analyze``: the analysis report (detection/evaluation/analysis) of a test run, written
beside its ``metrics.json`` from the submission files the run just wrote and the dataset it read."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from detection.data.base import ConcatDetectionDataset
from detection.deploy import visualize
from detection.evaluation.analysis.inputs import AnalysisInput, from_imagenet_det, from_voc
from detection.evaluation.analysis.report import analyze

logger = logging.getLogger(__name__)


def analysis_input(dataset: Any, metrics: dict[str, Any], output_dir: Path, split: str) -> AnalysisInput | None:
    """The test run's ground truth and results in the analysis's form; ``None`` where it cannot be built (a union
    of datasets, a split without annotations)."""
    if isinstance(dataset, ConcatDetectionDataset) or not dataset.has_annotations:
        return None
    if dataset.protocol == "coco":
        results = Path(metrics["results_file"])
        paths = {dataset.image_info(i)["image_id"]: dataset.image_dir / dataset.image_info(i)["file_name"]
                 for i in range(len(dataset))}
        return AnalysisInput(dataset.coco, json.loads(results.read_text()), str(results), paths)
    if dataset.protocol == "voc":
        return from_voc(dataset.year_dir, dataset.split, Path(metrics["results_dir"]), dataset.classes)
    if dataset.protocol == "imagenet_det":
        return from_imagenet_det(dataset.root, dataset.split, output_dir / f"ilsvrc_det_{split}.txt")
    return None


def write_analysis(dataset: Any, metrics: dict[str, Any], output_dir: Path, split: str,
                   score_thresh: float = 0.5) -> Path | None:
    """``output_dir/report.html`` (and its figures, ``analysis.json``); its path, or ``None`` with a warning."""
    inp = analysis_input(dataset, metrics, output_dir, split)
    if inp is None:
        logger.warning("no analysis report: %s %s is a union of datasets or has no annotations",
                       type(dataset).__name__, split)
        return None
    summary = analyze(inp, output_dir, drawer=visualize, score_thresh=score_thresh)
    return Path(summary["report"])
