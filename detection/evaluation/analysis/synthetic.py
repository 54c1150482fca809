"""Generated COCO ground truth and detections with every kind of TIDE error, for the tests and the benchmark.

Each object may get a good detection, a duplicate of it, a badly placed one (``loc``), one of the wrong class
(``cls``), one both misplaced and mislabelled (``both``), or none (``miss``); each image adds detections on empty
background (``bkg``) and detections inside its crowd regions. Scores are uniform and distinct.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _jitter(rng: np.random.Generator, box: np.ndarray, amount: float) -> list[float]:
    x, y, w, h = box
    dx, dy = rng.uniform(-amount, amount, 2) * (w, h)
    sw, sh = np.exp(rng.uniform(-amount, amount, 2))
    return [float(x + dx), float(y + dy), float(w * sw), float(h * sh)]


def synthetic_coco(
    num_images: int = 50, num_classes: int = 5, dets_per_image: int = 20, *, size: int = 320, seed: int = 0,
    crowd_fraction: float = 0.05,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``(instances dict, results list)``: 1–8 objects per image (a few of them crowd regions), rectangles with
    their polygon in ``segmentation``; up to ``dets_per_image`` detections per image. Category ids are
    ``1..num_classes``, named ``class1`` …"""
    rng = np.random.default_rng(seed)
    images, anns, results = [], [], []
    for image_id in range(1, num_images + 1):
        images.append({"id": image_id, "file_name": f"{image_id:06d}.png", "width": size, "height": size})
        dets: list[tuple[int, list[float]]] = []
        for _ in range(int(rng.integers(1, 9))):
            w, h = rng.uniform(size * 0.08, size * 0.5, 2)
            x, y = rng.uniform(0, size - w), rng.uniform(0, size - h)
            cat = int(rng.integers(1, num_classes + 1))
            box = np.array([x, y, w, h])
            crowd = int(rng.random() < crowd_fraction)
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat, "iscrowd": crowd,
                         "bbox": [float(v) for v in box], "area": float(w * h),
                         "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]})
            other = int((cat + rng.integers(1, num_classes) - 1) % num_classes + 1) if num_classes > 1 else cat
            if crowd:
                dets += [(cat, _jitter(rng, box * [1, 1, 0.5, 0.5] + [w / 4, h / 4, 0, 0], 0.1))]
                continue
            kind = rng.random(6)
            if kind[0] < 0.7:
                dets.append((cat, _jitter(rng, box, 0.05)))
            if kind[1] < 0.2:
                dets.append((cat, _jitter(rng, box, 0.08)))  # a duplicate
            if kind[2] < 0.3:
                dets.append((cat, _jitter(rng, box, 0.45)))  # loc
            if kind[3] < 0.2:
                dets.append((other, _jitter(rng, box, 0.05)))  # cls
            if kind[4] < 0.2:
                dets.append((other, _jitter(rng, box, 0.45)))  # both
        while len(dets) < dets_per_image:  # background, anywhere
            w, h = rng.uniform(size * 0.05, size * 0.3, 2)
            dets.append((int(rng.integers(1, num_classes + 1)),
                         [float(rng.uniform(0, size - w)), float(rng.uniform(0, size - h)), float(w), float(h)]))
        for cat, box in dets[:dets_per_image]:
            results.append({"image_id": image_id, "category_id": cat, "bbox": box, "score": float(rng.random())})
    categories = [{"id": c, "name": f"class{c}", "supercategory": "odd" if c % 2 else "even"}
                  for c in range(1, num_classes + 1)]
    return {"images": images, "annotations": anns, "categories": categories}, results
