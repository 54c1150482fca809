"""Drawing detections (tools/demo.py) and ground-truth boxes (tools/browse_dataset.py) on images."""

from __future__ import annotations

import colorsys

import cv2
import numpy as np
from torch import Tensor


def class_colour(label: int) -> tuple[int, int, int]:
    """A stable, well-separated RGB colour per class label (golden-ratio hues)."""
    r, g, b = colorsys.hsv_to_rgb((label * 0.618033988749895) % 1.0, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_detections(
    image: np.ndarray, boxes: Tensor, scores: Tensor, labels: Tensor, class_names: list[str], score_thresh: float
) -> np.ndarray:
    """Return a copy of the RGB ``uint8 [H, W, 3]`` image with each detection scoring ≥ ``score_thresh`` drawn as a
    box (xyxy, image pixels) and a ``name score`` caption. Labels are 1..K (``class_names[k - 1]``)."""
    out = np.ascontiguousarray(image.copy())
    thickness = max(1, round(max(out.shape[:2]) / 400))
    font_scale = max(0.35, max(out.shape[:2]) / 1200)
    order = scores.argsort()  # draw the most confident last, on top
    for i in order.tolist():
        score = float(scores[i])
        if score < score_thresh:
            continue
        label = int(labels[i])
        x1, y1, x2, y2 = (int(round(v)) for v in boxes[i].tolist())
        colour = class_colour(label)
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, thickness)
        name = class_names[label - 1] if 0 < label <= len(class_names) else str(label)
        caption = f"{name} {score:.2f}"
        (tw, th), base = cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
        ty = max(y1, th + base)
        cv2.rectangle(out, (x1, ty - th - base), (x1 + tw, ty), colour, -1)
        cv2.putText(out, caption, (x1, ty - base), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0), 1, cv2.LINE_AA)
    return out


def draw_ground_truth(
    image: np.ndarray, boxes: Tensor, labels: Tensor, class_names: list[str], ignored: Tensor | None = None
) -> np.ndarray:
    """A copy of the RGB ``uint8 [H, W, 3]`` image with each ground-truth box (xyxy, image pixels) and its class
    name drawn; ``ignored`` (bool ``[N]``: crowd or difficult objects) are drawn thin, captioned ``name*``."""
    out = np.ascontiguousarray(image.copy())
    thickness = max(1, round(max(out.shape[:2]) / 400))
    font_scale = max(0.35, max(out.shape[:2]) / 1200)
    for i, (box, label) in enumerate(zip(boxes.tolist(), labels.tolist())):
        weak = ignored is not None and bool(ignored[i])
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        colour = class_colour(int(label))
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, 1 if weak else thickness)
        name = class_names[label - 1] if 0 < label <= len(class_names) else str(label)
        caption = name + ("*" if weak else "")
        (tw, th), base = cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
        ty = max(y1, th + base)
        cv2.rectangle(out, (x1, ty - th - base), (x1 + tw, ty), colour, -1)
        cv2.putText(out, caption, (x1, ty - base), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0), 1, cv2.LINE_AA)
    return out
