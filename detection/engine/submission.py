"""Evaluation-server submissions for test splits whose annotations are not public (``dataset.has_annotations`` is
False): the files each server expects, and a metrics dict that says the split cannot be scored here.

- COCO (``test-dev2017``, ``test2017``): ``detections_<split>_<algorithm>_results.json`` (the dataset's category
  ids, ``[x, y, w, h]``) and the same file zipped, which is what the COCO server takes.
- VOC (``2012_test``): ``results/VOC<year>/Main/comp4_det_test_<class>.txt`` (devkit image names, 1-based boxes)
  and ``results.tar.gz`` holding that ``results/`` tree, the layout the PASCAL server unpacks.
- ILSVRC DET (``test``): ``ilsvrc_det_test.txt`` lines ``<image_index> <class_index> <confidence> <xmin> <ymin>
  <xmax> <ymax>``, the devkit's submission format.
"""

from __future__ import annotations

import json
import tarfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from detection.data.base import ConcatDetectionDataset, DetectionDataset
from detection.devkit import to_devkit_boxes
from detection.engine.inference import Predictions
from detection.evaluation.coco import xyxy_to_coco_results
from detection.evaluation.imagenet_det import write_det_results
from detection.evaluation.voc import detections_from_tensors, write_voc_results
from detection.files import atomic_open, write_text

__all__ = ["ALGORITHM", "write_submission"]

ALGORITHM = "resdet"  # the <alg> part of COCO's result file name


def write_submission(
    dataset: DetectionDataset | ConcatDetectionDataset, predictions: Predictions, output_dir: Path, split: str
) -> tuple[dict[str, Any], str]:
    """Write the server's files for ``dataset.protocol`` under ``output_dir``; returns ``(metrics, message)``
    with ``metrics["mAP50"] = None`` and ``metrics["submission"]`` the file to upload."""
    output_dir.mkdir(parents=True, exist_ok=True)
    if dataset.protocol == "coco":
        path = _coco(dataset, predictions, output_dir, split)
    elif dataset.protocol == "voc":
        path = _voc(dataset, predictions, output_dir)
    elif dataset.protocol == "imagenet_det":
        path = _imagenet_det(dataset, predictions, output_dir, split)
    else:
        raise ValueError(f"{type(dataset).__name__} has no known submission format: {dataset.protocol!r}")
    message = (f"{split} has no public annotations, so it cannot be scored here: upload {path} to the "
               f"{dataset.protocol} evaluation server")  # fmt: skip
    metrics = {"mAP50": None, "metric": "none (no annotations)", "submission": str(path), "note": message}
    return metrics, message


def _coco(dataset: Any, predictions: Predictions, output_dir: Path, split: str) -> Path:
    results: list[dict[str, Any]] = []
    for target, output in zip(predictions.targets, predictions.outputs):
        cat_ids = [dataset.label_to_cat_id[int(label)] for label in output["labels"]]
        results.extend(xyxy_to_coco_results(target["image_id"], output["boxes"], output["scores"], cat_ids))
    path = output_dir / f"detections_{split}_{ALGORITHM}_results.json"
    write_text(path, json.dumps(results))
    archive = path.with_suffix(".zip")
    with atomic_open(archive, "wb") as raw, zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.write(path, arcname=path.name)
    return archive


def _voc(dataset: Any, predictions: Predictions, output_dir: Path) -> Path:
    names = dataset.image_names()
    detections: dict[str, list] = {c: [] for c in dataset.classes}
    for target, output in zip(predictions.targets, predictions.outputs):
        name = names[int(target["image_id"])]
        found = detections_from_tensors(name, output["boxes"], output["scores"], output["labels"], dataset.classes)
        for cls, items in found.items():
            detections[cls].extend(items)
    main = output_dir / "results" / f"VOC{dataset.year}" / "Main"
    write_voc_results(main, dataset.split, detections, dataset.classes)
    archive = output_dir / "results.tar.gz"
    with atomic_open(archive, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
        tar.add(output_dir / "results", arcname="results")
    return archive


def _imagenet_det(dataset: Any, predictions: Predictions, output_dir: Path, split: str) -> Path:
    wnids: Sequence[str] = dataset.wnids
    detections = []
    for target, output in zip(predictions.targets, predictions.outputs):
        image = int(target["image_id"])
        for box, score, label in zip(to_devkit_boxes(output["boxes"]).tolist(), output["scores"].tolist(),
                                     output["labels"].tolist()):  # fmt: skip
            detections.append((image, wnids[int(label) - 1], float(score), tuple(box)))
    class_index = {wnid: dataset.label_to_class_index[label] for label, wnid in enumerate(wnids, start=1)}
    path = output_dir / f"ilsvrc_det_{split}.txt"
    write_det_results(path, detections, class_index)
    return path
