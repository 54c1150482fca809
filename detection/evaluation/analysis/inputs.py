"""Each dataset's own ground truth and result files → the COCO form the analysis reads (:class:`AnalysisInput`).

- COCO instances JSON + COCO results JSON (own data, ``coco``, ``shapes``): read as ``tools/eval_coco.py`` does;
- ``voc``: one year's folder (``Annotations/``, ``ImageSets/Main/<split>.txt``) and ``comp4_det_<split>_<class>.txt``
  (1-based inclusive boxes → ``[x1 - 1, y1 - 1, x2 - x1 + 1, y2 - y1 + 1]``; *difficult* objects become crowd
  regions: ignored, as the devkit ignores them);
- ``imagenet_det``: the ILSVRC layout and a DET submission file (same box conversion; the devkit's per-object
  IoU threshold for small objects is not TIDE's and is not applied).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pycocotools.coco import COCO

from detection.devkit import read_class_map, read_ilsvrc_split
from detection.errors import EvaluationInputError
from detection.evaluation.coco import load_coco, load_coco_results
from detection.evaluation.imagenet_det import load_det_ground_truth, read_det_results
from detection.evaluation.voc import VOC_CLASSES, load_voc_ground_truth, read_voc_results


@dataclass
class AnalysisInput:
    """Ground truth (a pycocotools ``COCO``), results in the COCO format (dataset category ids, ``[x, y, w, h]``)
    and where each image's file is (``image_paths``, by image id; may be empty: no gallery)."""

    coco_gt: COCO
    results: list[dict[str, Any]]
    source: str
    image_paths: dict[int, Path] = field(default_factory=dict)


def _coco(images: list[dict], annotations: list[dict], names: Sequence[str]) -> COCO:
    coco = COCO()
    coco.dataset = {"images": images, "annotations": annotations,
                    "categories": [{"id": i + 1, "name": n} for i, n in enumerate(names)]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _xywh(box: Sequence[float]) -> list[float]:
    """A devkit box (1-based inclusive) → COCO ``[x, y, w, h]`` in continuous 0-based pixels."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return [x1 - 1, y1 - 1, x2 - x1 + 1, y2 - y1 + 1]


def _annotation(image_id: int, category_id: int, box: Sequence[float], crowd: bool, ann_id: int) -> dict:
    xywh = _xywh(box)
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": xywh,
            "area": xywh[2] * xywh[3], "iscrowd": int(crowd)}


def from_coco_files(annotations: Path, results: Path, image_dir: Path | None = None) -> AnalysisInput:
    """A COCO instances file and a COCO results file; images under ``image_dir`` (their ``file_name``)."""
    coco_gt = load_coco(annotations)
    paths = {}
    if image_dir is not None:
        paths = {im["id"]: image_dir / im["file_name"] for im in coco_gt.dataset["images"] if "file_name" in im}
    return AnalysisInput(coco_gt, load_coco_results(results), str(results), paths)


def from_voc(voc_root: Path, split: str, results_dir: Path, classes: Sequence[str] = VOC_CLASSES,
             progress: bool = False) -> AnalysisInput:
    """One VOC year's split and its ``comp4_det_<split>_<class>.txt`` files (a missing class file: none)."""
    ground_truth = load_voc_ground_truth(voc_root, split, progress=progress)
    detections = read_voc_results(results_dir, split, classes, allow_missing=True)
    ids = {name: i + 1 for i, name in enumerate(ground_truth)}
    label = {name: i + 1 for i, name in enumerate(classes)}
    images = [{"id": ids[name], "file_name": f"{name}.jpg"} for name in ground_truth]
    anns = [_annotation(ids[name], label[cls], box, difficult, 0)
            for name, objects in ground_truth.items() for cls, box, difficult in objects if cls in label]
    for i, a in enumerate(anns):
        a["id"] = i + 1
    results = []
    for cls, dets in detections.items():
        for image, score, box in dets:
            if image not in ids:
                raise EvaluationInputError(f"{results_dir}: comp4_det_{split}_{cls}.txt names image {image!r}, "
                                           f"which is not in ImageSets/Main/{split}.txt")
            results.append({"image_id": ids[image], "category_id": label[cls], "bbox": _xywh(box), "score": score})
    paths = {ids[name]: Path(voc_root) / "JPEGImages" / f"{name}.jpg" for name in ground_truth}
    return AnalysisInput(_coco(images, anns, list(classes)), results, str(results_dir), paths)


def from_imagenet_det(root: Path, split: str, results: Path, progress: bool = False) -> AnalysisInput:
    """The ILSVRC DET layout's ``split`` and a submission file (class names are the synsets' names)."""
    images = dict(sorted((index, name) for name, index in read_ilsvrc_split(
        Path(root) / "ImageSets" / "DET" / f"{split}.txt")))
    synsets = read_class_map(Path(root) / "devkit" / "data" / "map_det.txt")
    wnids = [s.wnid for s in synsets]
    label = {s.wnid: i + 1 for i, s in enumerate(synsets)}
    ground_truth = load_det_ground_truth(root, images, wnids, progress)
    dets = read_det_results(results, images, {s.index: s.wnid for s in synsets})
    anns = [_annotation(index, label[wnid], box, False, 0) for index, objects in ground_truth.items()
            for wnid, box in objects]
    for i, a in enumerate(anns):
        a["id"] = i + 1
    coco_images = [{"id": index, "file_name": f"{name}.JPEG"} for index, name in images.items()]
    out = [{"image_id": image, "category_id": label[wnid], "bbox": _xywh(box), "score": score}
           for image, wnid, score, box in dets]
    folder = "val" if split.startswith("val") else split  # val1 / val2 (Table 11's halves) are val's images
    paths = {index: Path(root) / "Data" / "DET" / folder / f"{name}.JPEG" for index, name in images.items()}
    return AnalysisInput(_coco(coco_images, anns, [s.name for s in synsets]), out, str(results), paths)


DATASETS = ("coco", "shapes", "voc", "imagenet_det")
DEFAULT_SPLITS = {"coco": "val2017", "shapes": "val", "voc": "test", "imagenet_det": "val"}


def guess_image_dir(annotations: Path) -> Path | None:
    """The COCO layout's image folder of ``<root>/annotations/instances_<split>.json``: ``<root>/<split>``."""
    name = annotations.stem
    if annotations.parent.name == "annotations" and name.startswith("instances_"):
        folder = annotations.parent.parent / name.removeprefix("instances_")
        return folder if folder.is_dir() else None
    return None


def load_analysis_input(
    data_root: Path, results: Path, *, dataset: str | None = None, split: str = "", image_dir: Path | None = None,
    classes: Sequence[str] | None = None, progress: bool = False,
) -> AnalysisInput:
    """``tools/analyze_results.py``'s inputs: without ``dataset``, ``data_root`` is a COCO instances JSON (or a
    COCO-layout root with ``split``); with it, that dataset's layout and its own result files."""
    from detection.data.coco import default_annotation_file, default_image_dir

    split = split or DEFAULT_SPLITS.get(dataset or "coco", "val2017")
    if dataset == "voc":
        return from_voc(data_root, split, results, classes or VOC_CLASSES, progress=progress)
    if dataset == "imagenet_det":
        return from_imagenet_det(data_root, split, results, progress=progress)
    if data_root.is_dir():
        annotations = default_annotation_file(data_root, split)
        image_dir = image_dir or default_image_dir(data_root, split)
    else:
        annotations = data_root
        image_dir = image_dir or guess_image_dir(data_root)
    return from_coco_files(annotations, results, image_dir)
