"""COCO detection: ``<root>/annotations/instances_<split>.json`` + ``<root>/<split>/`` images, via pycocotools.

Several splits train as one (:func:`coco_dataset`, ``build_dataset("coco", root, "train2014+valminusminival2014")``
or the config's ``data.train_split: [train2014, valminusminival2014]``): each split reads its own annotation file
and image folder, the splits must have the same categories (same ids and names) and no image in common (by COCO
image id: the same photo keeps its id across COCO's 2014 and 2017 files, so ``train2014+val2017`` is refused).
Where a split's images live (:func:`default_image_dir`): ``<root>/<split>``; Detectron's ``minival2014`` and
``valminusminival2014`` (``instances_minival2014.json``, ``instances_valminusminival2014.json``) in ``val2014/``;
``test-dev2017`` in ``test2017/``; or an explicit ``image_dirs={split: folder}`` (config ``data.image_dirs``).
``exclude_images`` (config ``data.exclude_images``: a COCO JSON, or a file of image ids) removes images from every
part, e.g. minival from the full val2014 when Detectron's files are not at hand.

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
import json
import logging
import re
from collections.abc import Collection, Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pycocotools.coco import COCO

from detection.data.base import (
    Annotation,
    ConcatDetectionDataset,
    DetectionDataset,
    EvalProtocol,
    check_root,
    clean_boxes,
    unannotated,
)
from detection.data.errors import DatasetError
from detection.data.io import safe_join
from detection.data.splits import split_parts
from detection.data.transforms import DetectionTransform
from detection.devkit import read_coco_instances

logger = logging.getLogger(__name__)

# Detectron's 2014 splits whose images are in val2014/: minival (5k images) and val minus minival (35k).
VAL2014_SUBSETS = re.compile(r"(?:minival|valminusminival)(\d{4})")


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


def default_image_dir(root: Path, split: str, image_dirs: Mapping[str, str | Path] | None = None) -> Path:
    """The image folder of ``split``: ``image_dirs[split]`` when given (relative to ``root``, or absolute); else
    ``<root>/<split>`` when it exists; else test-dev's test folder of its year (``test-dev2017`` → ``test2017``) and
    Detectron's ``minival<year>`` / ``valminusminival<year>`` → ``val<year>``; else ``<root>/<split>``."""
    if image_dirs and split in image_dirs:
        return root / image_dirs[split]
    if (root / split).is_dir():
        return root / split
    if match := re.fullmatch(r"test-dev(\d{4})", split):
        return root / f"test{match.group(1)}"
    if match := VAL2014_SUBSETS.fullmatch(split):
        return root / f"val{match.group(1)}"
    return root / split


def read_image_ids(path: Path) -> set[int]:
    """Image ids from ``path``: a COCO JSON (its ``images[].id``; an instances or image-info file) or a text file
    of integer ids (separated by whitespace or commas; ``#`` starts a comment). Errors name the file and line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read image id file {path}: {exc}") from None
    if text.lstrip().startswith("{"):
        try:
            images = json.loads(text).get("images")
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}: malformed JSON: {exc}") from None
        if not isinstance(images, list) or not all(isinstance(i, dict) and isinstance(i.get("id"), int)
                                                   for i in images):
            raise DatasetError(f"{path}: a COCO JSON whose 'images' is a list of objects with integer 'id's")
        return {image["id"] for image in images}
    ids = set()
    for number, line in enumerate(text.splitlines(), start=1):
        for word in line.split("#", 1)[0].replace(",", " ").split():
            if not word.isdigit():
                raise DatasetError(f"{path}:{number}: {word!r} is not an image id (one integer id per entry)")
            ids.add(int(word))
    return ids


class CocoDetection(DetectionDataset):
    """One COCO split. ``classes`` are the category names in increasing category-id order.

    ``headline_voc07``: also score VOC07 11-point mAP@0.5 and report it as the headline number (the generated
    ``shapes`` set does, for the quickstart). ``image_dirs`` maps split names to image folders
    (:func:`default_image_dir`); images whose id is in ``exclude_image_ids`` are left out (``num_excluded``).
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
        image_dirs: Mapping[str, str | Path] | None = None,
        exclude_image_ids: Collection[int] = (),
    ) -> None:
        super().__init__(transforms, train=train, filter_empty=filter_empty, strict=strict)
        self.root = Path(root)
        self.split = split
        self.keep_crowd = not self.train if keep_crowd is None else keep_crowd
        # COCO's own files share one id space (a photo keeps its id from 2014 to 2017); own JSONs need not.
        self.global_ids = ann_file is None
        self.image_dir = Path(image_dir) if image_dir is not None else default_image_dir(self.root, split, image_dirs)
        if ann_file is None:
            ann_file = default_annotation_file(self.root, split)
            check_root(self.root, f"annotations/{ann_file.name}")
            if not self.image_dir.is_dir():
                raise DatasetError(f"dataset root {self.root} has the wrong layout: expected path {self.image_dir} "
                                   f"is missing (the images of {split}; data.image_dirs maps a split to a folder)")
        self.ann_file = Path(ann_file)
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
        self.num_excluded = 0
        for image_id in sorted(self.coco.imgs):
            if image_id in exclude_image_ids:
                self.num_excluded += 1
                continue
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

    @property
    def description(self) -> str:
        return f"COCO {self.split} ({self.ann_file})"

    def image_key(self, index: int) -> Hashable:
        return f"image id {self.image_ids[index]}" if self.global_ids else str(self.image_path(index))

    def image_info(self, index: int) -> dict[str, Any]:
        info = self.coco.imgs[self.image_ids[index]]
        return {"height": info["height"], "width": info["width"], "file_name": info["file_name"],
                "image_id": info["id"]}

    def image_path(self, index: int) -> Path:
        return safe_join(self.image_dir, self.coco.imgs[self.image_ids[index]]["file_name"])

    def annotation(self, index: int) -> Annotation:
        return self._annotations[index]


class CocoUnion(ConcatDetectionDataset):
    """Several COCO splits (or own COCO-format JSONs) trained on as one; build it with :func:`coco_dataset`.

    The parts must have the same categories (ids and names: a :class:`DatasetError` names the two files) and no
    image in common. ``label_to_cat_id`` is theirs; a union is for training: evaluate one split at a time.
    """

    datasets: list[CocoDetection]
    protocol: ClassVar[EvalProtocol] = "coco"
    headline_voc07: ClassVar[bool] = False
    overlap_hint: ClassVar[str] = (
        " (COCO's minival2014 is part of val2014, and val2017 of train2014 + val2014: train on "
        "train2014+valminusminival2014 or train2017, or remove the test images with data.exclude_images)"
    )

    def __init__(self, datasets: list[CocoDetection]) -> None:
        first = datasets[0]
        for part in datasets[1:]:
            if _categories(part) != _categories(first):
                raise DatasetError(f"COCO splits with different categories cannot be joined: {first.ann_file} has "
                                   f"{_describe_categories(first)} but {part.ann_file} has "
                                   f"{_describe_categories(part)}")
        super().__init__(datasets)
        self.split = "+".join(part.split for part in datasets)
        self.label_to_cat_id = dict(first.label_to_cat_id)
        self.cat_id_to_label = dict(first.cat_id_to_label)

    @property
    def coco(self) -> COCO:
        raise DatasetError(f"COCO split {self.split!r} joins {len(self.datasets)} splits; evaluate one at a time")


def _categories(part: CocoDetection) -> dict[int, str]:
    return {cat_id: cat["name"] for cat_id, cat in part.coco.cats.items()}


def _describe_categories(part: CocoDetection, shown: int = 5) -> str:
    items = sorted(_categories(part).items())
    listed = ", ".join(f"{cat_id}: {name}" for cat_id, name in items[:shown])
    return f"{len(items)} ({listed}{', …' if len(items) > shown else ''})"


def coco_dataset(
    root: str | Path,
    split: str,
    transforms: DetectionTransform | None = None,
    *,
    ann_file: str | Path | Sequence[str | Path] | None = None,
    image_dir: str | Path | Sequence[str | Path] | None = None,
    image_dirs: Mapping[str, str | Path] | None = None,
    exclude_images: str | Path | None = None,
    **kwargs: Any,
) -> CocoDetection | CocoUnion:
    """A COCO split, or the union of a ``+``-joined spec (``"train2014+valminusminival2014"``) or of several own
    JSONs (``ann_file=[a.json, b.json]`` with one ``image_dir`` for all or one each). ``image_dirs`` maps split
    names to image folders; ``exclude_images`` (a COCO JSON or an id list, :func:`read_image_ids`) removes its
    images from every part. Other keyword arguments go to each :class:`CocoDetection`."""
    root = Path(root)
    exclude = read_image_ids(Path(exclude_images)) if exclude_images else set()
    if ann_file is None:
        parts = [dict(split=s, image_dirs=image_dirs) for s in split_parts(split)]
    else:
        files = [Path(ann_file)] if isinstance(ann_file, (str, Path)) else [Path(f) for f in ann_file]
        folders = [image_dir] if image_dir is None or isinstance(image_dir, (str, Path)) else list(image_dir)
        if len(folders) not in (1, len(files)):
            raise DatasetError(f"{len(files)} annotation files ({', '.join(map(str, files))}) but {len(folders)} "
                               f"image folders: give one folder for all, or one per file")
        folders = folders * len(files) if len(folders) == 1 else folders
        own_split = split if len(files) == 1 else None  # several files: each is named by its stem
        parts = [dict(split=own_split or f.stem, ann_file=f, image_dir=d) for f, d in zip(files, folders)]
    datasets = [CocoDetection(root, transforms=transforms, exclude_image_ids=exclude, **p, **kwargs) for p in parts]
    if exclude_images:
        excluded = sum(d.num_excluded for d in datasets)
        counts = ", ".join(f"{d.num_excluded} of {d.split}" for d in datasets)
        (logger.info if excluded else logger.warning)(
            "data.exclude_images %s (%d ids) removed %d images: %s", exclude_images, len(exclude), excluded, counts)
    return datasets[0] if len(datasets) == 1 else CocoUnion(datasets)
