"""PASCAL VOC detection AP, exactly as py-faster-rcnn's ``voc_eval.py`` (which follows the official devkit).

Conventions (see docs/evaluation.md):

- Boxes here are in the devkit's convention: ``(xmin, ymin, xmax, ymax)``, 1-based, inclusive pixel indices,
  and IoU uses the ``+1`` width/height rule. The toolkit's internal boxes (0-based continuous xyxy) convert
  with :func:`to_devkit_boxes` (``x1 + 1, y1 + 1, x2, y2``).
- ``detections``: ``{class_name: [(image_id, score, box), ...]}``.
- ``ground_truth``: ``{image_id: [(class_name, box, difficult), ...]}``; every evaluated image must be a key,
  images without objects map to an empty list. Objects whose class is not in ``classes`` are ignored.
- A class with no ground truth (``npos == 0``) or no detections has AP 0 (the reference would give NaN for the
  former).

The in-memory :func:`voc_eval` is used by training on any dataset (arbitrary class names); the file functions
(:func:`read_voc_results`, :func:`write_voc_results`, :func:`load_voc_ground_truth`) serve the devkit layout, whose
annotation and split files are read by :mod:`detection.devkit`.
"""

from __future__ import annotations

import io
import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from detection.devkit import VOC_CLASSES, Box, numbered_lines, read_pascal_xml, read_voc_split, to_devkit_boxes
from detection.errors import EvaluationInputError
from detection.files import write_bytes, write_text

__all__ = [
    "VOC_CLASSES",
    "Box",
    "EvaluationInputError",
    "APResult",
    "VOCResult",
    "VOCEvaluator",
    "voc_ap",
    "voc_eval",
    "to_devkit_boxes",
    "detections_from_tensors",
    "ground_truth_from_tensors",
    "load_voc_ground_truth",
    "write_voc_results",
    "read_voc_results",
    "plot_pr_curves",
]

ImageId = Hashable
Detections = dict[str, list[tuple[ImageId, float, Box]]]
GroundTruth = dict[ImageId, list[tuple[str, Box, bool]]]


@dataclass
class APResult:
    """Per-class AP, the mean over ``classes``, the precision/recall curves (in the sorted-detection order) and
    the number of positives; the VOC and ILSVRC DET results share this form."""

    classes: list[str]
    ap: dict[str, float]
    precision: dict[str, np.ndarray]
    recall: dict[str, np.ndarray]
    npos: dict[str, int]
    mAP: float = field(init=False)

    def __post_init__(self) -> None:
        self.mAP = float(np.mean([self.ap[c] for c in self.classes])) if self.classes else 0.0


@dataclass
class VOCResult(APResult):
    """:class:`APResult` plus the AP form used: ``use_07_metric`` (11-point) or the area one."""

    use_07_metric: bool

    @property
    def metric(self) -> str:
        return "07" if self.use_07_metric else "area"

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: ``{"mAP": …, "ap": {class: …}, "metric": "07" | "area"}``."""
        return {"mAP": self.mAP, "ap": {c: self.ap[c] for c in self.classes}, "metric": self.metric}


def voc_ap(rec: np.ndarray, prec: np.ndarray, use_07_metric: bool) -> float:
    """AP from a recall/precision curve: VOC2007 11-point or VOC2010+ area under the monotone envelope.

    The 11 thresholds are ``np.arange(0., 1.1, 0.1)`` as in the reference (so 0.3 is 0.30000000000000004).
    """
    if use_07_metric:
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            above = rec >= t
            ap += (float(np.max(prec[above])) if np.any(above) else 0.0) / 11.0
        return ap
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def _iou_plus_one(box: np.ndarray, gts: np.ndarray) -> np.ndarray:
    """IoU of one devkit box [4] with devkit boxes [G, 4], widths counted as ``x2 - x1 + 1``."""
    iw = np.maximum(np.minimum(gts[:, 2], box[2]) - np.maximum(gts[:, 0], box[0]) + 1.0, 0.0)
    ih = np.maximum(np.minimum(gts[:, 3], box[3]) - np.maximum(gts[:, 1], box[1]) + 1.0, 0.0)
    inters = iw * ih
    union = (
        (box[2] - box[0] + 1.0) * (box[3] - box[1] + 1.0)
        + (gts[:, 2] - gts[:, 0] + 1.0) * (gts[:, 3] - gts[:, 1] + 1.0)
        - inters
    )
    with np.errstate(divide="ignore", invalid="ignore"):  # degenerate boxes give NaN/inf, as in the reference
        return inters / union


def _eval_class(
    dets: Sequence[tuple[ImageId, float, Box]],
    gt_boxes: Mapping[ImageId, np.ndarray],
    gt_difficult: Mapping[ImageId, np.ndarray],
    npos: int,
    iou_threshold: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Recall and precision arrays of one class, detections in stable descending-score order."""
    scores = np.array([d[1] for d in dets], dtype=np.float64)
    order = np.argsort(-scores, kind="stable")
    matched = {img: np.zeros(len(b), dtype=bool) for img, b in gt_boxes.items()}
    tp = np.zeros(len(dets))
    fp = np.zeros(len(dets))
    for rank, d in enumerate(order):
        image_id, _, box = dets[d]
        gts = gt_boxes[image_id]
        if len(gts) == 0:
            fp[rank] = 1.0
            continue
        overlaps = _iou_plus_one(np.asarray(box, dtype=np.float64), gts)
        best = int(np.argmax(overlaps))
        if overlaps[best] > iou_threshold:
            if gt_difficult[image_id][best]:
                continue
            if matched[image_id][best]:
                fp[rank] = 1.0
            else:
                tp[rank] = 1.0
                matched[image_id][best] = True
        else:
            fp[rank] = 1.0
    tp = np.cumsum(tp)
    fp = np.cumsum(fp)
    rec = tp / float(npos) if npos > 0 else np.zeros_like(tp)
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return rec, prec


def voc_eval(
    detections: Mapping[str, Sequence[tuple[ImageId, float, Box]]],
    ground_truth: Mapping[ImageId, Sequence[tuple[str, Box, bool]]],
    classes: Sequence[str],
    use_07_metric: bool,
    iou_threshold: float = 0.5,
) -> VOCResult:
    """Evaluate devkit-convention detections against ground truth for ``classes`` (any names).

    Raises :class:`EvaluationInputError` when a detection names an image missing from ``ground_truth``.
    """
    classes = list(classes)
    index = {c: i for i, c in enumerate(classes)}
    boxes: list[dict[ImageId, list[Box]]] = [{} for _ in classes]
    difficult: list[dict[ImageId, list[bool]]] = [{} for _ in classes]
    for image_id, objects in ground_truth.items():
        for k in range(len(classes)):
            boxes[k][image_id] = []
            difficult[k][image_id] = []
        for name, box, diff in objects:
            if name in index:
                boxes[index[name]][image_id].append(box)
                difficult[index[name]][image_id].append(bool(diff))

    ap: dict[str, float] = {}
    precision: dict[str, np.ndarray] = {}
    recall: dict[str, np.ndarray] = {}
    npos: dict[str, int] = {}
    for k, name in enumerate(classes):
        dets = detections.get(name, [])
        for image_id, _, _ in dets:
            if image_id not in ground_truth:
                raise EvaluationInputError(
                    f"detection of class {name!r} on image {image_id!r}, which is not in the ground truth "
                    "(images without objects must be present with an empty list)"
                )
        gt_boxes = {img: np.asarray(b, dtype=np.float64).reshape(-1, 4) for img, b in boxes[k].items()}
        gt_diff = {img: np.asarray(d, dtype=bool) for img, d in difficult[k].items()}
        npos[name] = int(sum(int((~d).sum()) for d in gt_diff.values()))
        rec, prec = _eval_class(dets, gt_boxes, gt_diff, npos[name], iou_threshold)
        recall[name], precision[name] = rec, prec
        ap[name] = voc_ap(rec, prec, use_07_metric) if npos[name] > 0 else 0.0
    return VOCResult(classes, ap, precision, recall, npos, use_07_metric)


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor; this module does not import torch
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def detections_from_tensors(
    image_id: ImageId, boxes: Any, scores: Any, labels: Any, classes: Sequence[str]
) -> Detections:
    """One image's model output → :data:`Detections`.

    ``boxes`` [N, 4] internal xyxy in the coordinates of the ground truth (the original image),
    ``scores`` [N], ``labels`` [N] in 1..K (``classes[k - 1]`` is label k).
    """
    out: Detections = {}
    for box, score, label in zip(
        to_devkit_boxes(_to_numpy(boxes)), _to_numpy(scores).reshape(-1), _to_numpy(labels).reshape(-1)
    ):
        out.setdefault(classes[int(label) - 1], []).append((image_id, float(score), tuple(box.tolist())))
    return out


def ground_truth_from_tensors(
    boxes: Any, labels: Any, classes: Sequence[str], difficult: Any | None = None
) -> list[tuple[str, Box, bool]]:
    """One image's target (internal xyxy ``boxes`` [N, 4], ``labels`` [N] in 1..K, optional ``difficult`` [N])
    → the ground-truth list of :func:`voc_eval`."""
    labels_np = _to_numpy(labels).reshape(-1)
    diff = np.zeros(len(labels_np), dtype=bool) if difficult is None else _to_numpy(difficult).reshape(-1)
    return [
        (classes[int(label) - 1], tuple(box.tolist()), bool(d))
        for box, label, d in zip(to_devkit_boxes(_to_numpy(boxes)), labels_np, diff)
    ]


class VOCEvaluator:
    """Accumulates model outputs and targets image by image, then runs :func:`voc_eval`.

    Boxes are internal xyxy tensors; detections and ground truth must share coordinates (the original image).
    """

    def __init__(self, classes: Sequence[str]) -> None:
        self.classes = list(classes)
        self.detections: Detections = {c: [] for c in self.classes}
        self.ground_truth: GroundTruth = {}

    def add(
        self, image_id: ImageId, output: Mapping[str, Any], target: Mapping[str, Any], scale: float = 1.0
    ) -> None:
        """Add one image: ``output`` has ``boxes``/``scores``/``labels``, ``target`` has ``boxes``/``labels``
        and optionally ``difficult``; all boxes are divided by ``scale`` first."""
        if hasattr(image_id, "item"):  # a 0-d tensor/array would hash by identity
            image_id = image_id.item()
        gt_boxes = _to_numpy(target["boxes"]) / scale
        self.ground_truth[image_id] = ground_truth_from_tensors(
            gt_boxes, target["labels"], self.classes, target.get("difficult")
        )
        dets = detections_from_tensors(
            image_id, _to_numpy(output["boxes"]) / scale, output["scores"], output["labels"], self.classes
        )
        for name, items in dets.items():
            self.detections[name].extend(items)

    def evaluate(self, use_07_metric: bool = False) -> VOCResult:
        return voc_eval(self.detections, self.ground_truth, self.classes, use_07_metric)


# ---------------------------------------------------------------------------------------------- devkit files


def load_voc_ground_truth(voc_root: Path, split: str, progress: bool = False) -> GroundTruth:
    """``{image_id: [(class, box, difficult)]}`` for each image listed in
    ``<voc_root>/ImageSets/Main/<split>.txt``, boxes as written in the XML (devkit convention)."""
    voc_root = Path(voc_root)
    image_ids = read_voc_split(voc_root / "ImageSets" / "Main" / f"{split}.txt")
    gt: GroundTruth = {}
    for image_id in tqdm(image_ids, desc="annotations", disable=not progress):
        objects = read_pascal_xml(voc_root / "Annotations" / f"{image_id}.xml").objects
        gt[image_id] = [(o.name, o.box, o.difficult) for o in objects]
    return gt


def _result_path(results_dir: Path, split: str, name: str) -> Path:
    return Path(results_dir) / f"comp4_det_{split}_{name}.txt"


def write_voc_results(
    results_dir: Path,
    split: str,
    detections: Mapping[str, Iterable[tuple[ImageId, float, Box]]],
    classes: Sequence[str],
) -> list[Path]:
    """Write ``comp4_det_<split>_<class>.txt`` per class (empty file for a class without detections).

    Lines are ``image_id score xmin ymin xmax ymax`` in devkit coordinates, numbers written exactly (shortest
    round-trip repr) so reading them back gives the same AP.
    """
    Path(results_dir).mkdir(parents=True, exist_ok=True)
    paths = []
    for name in classes:
        path = _result_path(results_dir, split, name)
        lines = [
            " ".join([str(image_id), repr(float(score))] + [repr(float(v)) for v in box])
            for image_id, score, box in detections.get(name, [])
        ]
        write_text(path, "".join(line + "\n" for line in lines))
        paths.append(path)
    return paths


def read_voc_results(
    results_dir: Path, split: str, classes: Sequence[str], allow_missing: bool = False
) -> Detections:
    """Read the per-class result files; image ids are strings. A missing file is an error unless
    ``allow_missing`` (then the class has no detections). Malformed lines raise naming file and line."""
    detections: Detections = {}
    for name in classes:
        path = _result_path(results_dir, split, name)
        if not path.is_file():
            if allow_missing:
                detections[name] = []
                continue
            raise EvaluationInputError(f"{path}: result file for class {name!r} not found")
        dets = []
        for lineno, fields, line in numbered_lines(path, "result file"):
            try:
                if len(fields) != 6:
                    raise ValueError(f"expected 6 fields, got {len(fields)}")
                score, *box = (float(v) for v in fields[1:])
                if not all(math.isfinite(v) for v in (score, *box)):
                    raise ValueError("non-finite number")
            except ValueError as e:
                raise EvaluationInputError(
                    f"{path}:{lineno}: expected 'image_id score xmin ymin xmax ymax' ({e}): {line!r}"
                ) from None
            dets.append((fields[0], score, (box[0], box[1], box[2], box[3])))
        detections[name] = dets
    return detections


def count_inverted_detections(detections: Detections) -> tuple[int, int]:
    """``(inverted, total)``: detections whose ``xmax < xmin`` or ``ymax < ymin`` (they can match nothing)."""
    boxes = [box for dets in detections.values() for _, _, box in dets]
    return sum(1 for b in boxes if b[2] < b[0] or b[3] < b[1]), len(boxes)


def plot_pr_curves(result: VOCResult, path: Path) -> None:
    """Draw every class's precision–recall curve into one PNG (Agg canvas; no global backend change)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(result.classes)
    cols = min(5, max(n, 1))
    rows = max(1, math.ceil(n / cols))
    fig = Figure(figsize=(3 * cols, 2.6 * rows))
    FigureCanvasAgg(fig)
    for i, name in enumerate(result.classes):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.plot(result.recall[name], result.precision[name], lw=1)
        ax.set_title(f"{name} AP={100 * result.ap[name]:.1f}", fontsize=8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.tick_params(labelsize=6)
    fig.suptitle(f"mAP = {100 * result.mAP:.1f} ({result.metric} metric)")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    write_bytes(path, buffer.getvalue())
