"""labelme annotations, read as they are: ``--dataset labelme --data-root DIR``.

One JSON per image, as labelme saves them (``shapes: [{label, points, shape_type}]``, ``imagePath`` relative to the
JSON's folder, ``imageHeight``, ``imageWidth``). A split is a subfolder of ``DIR`` (``DIR/train``, ``DIR/val``, …;
its JSONs searched recursively); ``.`` is ``DIR`` itself. Default splits: ``train`` for training, ``val`` for testing.
An image without objects needs a JSON with empty ``shapes`` (labelme writes one when you save an image without
drawing).

Boxes: a ``rectangle`` is its two corners (in either order); a ``circle`` (centre, a point on the circle) its
bounding square; every other shape with points (``polygon``, ``linestrip``, ``line``, ``mask``, …) the bounding box
of its points, with one warning per shape type saying how many were converted. ``point`` and ``points`` shapes
are not boxes: dropped with a warning. Coordinates are labelme's: pixels of the image as displayed, (0, 0) its
top-left corner, taken as pixel-edge coordinates.

Classes, in label order: ``DIR/classes.txt`` or else ``DIR/labels.txt`` (one name a line; labelme's
``__ignore__`` and ``_background_`` lines and ``#`` comments are skipped), else the sorted set of every label in
every JSON under ``DIR`` (all splits, so that train and val agree). A label outside a class file is an error
naming the JSON. Scored under the COCO protocol (:class:`detection.data.records.RecordDataset`).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from detection.data.errors import DatasetError
from detection.data.records import ImageRecord, RecordDataset
from detection.data.transforms import DetectionTransform
from detection.files import read_json

logger = logging.getLogger(__name__)

CLASS_FILES = ("classes.txt", "labels.txt")
IGNORED_NAMES = ("__ignore__", "_background_")  # labelme's labels.txt convention
NOT_BOXES = ("point", "points")


def split_folder(root: str | Path, split: str) -> Path:
    """``root/split`` (``.``: ``root``); :class:`DatasetError` naming the folders there when it is missing."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"labelme dataset root {root} is not a folder (one JSON per image, a subfolder per split)")
    folder = root if split in (".", "") else root / split
    if not folder.is_dir():
        present = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise DatasetError(f"labelme split {split!r}: {folder} is not a folder (splits are subfolders of {root}: "
                           f"{', '.join(present) or 'none'}; '.' is {root} itself)")
    return folder


def read_labelme(path: Path) -> dict[str, Any]:
    """A labelme JSON, its required keys checked; errors name the file."""
    data = read_json(path, DatasetError, what="labelme file")  # one line naming it, whatever is wrong
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: not a labelme file (expected an object with shapes, imagePath, imageHeight, "
                           "imageWidth)")
    missing = [k for k in ("shapes", "imagePath", "imageHeight", "imageWidth") if k not in data]
    if missing:
        raise DatasetError(f"{path}: not a labelme file: missing {', '.join(missing)}")
    if not isinstance(data["shapes"], list) or not all(isinstance(s, dict) for s in data["shapes"]):
        raise DatasetError(f"{path}: shapes must be a list of objects")
    for key in ("imageHeight", "imageWidth"):
        if not isinstance(data[key], int) or isinstance(data[key], bool) or data[key] <= 0:
            raise DatasetError(f"{path}: {key} must be a positive integer, got {data[key]!r}")
    if not isinstance(data["imagePath"], str) or not data["imagePath"]:
        raise DatasetError(f"{path}: imagePath must name the image file, got {data['imagePath']!r}")
    for i, shape in enumerate(data["shapes"]):
        if not isinstance(shape.get("label"), str) or not shape["label"]:
            raise DatasetError(f"{path}: shapes[{i}] has no label")
    return data


def read_class_file(path: Path) -> list[str]:
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    names = [n for n in names if n and not n.startswith("#") and n not in IGNORED_NAMES]
    if not names:
        raise DatasetError(f"{path}: no class names")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DatasetError(f"{path}: class names repeated: {', '.join(repeated)}")
    return names


def labelme_classes(root: Path, classes: Sequence[str] | None = None) -> list[str]:
    """The class names in label order (module docstring): ``classes`` when given (e.g. a checkpoint's)."""
    if classes:
        return list(classes)
    for name in CLASS_FILES:
        if (root / name).is_file():
            return read_class_file(root / name)
    labels = {shape["label"] for path in sorted(root.rglob("*.json")) for shape in read_labelme(path)["shapes"]}
    if not labels:
        raise DatasetError(f"no labelled shape in any JSON under {root}: give the class names in "
                           f"{root / CLASS_FILES[0]}")
    return sorted(labels)


def shape_box(shape: dict[str, Any], where: str) -> list[float]:
    """The xyxy box of a labelme shape (module docstring); errors name the file and shape."""
    points = shape.get("points")
    if not isinstance(points, list) or not points or not all(
        isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(v, (int, float)) and math.isfinite(v)
                                                             for v in p) for p in points):
        raise DatasetError(f"{where}: points must be a list of [x, y] numbers, got {points!r:.120}")
    kind = shape.get("shape_type") or "polygon"  # labelme before 3.x wrote no shape_type: polygons
    xs, ys = [float(p[0]) for p in points], [float(p[1]) for p in points]
    if kind == "circle":
        if len(points) != 2:
            raise DatasetError(f"{where}: a circle needs 2 points (centre, a point on the circle), got {len(points)}")
        radius = math.hypot(xs[1] - xs[0], ys[1] - ys[0])
        return [xs[0] - radius, ys[0] - radius, xs[0] + radius, ys[0] + radius]
    if kind == "rectangle" and len(points) != 2:
        raise DatasetError(f"{where}: a rectangle needs 2 points (opposite corners), got {len(points)}")
    return [min(xs), min(ys), max(xs), max(ys)]


def read_labelme_split(root: str | Path, split: str, classes: Sequence[str] | None = None
                       ) -> tuple[list[str], list[ImageRecord]]:
    """``(class names, records)`` of ``split`` (sorted JSON paths), boxes exactly as the shapes give them."""
    root = Path(root)
    folder = split_folder(root, split)
    names = labelme_classes(root, classes)
    label_of = {name: k for k, name in enumerate(names, start=1)}
    converted: Counter[str] = Counter()
    first: dict[str, Path] = {}
    records = []
    for path in sorted(folder.rglob("*.json")):
        data = read_labelme(path)
        image = path.parent / data["imagePath"].replace("\\", "/")  # labelme on Windows writes backslashes
        if not image.is_file():
            raise DatasetError(f"{path}: its image {image} (imagePath {data['imagePath']!r}) does not exist")
        boxes, labels = [], []
        for i, shape in enumerate(data["shapes"]):
            where = f"{path}: shapes[{i}] ({shape['label']})"
            if shape["label"] not in label_of:
                raise DatasetError(f"{where}: label {shape['label']!r} is not a known class ({', '.join(names)})")
            kind = shape.get("shape_type") or "polygon"
            if kind != "rectangle":
                converted[kind] += 1
                first.setdefault(kind, path)
            if kind in NOT_BOXES:
                continue
            boxes.append(shape_box(shape, where))
            labels.append(label_of[shape["label"]])
        records.append(ImageRecord(image.resolve(), data["imageHeight"], data["imageWidth"],
                                   np.array(boxes, np.float64).reshape(-1, 4), np.array(labels, np.int64),
                                   source=str(path)))
    for kind, count in sorted(converted.items()):
        what = "dropped (a point is not a box)" if kind in NOT_BOXES else "taken as their bounding boxes"
        logger.warning("labelme %s: %d %s shape(s) %s (the first in %s)", folder, count, kind, what, first[kind])
    return names, records


class LabelmeDataset(RecordDataset):
    """One split (a subfolder, or ``.``) of a labelme folder; ``classes=`` fixes the label order (a checkpoint's)."""

    def __init__(self, root: str | Path, split: str, transforms: DetectionTransform | None = None, *,
                 classes: Sequence[str] | None = None, **kwargs: Any) -> None:
        self.root, self.split = Path(root), split
        names, records = read_labelme_split(root, split, classes)
        super().__init__(records, names, transforms, **kwargs)

    @property
    def description(self) -> str:
        return f"labelme {split_folder(self.root, self.split)}"
