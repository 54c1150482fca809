"""ImageNet DET (ILSVRC 2013–2015 layout), 200 classes identified by WordNet id.

Layout under ``root`` (the ``ILSVRC`` folder, or its parent)::

    Data/DET/<data_split>/<name>.JPEG
    Annotations/DET/<data_split>/<name>.xml        PASCAL-style XML, <name> is the wnid
    ImageSets/DET/<split>.txt                      lines "<image_name> <image_index>"
    devkit/data/map_det.txt                        lines "<wnid> <class_index> <name>"

Supported splits: ``train`` (the single-file ``train.txt`` form; the per-class ``train_<k>.txt`` lists with
``1|-1`` flags are not read), ``val``, and R-CNN's ``val1`` / ``val2`` halves of val (``ImageSets/DET/val1.txt``
and ``val2.txt``, or files given as ``val1_file`` / ``val2_file`` / ``split_file``; their images live in
``Data/DET/val``); :class:`ImageNetDetDataset` also takes ``+``-joined splits such as R-CNN's ``train+val1``.
``test`` (``Data/DET/test``) has no public annotations: its images come with empty targets, ``has_annotations`` is
False and testing writes the submission file. Val images (and val1/val2) are evaluated with the devkit's
blacklist (``blacklist_file``, else the devkit's own, ``detection.devkit.find_det_blacklist``); its image indices
are val's, so val1/val2 lists must keep val's ``<image_index>``. ``target["image_id"]`` is the
``<image_index>`` of the split file (the id used in ILSVRC result files); labels follow ``class_index`` order,
``label_to_class_index`` maps back for the devkit. Boxes are converted as in docs/DESIGN.md (``x1 = xmin - 1``, ...).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from detection.data.base import (
    Annotation,
    ConcatDetectionDataset,
    DetectionDataset,
    EvalProtocol,
    check_root,
    image_file_size,
    unannotated,
)
from detection.data.errors import DatasetError
from detection.data.io import safe_join
from detection.data.splits import split_parts
from detection.data.transforms import DetectionTransform
from detection.data.voc import load_pascal_annotation
from detection.devkit import find_det_blacklist, read_class_map, read_ilsvrc_split

MAP_FILE = "devkit/data/map_det.txt"


def find_ilsvrc(root: str | Path) -> Path:
    root = Path(root)
    return root / "ILSVRC" if (root / "ILSVRC").is_dir() else root


class ImageNetDetection(DetectionDataset):
    """One ILSVRC DET split. ``classes`` are the human-readable names, ``wnids`` the WordNet ids (same order),
    ``label_to_class_index`` maps labels to the devkit's class index of ``map_det.txt``."""

    protocol: ClassVar[EvalProtocol] = "imagenet_det"

    def __init__(
        self,
        root: str | Path,
        split: str,
        transforms: DetectionTransform | None = None,
        *,
        train: bool = False,
        filter_empty: bool | None = None,
        strict: bool = False,
        split_file: str | Path | None = None,
        val1_file: str | Path | None = None,
        val2_file: str | Path | None = None,
        data_split: str | None = None,
        blacklist_file: str | Path | None = None,
    ) -> None:
        super().__init__(transforms, train=train, filter_empty=filter_empty, strict=strict)
        self.root = find_ilsvrc(root)
        self.split = split
        self.data_split = data_split or ("train" if split.startswith("train") else "test" if split == "test" else "val")
        # ILSVRC DET test annotations were never released: the split is for the evaluation server.
        self.has_annotations = self.data_split != "test"
        if not self.has_annotations:
            unannotated(f"ILSVRC DET {split}", self.train)
        check_root(self.root, MAP_FILE, f"Data/DET/{self.data_split}",
                   *((f"Annotations/DET/{self.data_split}",) if self.has_annotations else ()))
        split_file = split_file or {"val1": val1_file, "val2": val2_file}.get(split)
        if split_file is None:
            check_root(self.root, f"ImageSets/DET/{split}.txt")
        self.split_file = Path(split_file) if split_file else self.root / "ImageSets" / "DET" / f"{split}.txt"

        # The devkit's (image_index, wnid) pairs that evaluation skips: given, else the devkit's own for val images.
        self.blacklist_file: Path | None = Path(blacklist_file) if blacklist_file else None
        if self.blacklist_file is None and self.data_split == "val":
            self.blacklist_file = find_det_blacklist(self.root)
        if self.blacklist_file is not None and not self.blacklist_file.is_file():
            raise DatasetError(f"ILSVRC DET blacklist file not found: {self.blacklist_file}")

        class_map = read_class_map(self.root / MAP_FILE)
        self.wnids: list[str] = [synset.wnid for synset in class_map]
        self.classes = [synset.name for synset in class_map]
        self.label_to_class_index: dict[int, int] = {
            label: synset.index for label, synset in enumerate(class_map, start=1)
        }
        wnid_to_label = {wnid: label for label, wnid in enumerate(self.wnids, start=1)}

        self._items: list[tuple[str, int, int, int, Annotation]] = []  # (name, image_index, w, h, annotation)
        for name, image_index in read_ilsvrc_split(self.split_file):
            what = f"{self.split_file}: image name"
            xml = safe_join(self.root / "Annotations" / "DET" / self.data_split, f"{name}.xml", what=what)
            image = safe_join(self.root / "Data" / "DET" / self.data_split, f"{name}.JPEG", what=what)
            for path, kind in ((xml, "annotation"), (image, "image"))[0 if self.has_annotations else 1 :]:
                if not path.is_file():
                    raise DatasetError(f"{self.split_file} names {name!r} but its {kind} {path} is missing")
            if not self.has_annotations:
                height, width = image_file_size(image)
                self._items.append((name, image_index, width, height, Annotation.empty()))
                continue
            width, height, ann = load_pascal_annotation(xml, wnid_to_label)
            ann.flags.pop("difficult")  # ILSVRC has no difficult flag
            if self.filter_empty and len(ann.boxes) == 0:
                self.num_without_boxes += 1
                continue
            self._items.append((name, image_index, width, height, ann))

    def __len__(self) -> int:
        return len(self._items)

    @property
    def description(self) -> str:
        return f"ILSVRC DET {self.split} ({self.split_file})"

    def image_info(self, index: int) -> dict[str, Any]:
        name, image_index, width, height, _ = self._items[index]
        return {"height": height, "width": width, "file_name": f"{name}.JPEG", "image_id": image_index}

    def image_path(self, index: int) -> Path:
        return self.root / "Data" / "DET" / self.data_split / f"{self._items[index][0]}.JPEG"

    def annotation(self, index: int) -> Annotation:
        return self._items[index][4]


class ImageNetDetDataset(ConcatDetectionDataset):
    """ImageNet DET for a split or a ``+``-joined list of splits (``"val2"``, ``"train+val1"``); keyword arguments
    go to each :class:`ImageNetDetection` part. ``wnids`` and ``label_to_class_index`` are the parts' (one class
    map); other attributes of a single part (``split_file``) are ``dataset.datasets[0]``'s."""

    datasets: list[ImageNetDetection]
    protocol: ClassVar[EvalProtocol] = "imagenet_det"

    def __init__(self, root: str | Path, split: str, transforms: DetectionTransform | None = None,
                 **kwargs: Any) -> None:
        super().__init__([ImageNetDetection(root, s, transforms, **kwargs) for s in split_parts(split)])
        self.wnids: list[str] = self.datasets[0].wnids
        self.label_to_class_index: dict[int, int] = self.datasets[0].label_to_class_index
        self.blacklist_file: Path | None = next((d.blacklist_file for d in self.datasets if d.blacklist_file), None)
