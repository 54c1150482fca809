"""ImageNet (ILSVRC) classification + localisation error, as the devkit's ``evaluation/eval_clsloc.m``.

Each image gets up to five guesses ``(wnid, box)`` (more are dropped); boxes are devkit boxes, 1-based
inclusive, IoU with the ``+1`` rule. A guess is correct when its wnid is a ground-truth class of the image and
its box has IoU ≥ 0.5 with at least one GT box of that class. Top-k LOC error = fraction of images with no
correct guess among the first k; top-k classification error ignores the boxes. Blacklisted images are left out
of the numerator and the denominator; an image without predictions counts as wrong for every metric.

"LOC error on GT class" (the paper's Table 13, ``gt_class=True``): the class is given, so only the first guess
for a ground-truth class is judged, by its box.

Files: ground truth ``Annotations/CLS-LOC/val/*.xml`` (PASCAL-style); predictions the common CSV
``ImageId,PredictionString`` with ``wnid xmin ymin xmax ymax`` groups separated by spaces.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from detection.devkit import Box, numbered_lines, read_pascal_xml
from detection.errors import EvaluationInputError
from detection.files import atomic_open, read_text_file

__all__ = [
    "MAX_GUESSES",
    "LOCResult",
    "Guess",
    "imagenet_loc_eval",
    "load_loc_ground_truth",
    "read_loc_predictions",
    "write_loc_predictions",
    "read_loc_blacklist",
    "evaluate_loc_files",
]

MAX_GUESSES = 5
IOU_THRESHOLD = 0.5

Guess = tuple[str, Box]  # (wnid, box)


@dataclass
class LOCResult:
    """Errors as fractions of the evaluated images; ``top_k`` is the k of the "top-k" numbers."""

    top_k: int
    top1_loc_error: float
    topk_loc_error: float
    top1_cls_error: float
    topk_cls_error: float
    gt_class_loc_error: float | None
    num_images: int
    num_blacklisted: int
    num_missing: int

    def to_dict(self) -> dict[str, Any]:
        """``{"top1_loc_error", "top5_loc_error", "top1_cls_error", "top5_cls_error"}`` (k = ``top_k``), plus
        ``gt_class_loc_error`` when computed."""
        out: dict[str, Any] = {
            "top1_loc_error": self.top1_loc_error,
            f"top{self.top_k}_loc_error": self.topk_loc_error,
            "top1_cls_error": self.top1_cls_error,
            f"top{self.top_k}_cls_error": self.topk_cls_error,
        }
        if self.gt_class_loc_error is not None:
            out["gt_class_loc_error"] = self.gt_class_loc_error
        return out


def _iou_ok(box: Box, gts: Sequence[Box]) -> bool:
    """Whether ``box`` has IoU ≥ 0.5 (``+1`` rule) with any of ``gts``."""
    for g in gts:
        iw = min(box[2], g[2]) - max(box[0], g[0]) + 1.0
        ih = min(box[3], g[3]) - max(box[1], g[1]) + 1.0
        if iw > 0 and ih > 0:
            union = (box[2] - box[0] + 1.0) * (box[3] - box[1] + 1.0) + (g[2] - g[0] + 1.0) * (
                g[3] - g[1] + 1.0
            )
            if iw * ih / (union - iw * ih) >= IOU_THRESHOLD:
                return True
    return False


def imagenet_loc_eval(
    predictions: Mapping[str, Sequence[Guess]],
    ground_truth: Mapping[str, Sequence[Guess]],
    top_k: int = MAX_GUESSES,
    blacklist: Iterable[str] = (),
    gt_class: bool = False,
) -> LOCResult:
    """Evaluate ``predictions`` ``{image: [(wnid, box), …]}`` (ranked) against ``ground_truth``
    ``{image: [(wnid, box), …]}``.

    Raises :class:`EvaluationInputError` for a prediction of an image not in ``ground_truth``.
    """
    if not 1 <= top_k <= MAX_GUESSES:
        raise ValueError(f"top_k must be in 1..{MAX_GUESSES}, got {top_k}")
    unknown = [img for img in predictions if img not in ground_truth]
    if unknown:
        raise EvaluationInputError(
            f"predictions for {len(unknown)} image(s) not in the ground truth: {unknown[:3]}"
        )
    black = set(blacklist)
    images = [img for img in ground_truth if img not in black]
    loc = np.ones((len(images), MAX_GUESSES), dtype=bool)  # loc[i, j]: guess j of image i is wrong
    cls = np.ones((len(images), MAX_GUESSES), dtype=bool)
    gt_cls_err = np.ones(len(images), dtype=bool)
    for i, img in enumerate(images):
        boxes_of: dict[str, list[Box]] = {}
        for wnid, box in ground_truth[img]:
            boxes_of.setdefault(wnid, []).append(box)
        guesses = list(predictions.get(img, ()))[:MAX_GUESSES]
        for j, (wnid, box) in enumerate(guesses):
            cls[i, j] = wnid not in boxes_of
            loc[i, j] = cls[i, j] or not _iou_ok(box, boxes_of[wnid])
        if gt_class:
            first = next((j for j, (wnid, _) in enumerate(guesses) if wnid in boxes_of), None)
            gt_cls_err[i] = first is None or bool(loc[i, first])

    def error(wrong: np.ndarray) -> float:
        return float(wrong.mean()) if len(images) else 0.0

    return LOCResult(
        top_k=top_k,
        top1_loc_error=error(loc[:, 0]),
        topk_loc_error=error(loc[:, :top_k].all(axis=1)),
        top1_cls_error=error(cls[:, 0]),
        topk_cls_error=error(cls[:, :top_k].all(axis=1)),
        gt_class_loc_error=error(gt_cls_err) if gt_class else None,
        num_images=len(images),
        num_blacklisted=len(ground_truth) - len(images),
        num_missing=sum(1 for img in images if img not in predictions),
    )


# ---------------------------------------------------------------------------------------------- files


def load_loc_ground_truth(ilsvrc_root: Path, progress: bool = False) -> dict[str, list[Guess]]:
    """``{image_name: [(wnid, box)]}`` from every ``Annotations/CLS-LOC/val/*.xml``, sorted by name."""
    folder = Path(ilsvrc_root) / "Annotations" / "CLS-LOC" / "val"
    paths = sorted(folder.glob("*.xml"))
    if not paths:
        raise EvaluationInputError(f"{folder}: no annotation files found")
    gt = {}
    for path in tqdm(paths, desc="annotations", disable=not progress):
        gt[path.stem] = [(o.name, o.box) for o in read_pascal_xml(path).objects]
    return gt


def read_loc_predictions(path: Path, images: Container[str] | None = None) -> dict[str, list[Guess]]:
    """Read ``ImageId,PredictionString`` CSV; errors name the file and line (also for an image id that is not
    in ``images``, when given)."""
    path = Path(path)
    if not path.is_file():
        raise EvaluationInputError(f"{path}: predictions file not found")
    out: dict[str, list[Guess]] = {}
    text = read_text_file(path, EvaluationInputError, what="predictions file")
    for lineno, row in enumerate(csv.reader(io.StringIO(text, newline="")), start=1):
        if lineno == 1:
            if [c.strip() for c in row] != ["ImageId", "PredictionString"]:
                raise EvaluationInputError(f"{path}:1: expected the header 'ImageId,PredictionString'")
            continue
        if not row:
            continue
        try:
            if len(row) != 2:
                raise ValueError(f"expected 2 columns, got {len(row)}")
            image, tokens = row[0].strip(), row[1].split()
            if image in out:
                raise ValueError(f"image {image!r} appears twice")
            if images is not None and image not in images:
                raise ValueError(f"image {image!r} is not in the ground truth")
            if len(tokens) % 5:
                raise ValueError(f"{len(tokens)} tokens is not a multiple of 5")
            guesses = []
            for g in range(0, len(tokens), 5):
                box = tuple(float(v) for v in tokens[g + 1 : g + 5])
                if not all(math.isfinite(v) for v in box):
                    raise ValueError("non-finite number")
                guesses.append((tokens[g], (box[0], box[1], box[2], box[3])))
        except ValueError as e:
            raise EvaluationInputError(
                f"{path}:{lineno}: expected 'ImageId,wnid xmin ymin xmax ymax …' ({e})"
            ) from None
        out[image] = guesses
    return out


def write_loc_predictions(path: Path, predictions: Mapping[str, Sequence[Guess]]) -> None:
    """Write the ``ImageId,PredictionString`` CSV (numbers exact)."""
    with atomic_open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["ImageId", "PredictionString"])
        for image, guesses in predictions.items():
            writer.writerow(
                [image, " ".join(f"{w} " + " ".join(repr(float(v)) for v in b) for w, b in guesses)]
            )


def read_loc_blacklist(path: Path) -> set[str]:
    """Blacklisted images, one per line: an image name or the devkit's 1-based index
    (``ILSVRC2012_val_%08d``)."""
    names = set()
    for _, _, line in numbered_lines(path, "blacklist"):
        token = line.strip()
        names.add(f"ILSVRC2012_val_{int(token):08d}" if token.isdigit() else token)
    return names


def evaluate_loc_files(
    ilsvrc_root: Path,
    results: Path,
    top_k: int = MAX_GUESSES,
    blacklist: Path | None = None,
    gt_class: bool = False,
    progress: bool = False,
) -> LOCResult:
    """Read the CLS-LOC ground truth under ``ilsvrc_root`` and a CSV, then :func:`imagenet_loc_eval`."""
    gt = load_loc_ground_truth(ilsvrc_root, progress)
    predictions = read_loc_predictions(results, gt)
    black = read_loc_blacklist(blacklist) if blacklist else set()
    return imagenet_loc_eval(predictions, gt, top_k, black, gt_class)
