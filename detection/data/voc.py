"""PASCAL VOC: ``VOCdevkit/VOC<year>/{Annotations,JPEGImages,ImageSets/Main}``, one year+split or a union.

XML boxes are 1-based inclusive pixels; internally ``x1 = xmin - 1, y1 = ymin - 1, x2 = xmax, y2 = ymax``.
``target["image_id"]`` is the image's index in the split list (offset per part in unions), ``target["difficult"]``
flags difficult objects; training mode drops them (``keep_difficult``) and images left empty (``filter_empty``).

Split specs accepted by :class:`VOCDataset` (and ``build_dataset("voc", ...)``): ``"2007_test"``,
``"2012_trainval"``; a bare split (``"trainval"``, ``"train"``, ``"val"``) for every year present under the root,
``"test"`` for VOC2007 test; the paper's ``"07+12"`` (07 trainval + 12 trainval) and ``"07++12"``
(07 trainval + 07 test + 12 trainval); and any ``+``-joined list of ``<year>_<split>``. ``"2012_test"`` (any year
after 2007) has no public annotations: its images come with empty targets and ``has_annotations`` is False.

Own data in the same format needs no ``VOC<year>`` folder: a root that itself holds ``Annotations/``,
``JPEGImages/`` and ``ImageSets/Main/`` is one dataset whose splits are named bare (``"train"``, ``"test"``,
``"train+val"``). Its classes are ``classes=`` (config ``data.classes``), else ``<root>/classes.txt`` (one name a
line, label order), else the 20 VOC classes; it is scored with the area AP of VOC2010 on (docs/custom_data.md).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from detection.data.base import (
    Annotation,
    ConcatDetectionDataset,
    DetectionDataset,
    EvalProtocol,
    check_root,
    clean_boxes,
    image_file_size,
    unannotated,
)
from detection.data.errors import DatasetError
from detection.data.io import safe_join
from detection.data.splits import split_parts
from detection.data.transforms import DetectionTransform
from detection.devkit import VOC_CLASSES, from_devkit_boxes, read_pascal_xml, read_voc_split, voc_uses_07_metric

PAPER_UNIONS = {"07+12": "2007_trainval+2012_trainval", "07++12": "2007_trainval+2007_test+2012_trainval"}


def load_pascal_annotation(path: Path, class_to_label: Mapping[str, int]) -> tuple[int, int, Annotation]:
    """``(width, height, annotation)`` of a PASCAL XML file (VOC and ILSVRC) in the toolkit's conventions.

    Boxes are converted from the devkit's 1-based inclusive pixels to internal xyxy, clipped to the image, and
    degenerate ones dropped with a warning; labels come from ``class_to_label`` (another class name is a
    :class:`DatasetError` listing the known ones); flags: ``difficult``.
    """
    xml = read_pascal_xml(path, classes=class_to_label)
    boxes = from_devkit_boxes([o.box for o in xml.objects])
    labels = np.array([class_to_label[o.name] for o in xml.objects], dtype=np.int64)
    difficult = np.array([o.difficult for o in xml.objects], dtype=bool)
    names = [f"object {i} ({o.name})" for i, o in enumerate(xml.objects)]
    keep = clean_boxes(boxes, width=xml.width, height=xml.height, file=path, objects=names)
    return xml.width, xml.height, Annotation(boxes, labels, {"difficult": difficult}).select(keep)


def find_devkit(root: str | Path) -> Path:
    """``root`` itself or ``root/VOCdevkit`` when that exists."""
    root = Path(root)
    return root / "VOCdevkit" if (root / "VOCdevkit").is_dir() else root


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def is_voc_folder(root: str | Path) -> bool:
    """Whether ``root`` is itself a VOC-format folder (own data: ``Annotations/`` and ``ImageSets/Main/`` directly
    under it, no ``VOC<year>`` level)."""
    root = Path(root)
    return (root / "Annotations").is_dir() and (root / "ImageSets" / "Main").is_dir()


def voc_classes(folder: Path, classes: list[str] | None = None) -> list[str]:
    """The class names of a VOC-format folder, in label order: ``classes`` if given, else ``folder/classes.txt``
    (one name a line; blank lines and ``#`` comments ignored), else the 20 VOC classes."""
    if classes:
        names = [str(c) for c in classes]
        where = "data.classes"
    elif (folder / "classes.txt").is_file():
        names = [line.strip() for line in (folder / "classes.txt").read_text(encoding="utf-8").splitlines()]
        names = [n for n in names if n and not n.startswith("#")]
        where = str(folder / "classes.txt")
    else:
        return list(VOC_CLASSES)
    if not names:
        raise DatasetError(f"{where}: no class names")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DatasetError(f"{where}: class names repeated: {', '.join(repeated)}")
    return names


class VOCDetection(DetectionDataset):
    """One year and split, e.g. ``VOCDetection(root, "2007", "test")``; ``root`` is ``VOCdevkit`` or its parent.
    With ``year=""`` the root is itself the VOC-format folder (own data; see the module docstring).

    Scored with the devkit's AP for ``year``: ``use_07_metric`` (11-point for VOC2007, area for VOC2010 on and for
    own data).
    """

    protocol: ClassVar[EvalProtocol] = "voc"

    def __init__(
        self,
        root: str | Path,
        year: str,
        split: str,
        transforms: DetectionTransform | None = None,
        *,
        train: bool = False,
        keep_difficult: bool | None = None,
        filter_empty: bool | None = None,
        strict: bool = False,
        classes: list[str] | None = None,
    ) -> None:
        super().__init__(transforms, train=train, filter_empty=filter_empty, strict=strict)
        self.year, self.split = str(year), split
        self.keep_difficult = not self.train if keep_difficult is None else keep_difficult
        self.year_dir = find_devkit(root) / f"VOC{self.year}" if self.year else Path(root)
        # Only VOC2007's test annotations were released; a later year's test split is for the evaluation server.
        self.has_annotations = not (split == "test" and self.year not in ("", "2007"))
        if not self.has_annotations:
            unannotated(f"VOC{self.year} {split}", self.train)
        check_root(self.year_dir, *(("Annotations",) if self.has_annotations else ()), "JPEGImages", "ImageSets/Main")
        self.classes = voc_classes(self.year_dir, classes)
        self.split_file = self.year_dir / "ImageSets" / "Main" / f"{split}.txt"
        self._names = read_voc_split(self.split_file)
        class_to_label = {name: k for k, name in enumerate(self.classes, start=1)}
        self._items: list[tuple[int, int, int, Annotation]] = []  # (split index, width, height, annotation)
        self._files: dict[int, str] = {}  # split index → image file name (own data may be .png)
        for index, name in enumerate(self._names):
            xml = safe_join(self.year_dir / "Annotations", f"{name}.xml", what=f"{self.split_file}: image name")
            if self.has_annotations and not xml.is_file():
                raise DatasetError(f"{self.split_file} names {name!r} but its annotation {xml} is missing")
            image = next((p for p in (safe_join(self.year_dir / "JPEGImages", name + suffix)
                                      for suffix in IMAGE_SUFFIXES) if p.is_file()), None)
            if image is None:
                raise DatasetError(f"{self.split_file} names {name!r} but its image {self.year_dir}/JPEGImages/"
                                   f"{name}.jpg is missing (also looked for {'/'.join(IMAGE_SUFFIXES[1:])})")
            self._files[index] = image.name
            if not self.has_annotations:
                height, width = image_file_size(image)
                self._items.append((index, width, height, Annotation.empty("difficult")))
                continue
            width, height, ann = load_pascal_annotation(xml, class_to_label)
            if not self.keep_difficult:
                ann = ann.select(~ann.flags["difficult"])
            if self.filter_empty and len(ann.boxes) == 0:
                self.num_without_boxes += 1
                continue
            self._items.append((index, width, height, ann))

    @property
    def use_07_metric(self) -> bool:
        # A VOC<year> folder passed as the root itself keeps its year's devkit rule; own data gets the area AP.
        year = self.year
        if not year and re.fullmatch(r"VOC\d{4}", self.year_dir.name):
            year = self.year_dir.name[3:]
        return voc_uses_07_metric(year) if year else False

    def image_names(self) -> list[str]:
        """Image names of the whole split file, in its order (what the devkit's evaluation iterates)."""
        return list(self._names)

    @property
    def description(self) -> str:
        return f"VOC{self.year} {self.split}" if self.year else f"{self.split_file}"

    def __len__(self) -> int:
        return len(self._items)

    def image_info(self, index: int) -> dict[str, Any]:
        split_index, width, height, _ = self._items[index]
        return {"height": height, "width": width, "file_name": self._files[split_index], "image_id": split_index}

    def image_path(self, index: int) -> Path:
        return self.year_dir / "JPEGImages" / self._files[self._items[index][0]]

    def annotation(self, index: int) -> Annotation:
        return self._items[index][3]


def years_present(root: str | Path) -> list[str]:
    """Years with a ``VOC<year>`` folder under the devkit, sorted; :class:`DatasetError` when there is none."""
    check_root(Path(root))
    devkit = find_devkit(root)
    years = sorted(p.name[3:] for p in devkit.glob("VOC[0-9][0-9][0-9][0-9]") if p.is_dir())
    if not years:
        raise DatasetError(f"no VOC<year> folder under {devkit} (expected e.g. {devkit}/VOC2007)")
    return years


def parse_split_spec(root: str | Path, spec: str) -> list[tuple[str, str]]:
    """``(year, split)`` pairs for a split spec (see the module docstring)."""
    if is_voc_folder(root):  # own data: one folder, bare split names
        return [("", part) for part in split_parts(spec)]
    spec = "+".join(split_parts(spec, PAPER_UNIONS))
    if spec == "test":  # VOC2007 is the only year whose test annotations were released
        return [("2007", "test")]
    if spec in ("trainval", "train", "val"):
        return [(year, spec) for year in years_present(root)]
    pairs = []
    for part in split_parts(spec):
        year, sep, split = part.partition("_")
        if not sep or not year.isdigit() or not split:
            raise DatasetError(f"VOC split {part!r} in {spec!r} is not '<year>_<split>' (e.g. 2007_test), "
                               f"a bare split, '07+12' or '07++12'")
        pairs.append((year, split))
    return pairs


class VOCDataset(ConcatDetectionDataset):
    """VOC for a split spec (``"07+12"``, ``"2007_test"``, ...): the union of :class:`VOCDetection` parts.

    What the devkit evaluation needs (``year``, ``split``, ``year_dir``, ``use_07_metric``, :meth:`image_names`)
    is that of the single part; a union raises :class:`DatasetError` (evaluate one split at a time).
    """

    datasets: list[VOCDetection]
    protocol: ClassVar[EvalProtocol] = "voc"

    def __init__(self, root: str | Path, split: str, transforms: DetectionTransform | None = None,
                 **kwargs: Any) -> None:
        self.spec = split
        super().__init__([VOCDetection(root, y, s, transforms, **kwargs) for y, s in parse_split_spec(root, split)])

    def _single(self) -> VOCDetection:
        if len(self.datasets) != 1:
            raise DatasetError(f"VOC split {self.spec!r} joins {len(self.datasets)} splits; evaluate one at a time")
        return self.datasets[0]

    @property
    def year(self) -> str:
        return self._single().year

    @property
    def split(self) -> str:
        return self._single().split

    @property
    def year_dir(self) -> Path:
        return self._single().year_dir

    @property
    def use_07_metric(self) -> bool:
        return self._single().use_07_metric

    def image_names(self) -> list[str]:
        return self._single().image_names()
