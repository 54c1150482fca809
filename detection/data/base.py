"""What every detection dataset shares: image loading with skip-or-raise, box clean-up, and the target dict.

A subclass provides ``classes``, ``__len__``, ``image_info(i)``, ``image_path(i)`` and ``annotation(i)``; this base
class turns them into ``(image, target)`` samples following docs/DESIGN.md (boxes xyxy float32 in pixels of the
returned image, labels 1..K, ``image_id``, ``orig_size``, ``scale`` plus the dataset's boolean flags).
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset

from detection.data.errors import DatasetError, UnreadableImageError
from detection.data.io import MAX_PIXELS, MAX_SIDE, header_size, read_image
from detection.data.splits import check_disjoint
from detection.data.transforms import DetectionTransform, to_tensor

logger = logging.getLogger(__name__)

Sample = tuple[torch.Tensor, dict[str, Any]]

# The official metric a dataset is scored with (detection/engine/evaluate.py).
EvalProtocol = Literal["coco", "voc", "imagenet_det"]


@dataclass
class Annotation:
    """One image's objects in pixels of the file on disk: ``boxes`` float32 ``[N, 4]`` xyxy, ``labels`` int64 ``[N]``
    in 1..K, and per-object boolean ``flags`` such as ``{"iscrowd": ..., "difficult": ...}``."""

    boxes: np.ndarray
    labels: np.ndarray
    flags: dict[str, np.ndarray] = field(default_factory=dict)

    def select(self, keep: np.ndarray) -> Annotation:
        return Annotation(self.boxes[keep], self.labels[keep], {k: v[keep] for k, v in self.flags.items()})

    @staticmethod
    def empty(*flags: str) -> Annotation:
        """No objects (an image of a split without annotations), with empty boolean ``flags``."""
        return Annotation(np.zeros((0, 4), np.float32), np.zeros(0, np.int64), {f: np.zeros(0, bool) for f in flags})


def clean_boxes(boxes: np.ndarray, *, width: float, height: float, file: str | Path, objects: list[str]) -> np.ndarray:
    """Clip xyxy ``boxes`` (in place) to ``[0, width] × [0, height]`` and return the mask of boxes to keep.

    Boxes with zero or negative width or height (before or after clipping) are dropped with a warning naming the
    file and the object (``objects[i]`` describes box ``i``).
    """
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    for i in np.flatnonzero(~keep):
        logger.warning("%s: %s has zero or negative width/height inside the image %s; dropped", file, objects[i],
                       boxes[i].tolist())
    return keep


def unannotated(split_name: str, train: bool) -> None:
    """A split without annotations may be tested (its submission files written), never trained on."""
    if train:
        raise DatasetError(f"{split_name} has no annotations: it can be a test split (for the evaluation server) "
                           "but not a training split")


def image_file_size(path: Path) -> tuple[int, int]:
    """(height, width) of an image file from its header, for a split whose annotations give no size; (0, 0) when
    the header cannot be read (the image is then skipped with a warning when it is loaded)."""
    try:
        with open(path, "rb") as f:
            return header_size(f.read(1 << 20)) or (0, 0)
    except OSError:
        return (0, 0)


def check_root(root: Path, *required: str) -> None:
    """Raise a :class:`DatasetError` saying which expected path under ``root`` is missing."""
    if not root.is_dir():
        raise DatasetError(f"dataset root {root} does not exist or is not a directory")
    for rel in required:
        if not (root / rel).exists():
            raise DatasetError(f"dataset root {root} has the wrong layout: expected path {root / rel} is missing")


class DetectionDataset(Dataset):
    """Base class: turns ``image_path`` + ``annotation`` into transformed ``(image, target)`` samples.

    ``train`` selects training mode, whatever the transforms: subclasses then drop what cannot be a positive
    (crowd regions, difficult objects) and, with ``filter_empty`` (default: ``train``), images left without objects.
    Unreadable images give ``None`` with a warning naming the file and are listed once in ``self.skipped`` (per
    process: with DataLoader workers each worker keeps its own list, the warnings are still logged); with
    ``strict=True`` they raise :class:`UnreadableImageError`.

    ``protocol`` names the official metric the dataset is scored with; each protocol reads its own typed
    attributes (COCO: ``coco``, ``label_to_cat_id``, ``headline_voc07``; VOC: ``use_07_metric``, ``image_names()``;
    ILSVRC DET: ``wnids``, ``label_to_class_index``).
    """

    classes: list[str]
    protocol: ClassVar[EvalProtocol]
    # False for a test split whose annotations are not public (COCO test-dev, VOC2012 test, ILSVRC DET test):
    # its images come with empty targets, and evaluation writes the server's submission files instead of a metric.
    has_annotations: bool = True

    def __init__(self, transforms: DetectionTransform | None = None, *, train: bool = False,
                 filter_empty: bool | None = None, strict: bool = False, max_side: int = MAX_SIDE) -> None:
        self.transforms = transforms
        self.train = train
        self.filter_empty = train if filter_empty is None else filter_empty
        self.strict = strict
        self.max_side = max_side
        # Images whose header announces more pixels are skipped unread (run.py sets input.max_image_pixels).
        self.max_pixels = MAX_PIXELS
        self.skipped: list[str] = []
        # Images of the split dropped at load time because no usable box was left (``filter_empty``).
        self.num_without_boxes = 0

    # --- provided by subclasses --------------------------------------------------------------------------------
    def __len__(self) -> int:
        raise NotImplementedError

    def image_info(self, index: int) -> dict[str, Any]:
        """``dict(height, width, file_name, image_id)`` from the annotations, without reading pixels."""
        raise NotImplementedError

    def image_path(self, index: int) -> Path:
        raise NotImplementedError

    def annotation(self, index: int) -> Annotation:
        raise NotImplementedError

    # --- shared ------------------------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def description(self) -> str:
        """How errors name this split, e.g. ``VOC2007 trainval`` (subclasses say more)."""
        return f"{type(self).__name__} {getattr(self, 'split', '')}".rstrip()

    def image_key(self, index: int) -> Hashable:
        """What makes image ``index`` the same image as one of another split (a union's parts must not share
        any; detection/data/splits.py): by default its file."""
        return str(self.image_path(index))

    def load_image(self, index: int) -> tuple[np.ndarray, tuple[int, int]] | None:
        """RGB uint8 image and its on-disk (H, W), or None (recorded in ``skipped``) when unreadable."""
        path = self.image_path(index)
        info = self.image_info(index)
        try:
            return read_image(path, max_side=self.max_side, max_pixels=self.max_pixels,
                              annotated_size=(int(info["height"]), int(info["width"])))
        except UnreadableImageError as exc:
            if self.strict:
                raise
            # Once per file and process: training revisits a bad file every epoch.
            if str(path) not in self.skipped:
                logger.warning("skipping sample %d: %s", index, exc)
                self.skipped.append(str(path))
            else:
                logger.debug("skipping sample %d again: %s", index, exc)
            return None

    def __getitem__(self, index: int) -> Sample | None:
        loaded = self.load_image(index)
        if loaded is None:
            return None
        image, (orig_h, orig_w) = loaded
        info = self.image_info(index)
        ann = self.annotation(index)
        boxes = ann.boxes.astype(np.float32, copy=True)
        if (info["height"], info["width"]) != (orig_h, orig_w):
            # A rotation never gets here (read_image applies EXIF or refuses); this is a file resized after annotation.
            logger.warning("%s is %dx%d (HxW) on disk but %dx%d in the annotations; boxes rescaled",
                           self.image_path(index), orig_h, orig_w, info["height"], info["width"])
        # Annotations are in the annotated size; bring them to the decoded image (smaller only for huge files).
        boxes[:, 0::2] *= image.shape[1] / info["width"]
        boxes[:, 1::2] *= image.shape[0] / info["height"]
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, image.shape[1])
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, image.shape[0])
        if self.transforms is not None:
            tensor, boxes, kept = self.transforms(image, boxes)
            ann = ann.select(kept)
        else:
            tensor = to_tensor(image)
        target: dict[str, Any] = {
            "boxes": torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.as_tensor(ann.labels, dtype=torch.int64),
            "image_id": int(info["image_id"]),
            "orig_size": (orig_h, orig_w),
            "annotated_size": (int(info["height"]), int(info["width"])),  # the frame of results and ground truth
            "scale": 0.5 * (tensor.shape[1] / orig_h + tensor.shape[2] / orig_w),
        }
        for key, values in ann.flags.items():
            target[key] = torch.as_tensor(values, dtype=torch.bool)
        return tensor, target


class ConcatDetectionDataset(ConcatDataset):
    """Several detection datasets with the same ``classes`` and no image in common as one (e.g. VOC "07+12"); a
    shared image (by the parts' ``image_key``) is a :class:`DatasetError` naming both parts.

    Item ``i`` keeps its part's target but ``image_id`` is offset by the number of items before its part, so ids
    stay unique; :meth:`locate` maps a global index back to ``(part, local index)``.
    """

    datasets: list[DetectionDataset]
    protocol: ClassVar[EvalProtocol]
    # Appended to the error for parts that share images: what to train on instead.
    overlap_hint: ClassVar[str] = ""

    def __init__(self, datasets: list[DetectionDataset]) -> None:
        if not datasets:
            raise DatasetError("a dataset union needs at least one part")
        for part in datasets[1:]:
            if part.classes != datasets[0].classes:
                raise DatasetError(f"cannot join datasets with different classes: {datasets[0].classes} vs "
                                   f"{part.classes}")
        check_disjoint(datasets, self.overlap_hint)
        super().__init__(datasets)
        self.classes = list(datasets[0].classes)
        self.transforms = datasets[0].transforms

    @property
    def skipped(self) -> list[str]:
        return [path for part in self.datasets for path in part.skipped]

    @property
    def num_without_boxes(self) -> int:
        return sum(part.num_without_boxes for part in self.datasets)

    @property
    def has_annotations(self) -> bool:
        return all(part.has_annotations for part in self.datasets)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def locate(self, index: int) -> tuple[DetectionDataset, int]:
        if index < 0:
            index += len(self)
        part = bisect.bisect_right(self.cumulative_sizes, index)
        offset = self.cumulative_sizes[part - 1] if part else 0
        return self.datasets[part], index - offset

    def _offset(self, index: int) -> int:
        return index - self.locate(index)[1]

    def image_info(self, index: int) -> dict[str, Any]:
        part, local = self.locate(index)
        info = dict(part.image_info(local))
        info["image_id"] = int(info["image_id"]) + self._offset(index)
        return info

    def __getitem__(self, index: int) -> Sample | None:
        part, local = self.locate(index)
        sample = part[local]
        if sample is not None:
            sample[1]["image_id"] = int(sample[1]["image_id"]) + self._offset(index)
        return sample
