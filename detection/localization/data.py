"""ImageNet CLS-LOC in its distributed layout: the reader, a generator of small roots in the same layout, and the
localiser's training samples.

Layout (``root`` holds ``ILSVRC/`` and the challenge's CSVs; a root that is ``ILSVRC/`` itself also works when the
CSVs sit beside it)::

    root/LOC_synset_mapping.txt                 <wnid> <names>, one class a line (the class order)
    root/LOC_train_solution.csv, LOC_val_solution.csv     ImageId,PredictionString ("wnid xmin ymin xmax ymax" ...)
    root/ILSVRC/Data/CLS-LOC/train/<wnid>/<wnid>_<n>.JPEG, val/ILSVRC2012_val_<8 digits>.JPEG
    root/ILSVRC/Annotations/CLS-LOC/train/<wnid>/<wnid>_<n>.xml, val/ILSVRC2012_val_<8 digits>.xml
    root/ILSVRC/ImageSets/CLS-LOC/train_cls.txt, train_loc.txt, val.txt

Boxes come from the XMLs when the split's annotation folder exists, else from the solution CSV. Only training
images with boxes train the localiser (a few hundred thousand of the 1.28M on the real data). Records keep devkit
boxes; :class:`LocTrainDataset` turns them into the toolkit's 0-based continuous xyxy (docs/DESIGN.md).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from detection.data.errors import DatasetError
from detection.data.io import read_image
from detection.data.shapes import SHAPE_CLASSES, _background, _shape_mask
from detection.devkit import (
    Box,
    from_devkit_boxes,
    read_loc_solution,
    read_loc_synset_mapping,
    read_pascal_xml,
)

__all__ = [
    "LocRecord",
    "ClsLocData",
    "find_cls_loc_root",
    "read_cls_loc",
    "LocTrainDataset",
    "random_crop_with_boxes",
    "generate_cls_loc",
    "write_imagefolder_view",
]


@dataclass(frozen=True)
class LocRecord:
    """One image: its ``ImageId``, file, class index (into ``ClsLocData.wnids``) and its boxes (devkit, 1-based)."""

    image_id: str
    path: Path
    label: int
    boxes: tuple[tuple[str, Box], ...]


@dataclass
class ClsLocData:
    wnids: list[str]
    names: list[str]
    records: list[LocRecord]


def find_cls_loc_root(root: Path) -> tuple[Path, Path]:
    """``(folder with the CSVs and the mapping, ILSVRC folder)`` for ``root`` = either of them."""
    root = Path(root)
    for top, ilsvrc in ((root, root / "ILSVRC"), (root.parent, root)):
        if (top / "LOC_synset_mapping.txt").is_file() and (ilsvrc / "Data" / "CLS-LOC").is_dir():
            return top, ilsvrc
    raise DatasetError(
        f"{root}: not a CLS-LOC root: expected LOC_synset_mapping.txt beside ILSVRC/Data/CLS-LOC/ (in {root} or "
        f"{root.parent})"
    )


def read_cls_loc(root: Path, split: str) -> ClsLocData:
    """The images of ``split`` ("train": only those with boxes; "val": all) with their boxes.

    Raises ``DatasetError`` naming the file at fault (unknown wnid, missing image, no boxes anywhere).
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    top, ilsvrc = find_cls_loc_root(root)
    mapping = read_loc_synset_mapping(top / "LOC_synset_mapping.txt")
    wnids = [w for w, _ in mapping]
    index = {w: i for i, w in enumerate(wnids)}
    xml_dir = ilsvrc / "Annotations" / "CLS-LOC" / split
    if xml_dir.is_dir():
        pattern = "*/*.xml" if split == "train" else "*.xml"
        boxes = {
            p.stem: [(o.name, o.box) for o in read_pascal_xml(p, index).objects] for p in sorted(xml_dir.glob(pattern))
        }
    else:
        csv = top / f"LOC_{split}_solution.csv"
        if not csv.is_file():
            raise DatasetError(f"{xml_dir}: no annotations, and no {csv} either")
        boxes = read_loc_solution(csv, index)
    records = []
    for image_id, objects in sorted(boxes.items()):
        if not objects:
            continue
        if split == "train":
            wnid = image_id.split("_")[0]
            path = ilsvrc / "Data" / "CLS-LOC" / "train" / wnid / f"{image_id}.JPEG"
        else:
            wnid = objects[0][0]  # one class per image in CLS-LOC
            path = ilsvrc / "Data" / "CLS-LOC" / "val" / f"{image_id}.JPEG"
        if wnid not in index:
            raise DatasetError(f"{image_id}: class {wnid!r} is not in {top / 'LOC_synset_mapping.txt'}")
        records.append(LocRecord(image_id, path, index[wnid], tuple(objects)))
    if not records:
        raise DatasetError(f"{ilsvrc}: no {split} images with boxes")
    return ClsLocData(wnids, [n for _, n in mapping], records)


# ---------------------------------------------------------------------------------------------- training samples


def random_crop_with_boxes(
    image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator, crop: int, scale_range: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """The classification training view (Sec. 3.4) with its boxes: shorter side uniform in ``scale_range``, a random
    ``crop`` x ``crop`` window, a horizontal flip half of the time.

    ``image`` HWC uint8, ``boxes`` ``[G, 4]`` 0-based xyxy → the crop and its boxes clipped to it, keeping those with
    at least half of their area and 4 pixels a side inside (a sliver of an object is not a target).
    """
    h, w = image.shape[:2]
    short = int(rng.integers(scale_range[0], scale_range[1] + 1))
    scale = short / min(h, w)
    new_w, new_h = max(crop, round(w * scale)), max(crop, round(h * scale))
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    top, left = int(rng.integers(0, new_h - crop + 1)), int(rng.integers(0, new_w - crop + 1))
    out = resized[top : top + crop, left : left + crop]
    b = boxes * np.array([new_w / w, new_h / h, new_w / w, new_h / h], np.float32) - [left, top, left, top]
    clipped = b.clip(0, crop)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    kept_area = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    keep = (kept_area >= 0.5 * area) & (clipped[:, 2] - clipped[:, 0] >= 4) & (clipped[:, 3] - clipped[:, 1] >= 4)
    clipped = clipped[keep]
    if rng.random() < 0.5:
        out = out[:, ::-1]
        clipped = np.stack([crop - clipped[:, 2], clipped[:, 1], crop - clipped[:, 0], clipped[:, 3]], 1)
    return np.ascontiguousarray(out), clipped.reshape(-1, 4).astype(np.float32)


class LocTrainDataset(Dataset):
    """``dataset[(i, epoch)]`` → ``(uint8 [3, crop, crop], boxes [G, 4] xyxy of the image's class, label)``.

    The crop is a pure function of ``(seed, epoch, i)``, so a resumed run reads the same samples.
    """

    def __init__(self, records: list[LocRecord], wnids: list[str], crop: int, scale_range: tuple[int, int],
                 seed: int = 0) -> None:  # fmt: skip
        self.records, self.wnids, self.crop, self.scale_range, self.seed = records, wnids, crop, scale_range, seed

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Tensor, Tensor, int]:
        index, epoch = key
        record = self.records[index]
        image, _ = read_image(record.path)
        own = [b for w, b in record.boxes if w == self.wnids[record.label]]
        rng = np.random.default_rng((self.seed, epoch + 1, index))
        crop, boxes = random_crop_with_boxes(image, from_devkit_boxes(own), rng, self.crop, tuple(self.scale_range))
        return torch.from_numpy(crop.transpose(2, 0, 1).copy()), torch.from_numpy(boxes), record.label


def collate_loc(batch: list[tuple[Tensor, Tensor, int]]) -> tuple[Tensor, list[Tensor], Tensor]:
    images, boxes, labels = zip(*batch)
    return torch.stack(images), list(boxes), torch.tensor(labels)


# ---------------------------------------------------------------------------------------------- generated roots

GENERATED_CLASSES = tuple(f"{kind} {shape}" for kind in ("filled", "outlined") for shape in SHAPE_CLASSES)


def _class_colour(rng: np.random.Generator, label: int) -> np.ndarray:
    """A saturated RGB colour of the class's own hue (10 hues around the circle), brightness and saturation random:
    as ImageNet classes have characteristic looks, so that a small classifier trained for a minute tells them apart
    (the quickstart's bar is on localisation)."""
    hsv = np.array([[[round(label * 18 + rng.uniform(-3, 3)) % 180, rng.uniform(170, 255), rng.uniform(170, 255)]]])
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def _draw_object(image: np.ndarray, rng: np.random.Generator, label: int, min_frac: float) -> tuple[int, ...]:
    """Draw one object of class ``label`` in place; returns its tight devkit box (1-based inclusive)."""
    h, w = image.shape[:2]
    shape = SHAPE_CLASSES[label % len(SHAPE_CLASSES)]
    side = float(np.exp(rng.uniform(np.log(min_frac), np.log(0.9)))) * min(h, w)
    aspect = float(np.exp(rng.uniform(-0.25, 0.25)))
    bw, bh = int(np.clip(round(side * aspect), 12, w)), int(np.clip(round(side / aspect), 12, h))
    x, y = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
    mask = _shape_mask(shape, h, w, (x, y, bw, bh))
    if label >= len(SHAPE_CLASSES):  # the outlined twin: the shape's border only, a sixth of its size thick
        thick = max(2, min(bw, bh) // 6)
        mask = mask - cv2.erode(mask, np.ones((2 * thick + 1, 2 * thick + 1), np.uint8))
    region = mask.astype(bool)
    image[region] = _class_colour(rng, label) + rng.normal(0, 6, size=3)
    bx, by, bw, bh = cv2.boundingRect(mask)
    return bx + 1, by + 1, bx + bw, by + bh


def _render(rng: np.random.Generator, label: int, min_size: int, max_size: int) -> tuple[np.ndarray, list]:
    short = int(rng.integers(min_size, (min_size + max_size) // 2 + 1))
    long = int(rng.integers(short, max_size + 1))
    h, w = (short, long) if rng.random() < 0.5 else (long, short)
    background = _background(rng, h, w)
    # Mostly grey backgrounds: the objects' colours stand out whatever their hue.
    image = 0.35 * background + 0.65 * background.mean(axis=2, keepdims=True)
    boxes = [_draw_object(image, rng, label, 0.35)]
    if rng.random() < 0.15:  # now and then a second, smaller instance of the same class (as on ImageNet)
        boxes.append(_draw_object(image, rng, label, 0.25))
    image += rng.normal(0, rng.uniform(2, 6), size=image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8), boxes


def _write_xml(path: Path, image_id: str, folder: str, size: tuple[int, int], wnid: str, boxes: list) -> None:
    objects = "".join(
        f"<object><name>{wnid}</name><pose>Unspecified</pose><truncated>0</truncated><difficult>0</difficult>"
        f"<bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for b in boxes
    )
    path.write_text(
        f"<annotation><folder>{folder}</folder><filename>{image_id}</filename><source><database>ILSVRC_2012"
        f"</database></source><size><width>{size[1]}</width><height>{size[0]}</height><depth>3</depth></size>"
        f"<segmented>0</segmented>{objects}</annotation>\n"
    )


def generate_cls_loc(root: Path, *, num_classes: int = 10, train_per_class: int = 40, num_val: int = 100,
                     min_size: int = 80, max_size: int = 128, seed: int = 0) -> Path:  # fmt: skip
    """Write a small CLS-LOC root (the layout above, XMLs and CSVs both) and return it; kept if already complete.

    Classes are the ``shapes`` shapes, filled and outlined (10 at most), each in its own hue; each image has one
    object of its class (now and then two) on a textured, mostly grey background. Every image is a pure function
    of ``(seed, split, index)``.
    """
    root = Path(root)
    if (root / "LOC_val_solution.csv").is_file():
        return root
    if not 1 <= num_classes <= len(GENERATED_CLASSES):
        raise ValueError(f"num_classes must be in 1..{len(GENERATED_CLASSES)}, got {num_classes}")
    ilsvrc = root / "ILSVRC"
    wnids = [f"n{9000001 + k:08d}" for k in range(num_classes)]
    rows: dict[str, list[str]] = {"train": [], "val": []}
    sets: dict[str, list[str]] = {"train_cls": [], "train_loc": [], "val": []}
    jobs = [("train", k * train_per_class + i, k) for k in range(num_classes) for i in range(train_per_class)]
    jobs += [("val", i, int(np.random.default_rng((seed, 2, i)).integers(num_classes))) for i in range(num_val)]
    for split, i, label in jobs:
        rng = np.random.default_rng((seed, 0 if split == "train" else 1, i))
        image, boxes = _render(rng, label, min_size, max_size)
        wnid = wnids[label]
        image_id = f"{wnid}_{i}" if split == "train" else f"ILSVRC2012_val_{i + 1:08d}"
        sub = f"train/{wnid}" if split == "train" else "val"
        for kind in ("Data", "Annotations"):
            (ilsvrc / kind / "CLS-LOC" / sub).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(ilsvrc / "Data" / "CLS-LOC" / sub / f"{image_id}.JPEG"), image[:, :, ::-1],
                    [cv2.IMWRITE_JPEG_QUALITY, 92])  # fmt: skip
        _write_xml(ilsvrc / "Annotations" / "CLS-LOC" / sub / f"{image_id}.xml", image_id, sub, image.shape[:2],
                   wnid, boxes)  # fmt: skip
        rows[split].append(f"{image_id}," + " ".join(f"{wnid} {b[0]} {b[1]} {b[2]} {b[3]}" for b in boxes))
        if split == "train":
            sets["train_cls"].append(f"{wnid}/{image_id} {len(sets['train_cls']) + 1}")
            sets["train_loc"].append(f"{wnid}/{image_id} {len(sets['train_loc']) + 1}")
        else:
            sets["val"].append(f"{image_id} {i + 1}")
    (ilsvrc / "ImageSets" / "CLS-LOC").mkdir(parents=True, exist_ok=True)
    for name, lines in sets.items():
        (ilsvrc / "ImageSets" / "CLS-LOC" / f"{name}.txt").write_text("\n".join(lines) + "\n")
    (root / "LOC_synset_mapping.txt").write_text(
        "".join(f"{w} {GENERATED_CLASSES[k]}\n" for k, w in enumerate(wnids))
    )
    (root / "LOC_train_solution.csv").write_text("ImageId,PredictionString\n" + "\n".join(rows["train"]) + "\n")
    # Written last: its presence marks a complete root.
    (root / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n" + "\n".join(rows["val"]) + "\n")
    return root


def write_imagefolder_view(root: Path, out: Path) -> Path:
    """``out/{train,val}/<wnid>/`` symlinks to the CLS-LOC images, so ``tools/train_cls.py --dataset imagefolder``
    pre-trains the classifier on them (train: every training image; val: by the val boxes' class)."""
    out = Path(out)
    for split in ("train", "val"):
        data = read_cls_loc(root, split)
        for record in data.records:
            link = out / split / data.wnids[record.label] / record.path.name
            if not link.exists():
                link.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(record.path.resolve(), link)
    return out
