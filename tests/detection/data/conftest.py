"""Tiny on-disk datasets in the real layouts, written with OpenCV and json."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest


def write_image(path: Path, height: int, width: int, *, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, size=(height, width, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), pixels)
    return path


@pytest.fixture(name="write_image")
def write_image_fixture() -> Callable[..., Path]:
    """``write_image(path, height, width, seed=0)``: a random-noise image in the format the suffix names."""
    return write_image


@pytest.fixture
def coco_root(tmp_path: Path) -> Callable[..., Path]:
    """Factory: a COCO root with split ``train``: category ids {1, 3, 90}, a crowd object, an empty image.

    Images: id 10 (60x80) with a cat-3 box, a crowd cat-1 box and a cat-90 box; id 20 (80x40, portrait) with a
    cat-1 box; id 30 (50x50) without annotations. ``mutate(data)`` may edit the JSON before it is written.
    """

    def make(mutate: Callable[[dict[str, Any]], None] | None = None, split: str = "train") -> Path:
        root = tmp_path / "coco"
        images = [
            {"id": 10, "file_name": "a.jpg", "height": 60, "width": 80},
            {"id": 20, "file_name": "b.png", "height": 80, "width": 40},
            {"id": 30, "file_name": "c.jpg", "height": 50, "width": 50},
        ]
        annotations = [
            {"id": 1, "image_id": 10, "category_id": 3, "bbox": [10, 20, 30, 15], "iscrowd": 0, "area": 450},
            {"id": 2, "image_id": 10, "category_id": 1, "bbox": [0, 0, 40, 40], "iscrowd": 1, "area": 1600},
            {"id": 3, "image_id": 10, "category_id": 90, "bbox": [70, 50, 20, 20], "iscrowd": 0, "area": 400},
            {"id": 4, "image_id": 20, "category_id": 1, "bbox": [5, 5, 10, 30], "iscrowd": 0, "area": 300},
        ]
        categories = [{"id": 90, "name": "toothbrush"}, {"id": 1, "name": "person"}, {"id": 3, "name": "car"}]
        data = {"images": images, "annotations": annotations, "categories": categories}
        if mutate is not None:
            mutate(data)
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
        for image in images:
            if "/" not in image["file_name"]:
                write_image(root / split / image["file_name"], image["height"], image["width"], seed=image["id"])
        return root

    return make
