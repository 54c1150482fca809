"""The worst images (most objects missed plus detections wrong, at the confusion matrix's thresholds), drawn:
ground truth on the left, the detections scoring ≥ the threshold on the right.

The drawing functions are handed in (:class:`Drawer`: ``detection.deploy.visualize`` has them), since evaluation
does not import the deployment package (docs/DESIGN.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from detection.evaluation.analysis.confusion import ConfusionResult
from detection.evaluation.analysis.data import AnalysisData


class Drawer(Protocol):
    """What ``detection.deploy.visualize`` provides (boxes xyxy in image pixels, labels 1..K)."""

    def draw_ground_truth(self, image: np.ndarray, boxes: Any, labels: Any, class_names: list[str],
                          ignored: Any = None) -> np.ndarray: ...

    def draw_detections(self, image: np.ndarray, boxes: Any, scores: Any, labels: Any, class_names: list[str],
                        score_thresh: float) -> np.ndarray: ...


@dataclass
class GalleryImage:
    image_id: int
    missed: int
    false_pos: int
    png: bytes | None  # None: the image file could not be read
    path: Path | None


def worst_images(confusion: ConfusionResult, count: int) -> list[int]:
    """Indices of the ``count`` images with the most missed objects plus wrong detections (ties: file order)."""
    errors = confusion.missed + confusion.false_pos
    order = np.argsort(-errors, kind="stable")
    return [int(i) for i in order[:count] if errors[i] > 0]


def _xyxy(boxes: np.ndarray, scale: float) -> np.ndarray:
    out = boxes.copy()
    out[:, 2:] += out[:, :2]
    return out * scale


def draw_image(data: AnalysisData, index: int, image: np.ndarray, drawer: Drawer, score_thresh: float,
               max_side: int = 480) -> np.ndarray:
    """The RGB ``image`` resized to ``max_side`` with its objects (left) and confident detections (right)."""
    scale = min(1.0, max_side / max(image.shape[:2]))
    if scale < 1.0:
        image = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)),
                           interpolation=cv2.INTER_AREA)
    gts = np.flatnonzero(data.gt_image == index)
    dets = np.flatnonzero(data.det_image == index)
    left = drawer.draw_ground_truth(image, _xyxy(data.gt_box[gts], scale), data.gt_class[gts] + 1,
                                    data.class_names, data.gt_crowd[gts])
    right = drawer.draw_detections(image, _xyxy(data.det_box[dets], scale), data.det_score[dets],
                                   data.det_class[dets] + 1, data.class_names, score_thresh)
    gap = np.full((image.shape[0], 8, 3), 255, np.uint8)
    return np.concatenate([left, gap, right], axis=1)


def gallery(data: AnalysisData, confusion: ConfusionResult, image_paths: Mapping[int, Path], drawer: Drawer,
            count: int = 8) -> list[GalleryImage]:
    """The :func:`worst_images`, drawn (``png`` is ``None`` where the file is missing or unreadable)."""
    out = []
    for index in worst_images(confusion, count):
        image_id = int(data.image_ids[index])
        path = image_paths.get(image_id)
        bgr = cv2.imread(str(path)) if path is not None else None
        png = None
        if bgr is not None:
            drawn = draw_image(data, index, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), drawer, confusion.score_thresh)
            ok, encoded = cv2.imencode(".png", cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
            png = encoded.tobytes() if ok else None
        out.append(GalleryImage(image_id, int(confusion.missed[index]), int(confusion.false_pos[index]), png, path))
    return out
