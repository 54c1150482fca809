"""Any dataset format the toolkit reads → COCO instances JSON (``tools/convert_dataset.py``).

What is written: categories 1..K in the source's class order with its names; every image of the split, with or
without objects (image ids 1..N in the split's order; a COCO source keeps its own); boxes exactly as the source gives
them, as COCO ``[x, y, w, h]`` in pixel-edge coordinates (to 1e-6 px; nothing clipped, nothing dropped):

- ``yolo``: ``cx, cy, w, h`` × the image's width and height (the file header's size) → ``[x, y, w, h]``;
- ``labelme``: each shape's box (:mod:`detection.data.labelme`);
- ``voc``: the devkit's 1-based inclusive ``xmin ymin xmax ymax`` → ``[xmin - 1, ymin - 1, xmax - xmin + 1,
  ymax - ymin + 1]``; ``difficult`` objects become ``iscrowd: 1`` (ignored by the COCO evaluation and left out of
  training, as the toolkit treats them);
- ``coco``: the annotations as they are (``bbox``, ``area``, ``iscrowd``), category ids renumbered 1..K in
  increasing id order.

``file_name`` is relative to the data root (YOLO: data.yaml's ``path``), so ``--train-json OUT.json --train-images
ROOT`` trains on the result.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from detection import files
from detection.data.coco import CocoDetection
from detection.data.errors import DatasetError
from detection.data.io import safe_join
from detection.data.labelme import read_labelme_split
from detection.data.records import ImageRecord, coco_file_name, records_to_coco
from detection.data.voc import VOCDataset
from detection.data.yolo import read_yolo_split
from detection.devkit import read_pascal_xml


def _checked_sizes(records: list[ImageRecord]) -> list[ImageRecord]:
    for record in records:
        if record.height <= 0 or record.width <= 0:
            raise DatasetError(f"cannot read the size of image {record.path} from its header (needed for COCO's "
                               "width and height)")
    return records


def yolo_to_coco(root: Path, split: str) -> dict[str, Any]:
    classes, records, image_root = read_yolo_split(root, split)
    return records_to_coco(_checked_sizes(records), classes, image_root)


def labelme_to_coco(root: Path, split: str) -> dict[str, Any]:
    classes, records = read_labelme_split(root, split)
    return records_to_coco(records, classes, Path(root).resolve())


def voc_to_coco(root: Path, split: str) -> dict[str, Any]:
    dataset = VOCDataset(root, split)  # evaluation mode: every image of the split, difficult objects kept
    if not dataset.has_annotations:
        raise DatasetError(f"VOC split {split!r} has no public annotations to convert")
    label_of = {name: k for k, name in enumerate(dataset.classes, start=1)}
    records = []
    for part in dataset.datasets:
        names = part.image_names()
        for i in range(len(part)):
            xml_path = part.year_dir / "Annotations" / f"{names[part.image_info(i)['image_id']]}.xml"
            xml = read_pascal_xml(xml_path, classes=label_of)
            boxes = np.array([o.box for o in xml.objects], np.float64).reshape(-1, 4)
            boxes[:, :2] -= 1.0  # 1-based inclusive → pixel edges
            records.append(ImageRecord(part.image_path(i), xml.height, xml.width, boxes,
                                       np.array([label_of[o.name] for o in xml.objects], np.int64),
                                       np.array([o.difficult for o in xml.objects], bool)))
    return records_to_coco(records, dataset.classes, Path(root))


def coco_to_coco(root: Path, split: str) -> dict[str, Any]:
    """A COCO root's split (or, when ``root`` is an instances JSON, that file: its file names kept)."""
    own_file = Path(root).is_file()
    dataset = CocoDetection(root.parent if own_file else root, split, ann_file=root if own_file else None,
                            image_dir=root.parent if own_file else None)
    source = dataset.coco.dataset
    label_of = dataset.cat_id_to_label
    images = []
    for image in source["images"]:
        name = image["file_name"] if own_file else coco_file_name(safe_join(dataset.image_dir, image["file_name"]),
                                                                  Path(root))
        images.append({**image, "file_name": name})
    annotations = [{"id": a["id"], "image_id": a["image_id"], "category_id": label_of[a["category_id"]],
                    "bbox": list(a["bbox"]), "area": a["area"], "iscrowd": int(a["iscrowd"])}
                   for a in source.get("annotations", [])]
    categories = [{"id": k, "name": name} for k, name in enumerate(dataset.classes, start=1)]
    return {"images": images, "annotations": annotations, "categories": categories}


CONVERTERS: dict[str, Callable[[Path, str], dict[str, Any]]] = {
    "yolo": yolo_to_coco,
    "labelme": labelme_to_coco,
    "voc": voc_to_coco,
    "coco": coco_to_coco,
}


def convert_to_coco(source_format: str, root: str | Path, split: str) -> dict[str, Any]:
    """The COCO instances dict of ``split`` of the ``source_format`` dataset at ``root`` (module docstring)."""
    if source_format not in CONVERTERS:
        raise DatasetError(f"unknown source format {source_format!r}; known: {', '.join(CONVERTERS)}")
    return CONVERTERS[source_format](Path(root), split)


def write_json(data: dict[str, Any], path: str | Path) -> Path:
    """Write ``data`` as JSON atomically (``detection.files.write_json``: a temporary file in the same folder, then
    renamed; a failure is one ``ResultWriteError`` naming the file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return files.write_json(path, data, indent=None)
