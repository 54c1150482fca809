"""Detection datasets (COCO, PASCAL VOC, ImageNet DET, generated shapes, YOLO and labelme folders), transforms,
batching.

Every dataset yields ``(image float32 [3, H, W] in [0, 1], target dict)`` as specified in docs/DESIGN.md, or
``None`` for an unreadable image (skipped with a warning; ``strict=True`` raises). See docs/datasets.md.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from detection.data.base import ConcatDetectionDataset, DetectionDataset
from detection.data.coco import CocoDetection, CocoUnion, coco_dataset
from detection.data.collate import collate
from detection.data.errors import DatasetError
from detection.data.imagenet_det import ImageNetDetDataset, ImageNetDetection
from detection.data.labelme import LabelmeDataset
from detection.data.sampler import GroupedBatchSampler
from detection.data.shapes import ShapesDataset, generate_shapes, write_crop_dataset
from detection.data.splits import join_splits
from detection.data.transforms import DetectionTransform, build_transforms
from detection.data.voc import VOCDataset, VOCDetection
from detection.data.yolo import YoloDataset
from detection.data.yolo import default_split as yolo_default_split

# Name → what builds it from (root, split, transforms, **kwargs): a class, or for COCO a function that returns one
# split (CocoDetection) or a union of several (CocoUnion).
DATASETS: dict[str, Callable[..., DetectionDataset | ConcatDetectionDataset]] = {
    "coco": coco_dataset,
    "voc": VOCDataset,
    "imagenet_det": ImageNetDetDataset,
    "shapes": ShapesDataset,
    "yolo": YoloDataset,  # --data-root data.yaml (ultralytics layout)
    "labelme": LabelmeDataset,  # --data-root DIR: one JSON per image, a subfolder per split
}

# The split used when none is given, by (dataset name, training?).
DEFAULT_SPLITS: dict[tuple[str, bool], str] = {
    ("coco", True): "train2017",
    ("coco", False): "val2017",
    ("shapes", True): "train",
    ("shapes", False): "val",
    ("voc", True): "trainval",  # trainval of every year present: "07+12" when both are there
    ("voc", False): "test",  # VOC2007 test
    ("imagenet_det", True): "train",
    ("imagenet_det", False): "val",
    ("yolo", True): "train",
    ("yolo", False): "val",  # "test" when data.yaml names one: resolve_split(..., root=)
    ("labelme", True): "train",
    ("labelme", False): "val",
}


def resolve_split(name: str, *splits: str | Sequence[str], train: bool, root: str | Path | None = None) -> str:
    """The first non-empty of ``splits`` (e.g. the command line's, then the config's), else the default training
    or test split of dataset ``name`` (:data:`DEFAULT_SPLITS`; for ``yolo`` with its ``root``, the test split is
    ``test`` when data.yaml names one). A list of split names (a union) comes back in the one spelling every
    dataset reads, ``+``-joined (detection/data/splits.py)."""
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}")
    default = DEFAULT_SPLITS[(name, train)]
    if name == "yolo" and root is not None:
        default = yolo_default_split(root, train)
    return join_splits(next((split for split in splits if split), default))


def build_dataset(
    name: str,
    root: str | Path,
    split: str | Sequence[str],
    transforms: DetectionTransform | None,
    *,
    train: bool = False,
    strict: bool = False,
    **kw: Any,
) -> DetectionDataset | ConcatDetectionDataset:
    """The dataset ``name`` (a key of :data:`DATASETS`) at ``root``.

    ``split`` is one split or a union (``"train2014+valminusminival2014"``, or the list of names).
    ``train`` selects training mode (drop crowd and difficult objects, drop images left empty) and, when ``split``
    is ``""``, the default training split instead of the test one (:func:`resolve_split`); the transforms do not
    decide it. Other keyword arguments go to the dataset class.
    """
    split = resolve_split(name, split, train=train, root=root)
    return DATASETS[name](root, split, transforms, train=train, strict=strict, **kw)


__all__ = [
    "DATASETS",
    "DEFAULT_SPLITS",
    "CocoDetection",
    "CocoUnion",
    "DatasetError",
    "GroupedBatchSampler",
    "ImageNetDetDataset",
    "ImageNetDetection",
    "LabelmeDataset",
    "ShapesDataset",
    "VOCDataset",
    "VOCDetection",
    "YoloDataset",
    "build_dataset",
    "build_transforms",
    "coco_dataset",
    "collate",
    "generate_shapes",
    "resolve_split",
    "write_crop_dataset",
]
