"""Ultralytics YOLO datasets, read as they are: ``--dataset yolo --data-root data.yaml`` (or a folder holding
``data.yaml``).

``data.yaml``::

    path: .                 # the dataset root; relative paths are relative to this file's folder (default: it)
    train: images/train     # an image folder (searched recursively), a .txt list of image paths, or a list of those
    val: images/val
    test: images/test       # optional; the default test split when present, else val
    names: [cat, dog]       # or {0: cat, 1: dog}; label k + 1 is class k of the file (nc, if given, must agree)

Each image ``.../images/.../x.jpg`` has its labels in ``.../labels/.../x.txt`` (the last ``images`` folder of the
path replaced by ``labels``; an image path without one: the ``.txt`` beside it), one object a line:
``class cx cy w h`` with the box centre and size normalised by the image's width and height. An empty or missing
label file is an image without objects. A list file's lines are image paths: absolute, ``./``-prefixed (relative to
the list file's folder, as ultralytics reads them) or relative to ``path``. Unlike ultralytics, a relative
``path`` is taken from the YAML file's folder, not from a global datasets folder.

Bad labels are a :class:`DatasetError` naming the file and line: not 5 fields, a class that is not an integer in
``[0, len(names))``, a coordinate that is not a finite number in [0, 1] (up to :data:`TOLERANCE`). Image sizes come
from the file headers (EXIF-rotated, as ultralytics normalises them). Scored under the COCO protocol
(:class:`detection.data.records.RecordDataset`).
"""

from __future__ import annotations

import math
import os
import stat
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from detection.data.errors import DatasetError
from detection.data.records import ImageRecord, RecordDataset
from detection.data.transforms import DetectionTransform
from detection.files import read_yaml

IMAGE_SUFFIXES = frozenset({".bmp", ".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp"})
SPLITS = ("train", "val", "test")
# Normalised coordinates may stray this far outside [0, 1] (rounding in other tools' exports).
TOLERANCE = 0.01
_ROTATED = (5, 6, 7, 8)  # EXIF orientations that swap width and height


def find_data_yaml(root: str | Path) -> Path:
    """``root`` itself (a YAML file) or ``root/data.yaml``; :class:`DatasetError` saying what was expected."""
    root = Path(root)
    path = root / "data.yaml" if root.is_dir() else root
    if not path.is_file():
        raise DatasetError(f"YOLO dataset {root}: expected a data.yaml file (ultralytics layout: path, train, val, "
                           "names), or a folder holding one")
    return path


def read_data_yaml(path: Path) -> dict[str, Any]:
    """The parsed ``data.yaml`` with ``path`` resolved (absolute) and ``names`` as a list; errors name the file."""
    data = read_yaml(path, DatasetError, what="YOLO data file")  # one line naming it; alias bombs refused
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a mapping with path, train, val and names")
    names = data.get("names")
    if isinstance(names, dict):
        if sorted(names) != list(range(len(names))):
            raise DatasetError(f"{path}: names must map the class indices 0..{len(names) - 1}, got keys "
                               f"{sorted(names, key=str)}")
        names = [names[i] for i in range(len(names))]
    if not isinstance(names, list) or not names or not all(isinstance(n, (str, int)) for n in names):
        raise DatasetError(f"{path}: names must be a non-empty list of class names or a mapping index → name")
    names = [str(n) for n in names]
    if len(set(names)) != len(names):
        raise DatasetError(f"{path}: class names repeated in names: {names}")
    if "nc" in data and data["nc"] != len(names):
        raise DatasetError(f"{path}: nc is {data['nc']} but names lists {len(names)} classes")
    root = Path(str(data.get("path") or ""))
    root = root if root.is_absolute() else path.parent / root
    if not root.is_dir():
        raise DatasetError(f"{path}: the dataset root path {root} is not a folder (a relative path is taken from "
                           f"the folder of {path.name})")
    return {**data, "path": root, "names": names}


def default_split(root: str | Path, train: bool) -> str:
    """``train`` for training; for testing ``test`` when data.yaml names one, else ``val``."""
    if train:
        return "train"
    try:
        data = read_data_yaml(find_data_yaml(root))
    except DatasetError:
        return "val"  # the dataset itself will report the problem
    return "test" if data.get("test") else "val"


def label_path(image: Path) -> Path:
    """Ultralytics' rule: the last ``/images/`` of the path becomes ``/labels/`` and the suffix ``.txt``."""
    text = str(image)
    images, labels = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    if images in text:
        head, tail = text.rsplit(images, 1)
        text = head + labels + tail
    return Path(text).with_suffix(".txt")


def split_images(data: dict[str, Any], split: str, yaml_path: Path) -> list[Path]:
    """The image files of ``split``: folders searched recursively (sorted), list files in their order."""
    entry = data.get(split)
    if not entry:
        named = [s for s in SPLITS if data.get(s)] + [k for k in data if k not in (*SPLITS, "path", "names", "nc")
                                                      and isinstance(data[k], (str, list))]
        raise DatasetError(f"{yaml_path} names no {split!r} split (it names: {', '.join(named) or 'none'})")
    root: Path = data["path"]
    images: list[Path] = []
    for item in entry if isinstance(entry, list) else [entry]:
        source = Path(str(item))
        source = source if source.is_absolute() else root / source
        if source.is_dir():
            images += sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        elif source.is_file():
            images += read_image_list(source, root)
        else:
            raise DatasetError(f"{yaml_path}: {split} entry {item!r} is neither an image folder nor a list file "
                               f"({source} does not exist)")
    return images


def read_image_list(path: Path, root: Path) -> list[Path]:
    """Image paths of a list file, one a line; a missing image is an error naming the line."""
    images = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        name = line.strip()
        if not name:
            continue
        image = path.parent / name[2:] if name.startswith("./") else Path(name)
        image = image if image.is_absolute() else root / image
        if not image.is_file():
            raise DatasetError(f"{path}:{number}: image {image} does not exist")
        images.append(image)
    return images


def read_labels(path: Path, num_classes: int, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """``(boxes float64 [N, 4] xyxy in pixels, labels int64 [N] in 1..K)`` of a label file (missing: none)."""
    if not path.is_file():
        return np.zeros((0, 4)), np.zeros(0, np.int64)
    boxes, labels = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}:{number}"
        if len(fields) != 5:
            raise DatasetError(f"{where}: expected 5 fields 'class cx cy w h', got {len(fields)}: {line.strip()!r}")
        try:
            label = int(fields[0])
        except ValueError:
            raise DatasetError(f"{where}: class {fields[0]!r} is not an integer") from None
        if not 0 <= label < num_classes:
            raise DatasetError(f"{where}: class {label} is out of range: names lists {num_classes} classes "
                               f"(0..{num_classes - 1})")
        try:
            cx, cy, w, h = (float(v) for v in fields[1:])
        except ValueError:
            raise DatasetError(f"{where}: coordinates must be numbers, got {' '.join(fields[1:])!r}") from None
        if not all(math.isfinite(v) and -TOLERANCE <= v <= 1 + TOLERANCE for v in (cx, cy, w, h)):
            raise DatasetError(f"{where}: coordinates must be normalised to [0, 1] (cx cy w h divided by the image "
                               f"width and height), got {' '.join(fields[1:])}")
        boxes.append([(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height])
        labels.append(label + 1)
    return np.array(boxes, np.float64).reshape(-1, 4), np.array(labels, np.int64)


def displayed_size(path: Path) -> tuple[int, int]:
    """(height, width) of an image as viewers show it (EXIF rotation applied), from its header; (0, 0) when it
    cannot be read (the image is then skipped with a warning)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO named x.jpg would block the header read
            return (0, 0)
        with Image.open(path) as im:
            width, height = im.size
            orientation = int(im.getexif().get(0x0112, 1))
    except Exception:  # noqa: BLE001 - any header problem means "unknown"
        return (0, 0)
    return (width, height) if orientation in _ROTATED else (height, width)


def read_yolo_split(root: str | Path, split: str) -> tuple[list[str], list[ImageRecord], Path]:
    """``(class names, records, dataset root)`` of ``split`` of the YOLO dataset at ``root`` (see the module
    docstring); boxes exactly as the label files say, in pixels of the image's header size."""
    yaml_path = find_data_yaml(root)
    data = read_data_yaml(yaml_path)
    if "+" in split:
        raise DatasetError(f"YOLO split {split!r}: name one split of {yaml_path} (a split may list several folders "
                           "in data.yaml instead)")
    names: list[str] = data["names"]
    records = []
    for image in split_images(data, split, yaml_path):
        height, width = displayed_size(image)
        labels_file = label_path(image)
        boxes, labels = read_labels(labels_file, len(names), width, height)
        records.append(ImageRecord(image, height, width, boxes, labels, source=str(labels_file)))
    return names, records, data["path"]


class YoloDataset(RecordDataset):
    """One split (``train``, ``val``, ``test``) of a YOLO dataset; ``classes`` are data.yaml's ``names``."""

    def __init__(self, root: str | Path, split: str, transforms: DetectionTransform | None = None,
                 **kwargs: Any) -> None:
        classes, records, self.root = read_yolo_split(root, split)
        self.split = split
        self.yaml_path = find_data_yaml(root)
        super().__init__(records, classes, transforms, **kwargs)

    @property
    def description(self) -> str:
        return f"YOLO {self.split} ({self.yaml_path})"
