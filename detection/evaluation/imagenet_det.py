"""ImageNet (ILSVRC) DET AP, as the devkit's ``evaluation/eval_detection.m``.

Boxes are devkit boxes ``(xmin, ymin, xmax, ymax)``, 1-based inclusive, IoU with the ``+1`` rule (internal
xyxy converts with :func:`detection.evaluation.voc.to_devkit_boxes`). Rules, differing from VOC:

- each ground-truth box has its own threshold ``min(0.5, w·h / ((w + 10)(h + 10)))``, ``w = xmax − xmin + 1``;
- matching is per image over all classes in descending confidence: a detection takes, among the still
  unmatched GT boxes of its class whose IoU (only where ``iw > 0`` and ``ih > 0``) is ``≥`` their threshold,
  the one with the largest IoU (first on ties); otherwise it is a false positive; no difficult flag, no
  duplicate rule beyond that;
- a detection whose (image, class) is blacklisted is skipped, and blacklisted GT objects are not counted in
  npos;
- per class, detections are sorted by confidence over all images (stable: image order, then per-image order),
  AP is the VOC2010 area form, mAP the mean over ``classes`` (a class without ground truth has AP 0).

Layout: ``ImageSets/DET/<split>.txt`` (``<image_name> <image_index>``), ``devkit/data/map_det.txt``
(``<wnid> <class_index> <name>``), ``Annotations/DET/val/<image_name>.xml``, read by :mod:`detection.devkit`.
Result lines: ``<image_index> <class_index> <confidence> <xmin> <ymin> <xmax> <ymax>``.
"""

from __future__ import annotations

import math
from collections.abc import Container, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from detection.devkit import (
    Box,
    find_det_blacklist,
    numbered_lines,
    read_class_map,
    read_ilsvrc_split,
    read_pascal_xml,
)
from detection.errors import EvaluationInputError
from detection.evaluation.voc import APResult, voc_ap
from detection.files import write_text

__all__ = [
    "DETResult",
    "DETDetection",
    "det_threshold",
    "imagenet_det_eval",
    "read_det_blacklist",
    "load_det_ground_truth",
    "read_det_results",
    "write_det_results",
    "evaluate_det_files",
]

PIXEL_TOLERANCE = 10.0
DEFAULT_IOU = 0.5

ImageId = Hashable
DETDetection = tuple[ImageId, str, float, Box]  # (image, wnid, confidence, box)


@dataclass
class DETResult(APResult):
    """:class:`APResult` per wnid; ``names`` maps wnid → readable name."""

    names: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form ``{"mAP": …, "ap": {wnid: …}}``."""
        return {"mAP": self.mAP, "ap": {c: self.ap[c] for c in self.classes}}


def det_threshold(box: Box) -> float:
    """The devkit's IoU threshold of a ground-truth box: ``min(0.5, w·h / ((w + 10)(h + 10)))``."""
    w = box[2] - box[0] + 1.0
    h = box[3] - box[1] + 1.0
    return min(DEFAULT_IOU, (w * h) / ((w + PIXEL_TOLERANCE) * (h + PIXEL_TOLERANCE)))


def _match_image(
    dets: list[DETDetection], gts: Sequence[tuple[str, Box]], blacklisted: set[str]
) -> list[tuple[str, float, bool]]:
    """Match one image's detections (already in descending confidence); returns (wnid, score, is_tp) for every
    detection that is not blacklisted, in that order."""
    dets = [d for d in dets if d[1] not in blacklisted]
    if not gts or not dets:
        return [(wnid, score, False) for _, wnid, score, _ in dets]
    gt_box = np.array([g[1] for g in gts], dtype=np.float64).reshape(-1, 4)
    det_box = np.array([d[3] for d in dets], dtype=np.float64).reshape(-1, 4)
    thr = np.array([det_threshold(g[1]) for g in gts], dtype=np.float64)
    # [D, G] IoU with the +1 rule; a pair qualifies when the classes agree, iw > 0, ih > 0 and IoU >= thr.
    iw = np.minimum(det_box[:, None, 2], gt_box[:, 2]) - np.maximum(det_box[:, None, 0], gt_box[:, 0]) + 1.0
    ih = np.minimum(det_box[:, None, 3], gt_box[:, 3]) - np.maximum(det_box[:, None, 1], gt_box[:, 1]) + 1.0
    det_area = (det_box[:, 2] - det_box[:, 0] + 1.0) * (det_box[:, 3] - det_box[:, 1] + 1.0)
    gt_area = (gt_box[:, 2] - gt_box[:, 0] + 1.0) * (gt_box[:, 3] - gt_box[:, 1] + 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = iw * ih / (det_area[:, None] + gt_area[None, :] - iw * ih)
    same_class = np.array([d[1] for d in dets], dtype=object)[:, None] == np.array(
        [g[0] for g in gts], dtype=object
    )
    qualifies = same_class & (iw > 0) & (ih > 0) & (iou >= thr)
    matched = np.zeros(len(gts), dtype=bool)
    out = []
    for d, (_, wnid, score, _) in enumerate(dets):
        is_tp = False
        if qualifies[d].any():
            candidate = qualifies[d] & ~matched
            if candidate.any():
                matched[int(np.argmax(np.where(candidate, iou[d], -np.inf)))] = True
                is_tp = True
        out.append((wnid, score, is_tp))
    return out


def imagenet_det_eval(
    detections: Iterable[DETDetection],
    ground_truth: Mapping[ImageId, Sequence[tuple[str, Box]]],
    classes: Sequence[str],
    blacklist: Iterable[tuple[ImageId, str]] = (),
    names: Mapping[str, str] | None = None,
) -> DETResult:
    """Evaluate ``detections`` ``[(image, wnid, confidence, box)]`` against ``ground_truth``
    ``{image: [(wnid, box)]}`` (every evaluated image a key, in the devkit's image-index order).

    ``blacklist`` holds (image, wnid) pairs. Raises :class:`EvaluationInputError` on a detection of an image
    not in ``ground_truth`` or of a class not in ``classes``.
    """
    classes = list(classes)
    known = set(classes)
    image_order = {img: i for i, img in enumerate(ground_truth)}
    black: dict[ImageId, set[str]] = {}
    for img, wnid in blacklist:
        black.setdefault(img, set()).add(wnid)

    per_image: dict[ImageId, list[DETDetection]] = {img: [] for img in ground_truth}
    for det in detections:
        if det[0] not in image_order:
            raise EvaluationInputError(f"detection on image {det[0]!r}, which is not in the ground truth")
        if det[1] not in known:
            raise EvaluationInputError(f"detection of class {det[1]!r}, which is not one of the classes")
        per_image[det[0]].append(det)

    scored: dict[str, list[tuple[float, bool]]] = {c: [] for c in classes}
    for img, dets in per_image.items():
        dets.sort(key=lambda d: -d[2])  # stable: ties keep input order
        for wnid, score, is_tp in _match_image(dets, ground_truth[img], black.get(img, set())):
            scored[wnid].append((score, is_tp))

    npos = {c: 0 for c in classes}
    for img, gts in ground_truth.items():
        for wnid, _ in gts:
            if wnid in npos and wnid not in black.get(img, ()):
                npos[wnid] += 1

    ap, precision, recall = {}, {}, {}
    for c in classes:
        scores = np.array([s for s, _ in scored[c]], dtype=np.float64)
        order = np.argsort(-scores, kind="stable")
        tp = np.cumsum(np.array([t for _, t in scored[c]], dtype=np.float64)[order])
        fp = np.cumsum(1.0 - np.array([t for _, t in scored[c]], dtype=np.float64)[order])
        recall[c] = tp / npos[c] if npos[c] > 0 else np.zeros_like(tp)
        precision[c] = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        ap[c] = voc_ap(recall[c], precision[c], use_07_metric=False) if npos[c] > 0 else 0.0
    return DETResult(classes, ap, precision, recall, npos, dict(names or {}))


# ---------------------------------------------------------------------------------------------- devkit files


def read_det_blacklist(path: Path, wnids: Iterable[str]) -> set[tuple[int, str]]:
    """Blacklist lines ``<image_index> <wnid>`` → {(image_index, wnid)}."""
    known = set(wnids)
    out = set()
    for lineno, fields, line in numbered_lines(path, "blacklist"):
        if len(fields) != 2 or not fields[0].isdigit() or fields[1] not in known:
            raise EvaluationInputError(f"{path}:{lineno}: expected '<image_index> <wnid>': {line!r}")
        out.add((int(fields[0]), fields[1]))
    return out


def load_det_ground_truth(
    ilsvrc_root: Path, images: Mapping[int, str], wnids: Iterable[str], progress: bool = False
) -> dict[int, list[tuple[str, Box]]]:
    """``{image_index: [(wnid, box)]}`` from ``Annotations/DET/val/<image_name>.xml``; an object of a wnid not in
    ``wnids`` is an error."""
    known = set(wnids)
    gt: dict[int, list[tuple[str, Box]]] = {}
    for index, name in tqdm(images.items(), desc="annotations", disable=not progress):
        path = Path(ilsvrc_root) / "Annotations" / "DET" / "val" / f"{name}.xml"
        gt[index] = [(o.name, o.box) for o in read_pascal_xml(path, classes=known).objects]
    return gt


def read_det_results(path: Path, images: Container[int], wnids: Mapping[int, str]) -> list[DETDetection]:
    """Submission lines ``<image_index> <class_index> <confidence> <xmin> <ymin> <xmax> <ymax>``; ``images`` are the
    split's image indices, ``wnids`` maps class index → wnid."""
    out: list[DETDetection] = []
    for lineno, fields, line in numbered_lines(path, "results file"):
        try:
            if len(fields) != 7:
                raise ValueError(f"expected 7 fields, got {len(fields)}")
            image, cls = int(fields[0]), int(fields[1])
            score, *box = (float(v) for v in fields[2:])
            if not all(math.isfinite(v) for v in (score, *box)):
                raise ValueError("non-finite number")
            if image not in images:
                raise ValueError(f"image index {image} is not in the split")
            if cls not in wnids:
                raise ValueError(f"class index {cls} is not in map_det.txt")
        except ValueError as e:
            raise EvaluationInputError(
                f"{path}:{lineno}: expected '<image_index> <class_index> <confidence> <xmin> <ymin> <xmax> "
                f"<ymax>' ({e}): {line!r}"
            ) from None
        out.append((image, wnids[cls], score, (box[0], box[1], box[2], box[3])))
    return out


def write_det_results(path: Path, detections: Iterable[DETDetection], class_index: Mapping[str, int]) -> None:
    """Write submission lines (numbers exact); ``class_index`` maps wnid → index of map_det.txt."""
    lines = [
        " ".join([str(img), str(class_index[wnid]), repr(float(score))] + [repr(float(v)) for v in box])
        for img, wnid, score, box in detections
    ]
    write_text(path, "".join(line + "\n" for line in lines))


def evaluate_det_files(
    ilsvrc_root: Path, split: str, results: Path, blacklist: Path | None = None, progress: bool = False
) -> DETResult:
    """Read the ILSVRC layout under ``ilsvrc_root`` and a submission file, then :func:`imagenet_det_eval`;
    ``blacklist`` defaults to the devkit's (:func:`detection.devkit.find_det_blacklist`), if it has one."""
    root = Path(ilsvrc_root)
    # The devkit iterates images in ascending index order; it decides the order of tied detections.
    split_file = root / "ImageSets" / "DET" / f"{split}.txt"
    images = dict(sorted((index, name) for name, index in read_ilsvrc_split(split_file)))
    synsets = read_class_map(root / "devkit" / "data" / "map_det.txt")
    wnids = [s.wnid for s in synsets]
    gt = load_det_ground_truth(root, images, wnids, progress)
    dets = read_det_results(results, images, {s.index: s.wnid for s in synsets})
    blacklist = blacklist or find_det_blacklist(root)
    black = read_det_blacklist(blacklist, wnids) if blacklist else set()
    return imagenet_det_eval(dets, gt, wnids, black, names={s.wnid: s.name for s in synsets})
