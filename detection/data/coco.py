"""COCO detection: ``<root>/annotations/instances_<split>.json`` + ``<root>/<split>/`` images, via pycocotools.

Category ids (1..90 with gaps in COCO) map to contiguous labels 1..K in increasing id order:
``label_to_cat_id[k]`` / ``cat_id_to_label[cat_id]``. ``image_id`` in targets is the COCO image id. Boxes
``[x, y, w, h]`` become xyxy ``[x, y, x + w, y + h]``.

Training mode (``train=True``): crowd regions are removed from ``boxes`` (they are not positives) and images left
without objects are dropped (``filter_empty``). Evaluation mode (the default) keeps every image and every box, crowd
ones flagged in ``target["iscrowd"]``; it is scored with pycocotools (``protocol = "coco"``).
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pycocotools.coco import COCO

from detection.data.base import Annotation, DetectionDataset, EvalProtocol, check_root, clean_boxes
from detection.data.io import safe_join
from detection.data.transforms import DetectionTransform
from detection.devkit import read_coco_instances


def load_coco_json(path: Path) -> COCO:
    """Parse and validate a COCO instances file (:func:`detection.devkit.read_coco_instances`); returns an indexed
    pycocotools ``COCO``. Raises :class:`DatasetError` naming the file and the faulty entry."""
    coco = COCO()
    coco.dataset = read_coco_instances(path)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
    return coco


class CocoDetection(DetectionDataset):
    """One COCO split. ``classes`` are the category names in increasing category-id order.

    ``headline_voc07``: also score VOC07 11-point mAP@0.5 and report it as the headline number (the generated
    ``shapes`` set does, for the quickstart).
    """

    protocol: ClassVar[EvalProtocol] = "coco"
    headline_voc07: ClassVar[bool] = False

    def __init__(
        self,
        root: str | Path,
        split: str,
        transforms: DetectionTransform | None = None,
        *,
        train: bool = False,
        filter_empty: bool | None = None,
        keep_crowd: bool | None = None,
        strict: bool = False,
        ann_file: str | Path | None = None,
        image_dir: str | Path | None = None,
    ) -> None:
        super().__init__(transforms, train=train, filter_empty=filter_empty, strict=strict)
        self.root = Path(root)
        self.split = split
        self.keep_crowd = not self.train if keep_crowd is None else keep_crowd
        if ann_file is None:
            check_root(self.root, f"annotations/instances_{split}.json", split)
        self.ann_file = Path(ann_file) if ann_file is not None else self.root / f"annotations/instances_{split}.json"
        self.image_dir = Path(image_dir) if image_dir is not None else self.root / split
        self.coco = load_coco_json(self.ann_file)

        cat_ids = sorted(self.coco.getCatIds())
        self.classes = [self.coco.cats[c]["name"] for c in cat_ids]
        self.label_to_cat_id = {label: cat for label, cat in enumerate(cat_ids, start=1)}
        self.cat_id_to_label = {cat: label for label, cat in self.label_to_cat_id.items()}

        self.image_ids: list[int] = []
        self._annotations: list[Annotation] = []
        for image_id in sorted(self.coco.imgs):
            info = self.coco.imgs[image_id]
            safe_join(self.image_dir, info["file_name"], what=f"{self.ann_file}: image {image_id} file_name")
            ann = self._parse(info)
            if self.filter_empty and len(ann.boxes) == 0:
                self.num_without_boxes += 1
                continue
            self.image_ids.append(image_id)
            self._annotations.append(ann)

    def _parse(self, info: dict[str, Any]) -> Annotation:
        anns = self.coco.imgToAnns.get(info["id"], [])
        if not self.keep_crowd:
            anns = [a for a in anns if not a["iscrowd"]]
        boxes = np.array([a["bbox"] for a in anns], dtype=np.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        labels = np.array([self.cat_id_to_label[a["category_id"]] for a in anns], dtype=np.int64)
        crowd = np.array([bool(a["iscrowd"]) for a in anns], dtype=bool)
        keep = clean_boxes(boxes, width=info["width"], height=info["height"], file=self.ann_file,
                           objects=[f"annotation id {a.get('id')} (image {info['id']})" for a in anns])
        return Annotation(boxes, labels, {"iscrowd": crowd}).select(keep)

    def __len__(self) -> int:
        return len(self.image_ids)

    def image_info(self, index: int) -> dict[str, Any]:
        info = self.coco.imgs[self.image_ids[index]]
        return {"height": info["height"], "width": info["width"], "file_name": info["file_name"],
                "image_id": info["id"]}

    def image_path(self, index: int) -> Path:
        return safe_join(self.image_dir, self.coco.imgs[self.image_ids[index]]["file_name"])

    def annotation(self, index: int) -> Annotation:
        return self._annotations[index]
