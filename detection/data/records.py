"""Datasets read from per-image records (YOLO text files, labelme JSONs): one reader per format turns its files into
:class:`ImageRecord`s, and :class:`RecordDataset` serves them as a detection dataset scored under the COCO protocol
against the same records written as COCO (:func:`records_to_coco`, also what ``tools/convert_dataset.py`` writes).

Image ids are 1..N in the split's order; category ids are the labels 1..K (``classes[k - 1]``).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pycocotools.coco import COCO

from detection.data.base import Annotation, DetectionDataset, EvalProtocol, clean_boxes
from detection.data.errors import DatasetError, UnreadableImageError
from detection.data.transforms import DetectionTransform

logger = logging.getLogger(__name__)


@dataclass
class ImageRecord:
    """One image of a split: its file, its size as annotated (``height``, ``width``; 0 when unknown) and its objects
    exactly as the source gives them: ``boxes`` float64 ``[N, 4]`` xyxy in pixel-edge coordinates (not clipped),
    ``labels`` int64 ``[N]`` in 1..K, ``iscrowd`` bool ``[N]`` (COCO crowd regions, VOC difficult objects)."""

    path: Path
    height: int
    width: int
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float64))
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    iscrowd: np.ndarray | None = None
    # Where the record came from, for warnings (the label file, the JSON).
    source: str = ""

    def crowd(self) -> np.ndarray:
        return self.iscrowd if self.iscrowd is not None else np.zeros(len(self.labels), bool)


def coco_file_name(path: Path, image_root: Path) -> str:
    """``path`` relative to ``image_root`` with ``/`` separators (COCO ``file_name``); an image outside the root is
    a :class:`DatasetError` (a COCO file name is relative to its image folder)."""
    relative = os.path.relpath(path, image_root)
    if relative == ".." or relative.startswith(".." + os.sep) or os.path.isabs(relative):
        raise DatasetError(f"image {path} is outside the image root {image_root}: a COCO file_name must be relative "
                           "to one image folder")
    return relative.replace(os.sep, "/")


def _number(value: float) -> float | int:
    """A COCO number: integers stay integers; the float arithmetic's last bits (1e-6 px) are rounded away."""
    value = round(float(value), 6)
    return int(value) if value.is_integer() else value


def records_to_coco(records: Sequence[ImageRecord], classes: Sequence[str], image_root: Path | None = None,
                    *, image_ids: Sequence[int] | None = None) -> dict[str, Any]:
    """COCO instances dict of ``records``: categories 1..K named ``classes``, every image (objects or not) with id
    ``image_ids[i]`` (default ``i + 1``), boxes ``[x1, y1, x2 - x1, y2 - y1]`` as the records say (to 1e-6 px).
    ``file_name`` is relative to ``image_root`` (default: the image's own path as a string)."""
    ids = list(image_ids) if image_ids is not None else list(range(1, len(records) + 1))
    images, annotations = [], []
    for image_id, record in zip(ids, records):
        name = coco_file_name(record.path, image_root) if image_root is not None else str(record.path)
        images.append({"id": image_id, "file_name": name, "height": record.height, "width": record.width})
        for box, label, crowd in zip(record.boxes.tolist(), record.labels.tolist(), record.crowd().tolist()):
            w, h = box[2] - box[0], box[3] - box[1]
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(label),
                                "bbox": [_number(box[0]), _number(box[1]), _number(w), _number(h)],
                                "area": _number(max(w, 0.0) * max(h, 0.0)), "iscrowd": int(crowd)})
    categories = [{"id": k, "name": name} for k, name in enumerate(classes, start=1)]
    return {"images": images, "annotations": annotations, "categories": categories}


def indexed_coco(data: dict[str, Any]) -> COCO:
    """A pycocotools ``COCO`` over an in-memory instances dict (what the COCO evaluation reads)."""
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
    return coco


class RecordDataset(DetectionDataset):
    """A split given as :class:`ImageRecord`s, scored with pycocotools against its own records (``coco``).

    Training mode drops images left without a usable box (``filter_empty``, counted in ``num_without_boxes``);
    images whose size could not be read from the file's header are skipped at once (``skipped``; ``strict``
    raises). Boxes are clipped to the image and degenerate ones dropped with a warning, as for every dataset.
    """

    protocol: ClassVar[EvalProtocol] = "coco"
    headline_voc07: ClassVar[bool] = False

    def __init__(self, records: Sequence[ImageRecord], classes: Sequence[str],
                 transforms: DetectionTransform | None = None, *, train: bool = False,
                 filter_empty: bool | None = None, strict: bool = False) -> None:
        super().__init__(transforms, train=train, filter_empty=filter_empty, strict=strict)
        self.classes = list(classes)
        self.label_to_cat_id = {k: k for k in range(1, len(self.classes) + 1)}
        self.cat_id_to_label = dict(self.label_to_cat_id)
        readable = []
        for record in records:
            if record.height > 0 and record.width > 0:
                readable.append(record)
                continue
            message = f"cannot read the size of image {record.path} from its header"
            if strict:
                raise UnreadableImageError(message)
            logger.warning("skipping %s", message)
            self.skipped.append(str(record.path))
        self.coco = indexed_coco(records_to_coco(readable, self.classes))
        self._items: list[tuple[int, ImageRecord, Annotation]] = []  # (image id, record, cleaned annotation)
        for image_id, record in enumerate(readable, start=1):
            boxes = record.boxes.astype(np.float32)
            keep = clean_boxes(boxes, width=record.width, height=record.height, file=record.source or record.path,
                               objects=[f"object {i} ({self.classes[k - 1]})" for i, k in enumerate(record.labels)])
            ann = Annotation(boxes, record.labels.astype(np.int64)).select(keep)
            if self.filter_empty and len(ann.boxes) == 0:
                self.num_without_boxes += 1
                continue
            self._items.append((image_id, record, ann))

    def __len__(self) -> int:
        return len(self._items)

    def image_info(self, index: int) -> dict[str, Any]:
        image_id, record, _ = self._items[index]
        return {"height": record.height, "width": record.width, "file_name": record.path.name, "image_id": image_id}

    def image_path(self, index: int) -> Path:
        return self._items[index][1].path

    def annotation(self, index: int) -> Annotation:
        return self._items[index][2]
