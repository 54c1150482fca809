"""What every dataset does with the files it reads (detection/data/base.py): EXIF-rotated photos keep their boxes
on the objects, oversized and unreadable images are skipped with one warning per file (or raise under strict)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from detection.data import CocoDetection
from detection.data.errors import UnreadableImageError


def rotated_photo(path: Path) -> tuple[int, int, list[float]]:
    """A JPEG stored 40 × 60 (HxW) with EXIF orientation 6 (shown rotated 90° clockwise, 60 × 40) and a white
    square at display pixels x 5..15, y 30..50. Returns the display (height, width) and that box, xywh."""
    display = np.zeros((60, 40, 3), np.uint8)
    display[30:50, 5:15] = 255
    stored = np.rot90(display, k=1)  # orientation 6 means: rotate the stored pixels 90° clockwise to display
    image = Image.fromarray(np.ascontiguousarray(stored))
    exif = image.getexif()
    exif[0x0112] = 6
    image.save(path, exif=exif, quality=100)
    return 60, 40, [5.0, 30.0, 10.0, 20.0]


def test_exif_rotated_photo_annotated_as_displayed_keeps_its_boxes(coco_root, caplog) -> None:
    """It used to be decoded as stored and its boxes "rescaled" (stretched) from 60 × 40 to 40 × 60."""
    def mutate(data: dict[str, Any]) -> None:
        data["images"][0].update(file_name="rotated.jpg", height=60, width=40)
        data["annotations"] = [{"id": 1, "image_id": 10, "category_id": 3, "bbox": [5, 30, 10, 20], "iscrowd": 0}]

    root = coco_root(mutate)
    height, width, box = rotated_photo(root / "train" / "rotated.jpg")
    dataset = CocoDetection(root, "train")
    with caplog.at_level(logging.INFO):
        image, target = dataset[dataset.image_ids.index(10)]
    assert tuple(image.shape[1:]) == (height, width) and target["orig_size"] == (height, width)
    assert target["boxes"].tolist() == [[5.0, 30.0, 15.0, 50.0]]  # unchanged, no stretching
    x1, y1, x2, y2 = (int(v) for v in target["boxes"][0])
    assert image[:, y1 + 2 : y2 - 2, x1 + 2 : x2 - 2].min() > 0.8  # and it still covers the white square
    assert not any("rescaled" in r.getMessage() for r in caplog.records)
    assert any("EXIF orientation 6 applied" in r.getMessage() for r in caplog.records)


def test_oversized_image_is_skipped_once_per_file_or_raises_when_strict(coco_root, caplog) -> None:
    root = coco_root()
    dataset = CocoDetection(root, "train")
    dataset.max_pixels = 1000  # a.jpg is 80 × 60 = 4800 pixels
    index = dataset.image_ids.index(10)
    with caplog.at_level(logging.WARNING):
        assert dataset[index] is None
        assert dataset[index] is None  # an epoch later: skipped again, not warned again
    warnings = [r.getMessage() for r in caplog.records if "over the limit of 1000" in r.getMessage()]
    assert len(warnings) == 1 and str(root / "train" / "a.jpg") in warnings[0]
    assert dataset.skipped == [str(root / "train" / "a.jpg")]
    strict = CocoDetection(root, "train", strict=True)
    strict.max_pixels = 1000
    with pytest.raises(UnreadableImageError, match="over the limit of 1000"):
        strict[index]


def test_images_dropped_for_lack_of_boxes_are_counted(coco_root) -> None:
    """Training mode drops image 30 (no annotations): counted, for the trainer's no-usable-data message."""
    root = coco_root()
    assert CocoDetection(root, "train", train=True).num_without_boxes == 1
    assert CocoDetection(root, "train").num_without_boxes == 0
