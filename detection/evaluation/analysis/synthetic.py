"""Generated COCO ground truth and detections with every kind of TIDE error, for the tests, the docs' example
and the benchmark.

Each object may get a good detection, a duplicate of it, a badly placed one (``loc``), one of the wrong class
(``cls``), one both misplaced and mislabelled (``both``), or none (``miss``); each image adds detections on the
background (``bkg``) and crowd regions get detections inside them. Scores are uniform (distinct almost surely).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _jitter(rng: np.random.Generator, box: np.ndarray, amount: float) -> list[float]:
    x, y, w, h = box
    dx, dy = rng.uniform(-amount, amount, 2) * (w, h)
    sw, sh = np.exp(rng.uniform(-amount, amount, 2))
    return [float(x + dx), float(y + dy), float(w * sw), float(h * sh)]


def noisy_detections(instances: dict[str, Any], *, dets_per_image: int = 20, seed: int = 0,
                     found: float = 0.7) -> list[dict[str, Any]]:
    """COCO results for ``instances`` (a COCO instances dict) as a flawed detector might give: each object found
    with probability ``found``, plus duplicates, loc / cls / both errors and background up to ``dets_per_image``."""
    rng = np.random.default_rng(seed)
    cat_ids = sorted(c["id"] for c in instances["categories"])
    by_image: dict[int, list[dict[str, Any]]] = {im["id"]: [] for im in instances["images"]}
    for ann in instances.get("annotations", []):
        by_image[ann["image_id"]].append(ann)
    results = []
    for image in instances["images"]:
        width, height = image.get("width", 320), image.get("height", 320)
        dets: list[tuple[int, list[float]]] = []
        for ann in by_image[image["id"]]:
            box, cat = np.array(ann["bbox"], dtype=np.float64), ann["category_id"]
            others = [c for c in cat_ids if c != cat] or [cat]
            other = int(others[rng.integers(len(others))])
            if ann.get("iscrowd"):
                dets.append((cat, _jitter(rng, box * [1, 1, 0.5, 0.5] + [box[2] / 4, box[3] / 4, 0, 0], 0.1)))
                continue
            kind = rng.random(5)
            if kind[0] < found:
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
            w, h = rng.uniform(0.05, 0.3) * width, rng.uniform(0.05, 0.3) * height
            dets.append((int(cat_ids[rng.integers(len(cat_ids))]),
                         [float(rng.uniform(0, width - w)), float(rng.uniform(0, height - h)), float(w), float(h)]))
        for cat, box in dets[:dets_per_image]:
            results.append({"image_id": image["id"], "category_id": cat, "bbox": box, "score": float(rng.random())})
    return results


def synthetic_coco(
    num_images: int = 50, num_classes: int = 5, dets_per_image: int = 20, *, size: int = 320, seed: int = 0,
    crowd_fraction: float = 0.05,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``(instances dict, results list)``: 1–8 objects per ``size``² image (a few of them crowd regions),
    rectangles with their polygon in ``segmentation``, and :func:`noisy_detections` of them. Category ids are
    ``1..num_classes``, named ``class1`` …, in two supercategories."""
    rng = np.random.default_rng(seed)
    images, anns = [], []
    for image_id in range(1, num_images + 1):
        images.append({"id": image_id, "file_name": f"{image_id:06d}.png", "width": size, "height": size})
        for _ in range(int(rng.integers(1, 9))):
            w, h = rng.uniform(size * 0.08, size * 0.5, 2)
            x, y = rng.uniform(0, size - w), rng.uniform(0, size - h)
            cat, crowd = int(rng.integers(1, num_classes + 1)), int(rng.random() < crowd_fraction)
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat, "iscrowd": crowd,
                         "bbox": [float(x), float(y), float(w), float(h)], "area": float(w * h),
                         "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]})
    categories = [{"id": c, "name": f"class{c}", "supercategory": "odd" if c % 2 else "even"}
                  for c in range(1, num_classes + 1)]
    instances = {"images": images, "annotations": anns, "categories": categories}
    return instances, noisy_detections(instances, dets_per_image=dets_per_image, seed=seed + 1)
