"""COCO detection: ``<root>/annotations/instances_<split>.json`` + ``<root>/<split>/`` images, via pycocotools.

Category ids (1..90 with gaps in COCO) map to contiguous labels 1..K in increasing id order:
``label_to_cat_id[k]`` / ``cat_id_to_label[cat_id]``. ``image_id`` in targets is the COCO image id. Boxes
``[x, y, w, h]`` become xyxy ``[x, y, x + w, y + h]``.

Test splits without annotations (``test-dev2017``: ``annotations/image_info_test-dev2017.json`` + ``test2017/``)
load with empty targets and ``has_annotations = False``; evaluation then writes the zipped results JSON for the
server. Training mode (``train=True``): crowd regions are removed from ``boxes`` (they are not positives) and
images left without objects are dropped (``filter_empty``). Evaluation mode (the default) keeps every image and
every box, crowd ones flagged in ``target["iscrowd"]``; it is scored with pycocotools (``protocol = "coco"``).
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pycocotools.coco import COCO

from detection.data.base import Annotation, DetectionDataset, EvalProtocol, check_root, clean_boxes, unannotated
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


def default_annotation_file(root: Path, split: str) -> Path:
    """``annotations/instances_<split>.json``; for a test split without it, COCO's image-info file
    ``annotations/image_info_<split>.json`` (e.g. ``image_info_test-dev2017.json``)."""
    instances = root / "annotations" / f"instances_{split}.json"
    info = root / "annotations" / f"image_info_{split}.json"
    return info if not instances.exists() and split.startswith("test") and info.exists() else instances


def default_image_dir(root: Path, split: str) -> Path:
    """``<root>/<split>``; test-dev's images live in the test folder of its year (``test-dev2017`` → ``test2017``)."""
    match = re.fullmatch(r"test-dev(\d{4})", split)
    if not (root / split).is_dir() and match:
        return root / f"test{match.group(1)}"
    return root / split


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
            ann_file = default_annotation_file(self.root, split)
            check_root(self.root, f"annotations/{ann_file.name}", default_image_dir(self.root, split).name)
        self.ann_file = Path(ann_file)
        self.image_dir = Path(image_dir) if image_dir is not None else default_image_dir(self.root, split)
        self.coco = load_coco_json(self.ann_file)
        # An image-info file (test-dev, test) lists images but no annotations: a split for the evaluation server.
        self.has_annotations = "annotations" in self.coco.dataset
        if not self.has_annotations:
            unannotated(f"{self.ann_file} (COCO {split})", self.train)

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
