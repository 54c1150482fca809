"""The PASCAL VOC and ILSVRC devkits' file formats, read in one place for the datasets and the evaluation.

``detection/data`` turns these files into training and test samples; ``detection/evaluation`` reads them as the
ground truth of the official metrics (``tools/eval_voc.py``, ``tools/eval_imagenet.py``). Both go through here.

- PASCAL XML annotations (VOC and ILSVRC DET / CLS-LOC): :func:`read_pascal_xml` gives the image size and the
  objects with their boxes as written: ``(xmin, ymin, xmax, ymax)``, 1-based inclusive pixels.
  :func:`from_devkit_boxes` / :func:`to_devkit_boxes` convert to and from the toolkit's 0-based continuous xyxy
  (docs/DESIGN.md, "Box conventions").
- VOC: :data:`VOC_CLASSES` (devkit order; label ``k`` is ``VOC_CLASSES[k - 1]``), :func:`read_voc_split`
  (``ImageSets/Main/<split>.txt``) and :func:`voc_uses_07_metric` (which AP the devkit of that year computes).
- COCO: :func:`read_coco_instances` (``instances_<split>.json``, validated and completed the same way for the
  training loader and ``tools/eval_coco.py``'s ground truth).
- ILSVRC DET: :func:`read_class_map` (``devkit/data/map_det.txt``, lines ``<wnid> <class_index> <name>``) and
  :func:`read_ilsvrc_split` (``ImageSets/DET/<split>.txt``, lines ``<image_name> <image_index>``);
  :func:`find_det_blacklist` (the devkit's validation blacklist, lines ``<image_index> <wnid>``).
- ILSVRC CLS-LOC (the challenge's files beside ``ILSVRC/``): :func:`read_loc_synset_mapping`
  (``LOC_synset_mapping.txt``, lines ``<wnid> <names>``) and :func:`read_loc_solution` (``LOC_train_solution.csv`` /
  ``LOC_val_solution.csv``: ``ImageId,PredictionString`` with ``wnid xmin ymin xmax ymax`` groups, devkit boxes).

Every reader raises :class:`~detection.errors.DevkitError` naming the file and the line or object; it is both a
``DatasetError`` and an ``EvaluationInputError``.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from detection.errors import DevkitError
from detection.files import read_json, read_text_file

__all__ = [
    "VOC_CLASSES",
    "Box",
    "DevkitError",
    "PascalAnnotation",
    "PascalObject",
    "Synset",
    "find_det_blacklist",
    "from_devkit_boxes",
    "numbered_lines",
    "parse_coordinate",
    "read_class_map",
    "read_coco_instances",
    "read_ilsvrc_split",
    "read_loc_solution",
    "read_loc_synset_mapping",
    "read_pascal_xml",
    "read_voc_split",
    "to_devkit_boxes",
    "voc_uses_07_metric",
]

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
    "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip

Box = tuple[float, float, float, float]


def voc_uses_07_metric(year: str | int) -> bool:
    """Whether the VOC devkit of ``year`` scores with the 11-point AP (VOC2007 and before; py-faster-rcnn's
    ``int(year) < 2010``) rather than the area under the monotone precision envelope (VOC2010 on)."""
    return int(year) < 2010


# ---------------------------------------------------------------------------------------------- boxes


def from_devkit_boxes(boxes: Any) -> np.ndarray:
    """Devkit boxes ``[N, 4]`` (1-based inclusive ``xmin ymin xmax ymax``) → internal 0-based continuous xyxy
    float32 ``[N, 4]``: ``(xmin - 1, ymin - 1, xmax, ymax)``."""
    out = np.asarray(boxes, dtype=np.float32).reshape(-1, 4).copy()
    out[:, :2] -= 1.0
    return out


def to_devkit_boxes(boxes: Any) -> np.ndarray:
    """Internal 0-based continuous xyxy ``[N, 4]`` (array, or a CPU tensor without grad) → devkit 1-based float64
    ``[N, 4]``: ``(x1 + 1, y1 + 1, x2, y2)``."""
    out = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
    out[:, :2] += 1.0
    return out


def parse_coordinate(value: Any, *, file: str | Path, obj: str, name: str) -> float:
    """``float(value)``, or a :class:`DevkitError` naming the file, the object and the field for text or NaN."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DevkitError(f"{file}: {obj}: coordinate {name}={value!r} is not a number") from None
    if not math.isfinite(number):
        raise DevkitError(f"{file}: {obj}: coordinate {name}={value!r} is not finite")
    return number


# ---------------------------------------------------------------------------------------------- PASCAL XML


class PascalObject(NamedTuple):
    """One ``<object>``: class name (a VOC name or an ILSVRC wnid), devkit box, ``<difficult>`` (missing = 0)."""

    name: str
    box: Box
    difficult: bool


@dataclass(frozen=True)
class PascalAnnotation:
    """One annotation file: the image size from ``<size>`` and its objects in file order."""

    width: int
    height: int
    objects: list[PascalObject]


def _describe(names: Collection[str], limit: int = 30) -> str:
    shown = ", ".join(sorted(names)[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def read_pascal_xml(path: Path, classes: Collection[str] | None = None) -> PascalAnnotation:
    """Read a PASCAL-style annotation (VOC, ILSVRC DET and CLS-LOC share the schema); boxes stay as written.

    With ``classes``, an object of any other class is an error listing the known ones; without, every object is
    returned. Raises :class:`DevkitError` naming the file (and line or object) for a missing or malformed file, a
    missing ``<size>``, an object without ``<name>`` or ``<bndbox>``, and non-numeric or NaN coordinates.
    """
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        raise DevkitError(f"{path}: annotation file not found") from None
    except ET.ParseError as exc:
        raise DevkitError(f"{path}:{exc.position[0]}: malformed XML ({exc})") from None
    except OSError as exc:
        raise DevkitError(f"{path}: cannot read annotation file: {exc}") from None
    try:
        width, height = (int(root.findtext(f"size/{k}") or "") for k in ("width", "height"))
    except ValueError:
        raise DevkitError(f"{path}: missing or invalid <size><width>/<height>") from None
    if width <= 0 or height <= 0:
        raise DevkitError(f"{path}: <size> gives width {width} and height {height}; both must be positive")
    objects = []
    for i, obj in enumerate(root.iter("object")):
        name = (obj.findtext("name") or "").strip()
        where = f"object {i} ({name})"
        if not name:
            raise DevkitError(f"{path}: object {i}: no <name>")
        if classes is not None and name not in classes:
            raise DevkitError(f"{path}: {where}: unknown class name {name!r}; known: {_describe(classes)}")
        if obj.find("bndbox") is None:
            raise DevkitError(f"{path}: {where}: no <bndbox>")
        xmin, ymin, xmax, ymax = (
            parse_coordinate(obj.findtext(f"bndbox/{k}"), file=path, obj=where, name=k)
            for k in ("xmin", "ymin", "xmax", "ymax")
        )
        difficult = obj.findtext("difficult") or "0"
        try:
            objects.append(PascalObject(name, (xmin, ymin, xmax, ymax), bool(int(difficult))))
        except ValueError:
            raise DevkitError(f"{path}: {where}: <difficult> is {difficult!r}, not an integer") from None
    return PascalAnnotation(width, height, objects)


# ---------------------------------------------------------------------------------------------- list files


def numbered_lines(path: Path, what: str) -> Iterator[tuple[int, list[str], str]]:
    """``(line number, fields, line)`` of each non-empty line; :class:`DevkitError` when the file is missing
    (``what`` names the kind of file in the message)."""
    path = Path(path)
    if not path.is_file():
        raise DevkitError(f"{path}: {what} not found")
    for lineno, line in enumerate(read_text_file(path, DevkitError, what=what).splitlines(), start=1):
        if line.strip():
            yield lineno, line.split(), line


def read_voc_split(path: Path) -> list[str]:
    """Image names of ``ImageSets/Main/<split>.txt`` in file order (first field of each non-empty line).

    Raises :class:`DevkitError` for a missing or empty file.
    """
    names = [fields[0] for _, fields, _ in numbered_lines(path, "split file")]
    if not names:
        raise DevkitError(f"{path}: split file is empty")
    return names


class Synset(NamedTuple):
    """One line of ``map_det.txt``: WordNet id, the devkit's 1-based class index, readable name."""

    wnid: str
    index: int
    name: str


def read_class_map(path: Path) -> list[Synset]:
    """``devkit/data/map_det.txt`` sorted by class index.

    Raises :class:`DevkitError` for a missing or empty file, a malformed line, or a repeated wnid or index.
    """
    entries: list[Synset] = []
    for lineno, _, line in numbered_lines(path, "class map"):
        fields = line.split(maxsplit=2)
        if len(fields) != 3 or not fields[1].isdigit():
            raise DevkitError(f"{path}:{lineno}: expected '<wnid> <class_index> <name>', got {line!r}")
        entries.append(Synset(fields[0], int(fields[1]), fields[2].strip()))
    if not entries:
        raise DevkitError(f"{path}: class map is empty")
    for key, counts in (("wnid", Counter(e.wnid for e in entries)), ("index", Counter(e.index for e in entries))):
        repeated = sorted(value for value, n in counts.items() if n > 1)
        if repeated:
            raise DevkitError(f"{path}: class map repeats {key} {repeated}")
    return sorted(entries, key=lambda e: e.index)


def read_ilsvrc_split(path: Path) -> list[tuple[str, int]]:
    """``[(image_name, image_index)]`` of ``ImageSets/DET/<split>.txt`` in file order; a line holding only the
    name gets its 1-based line number as index.

    Raises :class:`DevkitError` for a missing or empty file, a malformed line, or a repeated image index.
    """
    items: list[tuple[str, int]] = []
    seen: dict[int, str] = {}
    for lineno, fields, line in numbered_lines(path, "split file"):
        if len(fields) > 2 or (len(fields) == 2 and not fields[1].isdigit()):
            raise DevkitError(f"{path}:{lineno}: expected '<image_name> <image_index>', got {line!r}")
        index = int(fields[1]) if len(fields) == 2 else lineno
        if index in seen:
            raise DevkitError(f"{path}:{lineno}: image index {index} of {fields[0]} is also that of {seen[index]}")
        seen[index] = fields[0]
        items.append((fields[0], index))
    if not items:
        raise DevkitError(f"{path}: split file is empty")
    return items


def find_det_blacklist(ilsvrc_root: Path) -> Path | None:
    """The DET validation blacklist the devkit ships (``devkit/data/ILSVRC<year>_det_validation_blacklist.txt``),
    the newest year's if several; ``None`` when there is none. Both the datasets and ``tools/eval_imagenet.py``
    use it, so the numbers of a training run and of the tool agree."""
    found = sorted((Path(ilsvrc_root) / "devkit" / "data").glob("ILSVRC*_det_validation_blacklist.txt"))
    return found[-1] if found else None


# ---------------------------------------------------------------------------------------------- COCO


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _list_of_dicts(data: dict[str, Any], key: str, path: Path) -> list[dict[str, Any]]:
    items = data[key]
    if not isinstance(items, list):
        raise DevkitError(f"{path}: {key!r} must be a list, got {type(items).__name__}")
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise DevkitError(f"{path}: {key}[{i}] must be an object, got {item!r:.80}")
    return items


def read_coco_instances(path: Path, *, image_files: bool = True) -> dict[str, Any]:
    """A COCO instances file (or a test split's image-info file, which has no ``annotations``), validated, as the
    dict pycocotools' ``COCO.dataset`` expects.

    Checked (a :class:`DevkitError` naming the file and the entry): JSON syntax; ``images``, ``annotations`` and
    ``categories`` lists of objects; integer, unique image and category ids; category names; annotations pointing to
    known images and categories; ``bbox`` four finite numbers; ``iscrowd`` 0 or 1 (not ``"0"``, which Python
    would take as true); ``area`` a finite number. With ``image_files`` (the training loader), images also need a
    ``file_name`` and positive integer ``width``/``height``. Completed: a missing ``iscrowd`` is 0, a missing
    ``area`` is ``w * h``, a missing annotation ``id`` gets a fresh one.
    """
    data = read_json(path, DevkitError, what="annotation file")
    if not isinstance(data, dict) or not all(k in data for k in ("images", "categories")):
        raise DevkitError(f"{path}: not a COCO instances file (needs 'images', 'annotations' and 'categories'; "
                          "an image-info file of a test split: 'images' and 'categories')")
    images = _list_of_dicts(data, "images", path)
    # An image-info file (COCO test-dev) has no 'annotations': returned without the key, so callers can tell.
    annotations = _list_of_dicts(data, "annotations", path) if "annotations" in data else []
    categories = _list_of_dicts(data, "categories", path)
    seen: set[int] = set()
    for i, image in enumerate(images):
        if not _is_int(image.get("id")):
            raise DevkitError(f"{path}: images[{i}] has no integer 'id': {image!r:.120}")
        if image["id"] in seen:
            raise DevkitError(f"{path}: duplicate image id {image['id']} ({image.get('file_name')!r})")
        seen.add(image["id"])
        if image_files and (not isinstance(image.get("file_name"), str) or not all(
            _is_int(image.get(k)) and image[k] > 0 for k in ("width", "height")
        )):
            raise DevkitError(f"{path}: image id {image['id']} needs a 'file_name' and positive integer "
                              f"'width'/'height', got {image!r:.200}")
    for i, category in enumerate(categories):
        if not _is_int(category.get("id")) or not isinstance(category.get("name"), str) or not category["name"]:
            raise DevkitError(f"{path}: categories[{i}] needs an integer 'id' and a 'name', got {category!r:.120}")
    cat_ids = sorted(c["id"] for c in categories)
    if len(set(cat_ids)) != len(cat_ids):
        raise DevkitError(f"{path}: duplicate category ids in {cat_ids}")
    known_cats = set(cat_ids)
    next_id = 1 + max((a["id"] for a in annotations if _is_int(a.get("id"))), default=0)
    for ann in annotations:
        if not _is_int(ann.get("id")):
            ann["id"], next_id = next_id, next_id + 1
        obj = f"annotation id {ann['id']} (image {ann.get('image_id')})"
        if ann.get("image_id") not in seen:
            raise DevkitError(f"{path}: {obj} refers to unknown image id {ann.get('image_id')!r}")
        if ann.get("category_id") not in known_cats:
            raise DevkitError(f"{path}: {obj} has unknown category id {ann.get('category_id')!r}; "
                              f"known ids: {cat_ids}")
        bbox = ann.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise DevkitError(f"{path}: {obj} has bbox {bbox!r}, expected [x, y, w, h]")
        ann["bbox"] = [parse_coordinate(v, file=path, obj=obj, name=n) for v, n in zip(bbox, "xywh")]
        ann.setdefault("iscrowd", 0)
        if ann["iscrowd"] not in (0, 1) or isinstance(ann["iscrowd"], float):
            raise DevkitError(f"{path}: {obj} has iscrowd {ann['iscrowd']!r}; expected 0 or 1")
        ann["iscrowd"] = int(ann["iscrowd"])
        ann.setdefault("area", ann["bbox"][2] * ann["bbox"][3])
        ann["area"] = parse_coordinate(ann["area"], file=path, obj=obj, name="area")
    return data

# ---------------------------------------------------------------------------------------------- CLS-LOC files


def read_loc_synset_mapping(path: Path) -> list[tuple[str, str]]:
    """``LOC_synset_mapping.txt``: ``[(wnid, names)]`` in file order, which is the class order (label ``k`` is line
    ``k + 1``; 1000 lines on the real data).

    Raises :class:`DevkitError` for a missing or empty file, a line without a name, or a repeated wnid.
    """
    entries: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    for lineno, _, line in numbered_lines(path, "synset mapping"):
        fields = line.strip().split(maxsplit=1)
        if len(fields) != 2:
            raise DevkitError(f"{path}:{lineno}: expected '<wnid> <names>', got {line!r}")
        if fields[0] in seen:
            raise DevkitError(f"{path}:{lineno}: wnid {fields[0]} repeats line {seen[fields[0]]}")
        seen[fields[0]] = lineno
        entries.append((fields[0], fields[1]))
    if not entries:
        raise DevkitError(f"{path}: synset mapping is empty")
    return entries


def read_loc_solution(path: Path, classes: Collection[str] | None = None) -> dict[str, list[tuple[str, Box]]]:
    """``LOC_{train,val}_solution.csv``: ``{ImageId: [(wnid, devkit box)]}`` in file order.

    Each row is ``ImageId,PredictionString`` where the string holds ``wnid xmin ymin xmax ymax`` groups (1-based
    inclusive pixels, as the XMLs). With ``classes``, another wnid is an error. Raises :class:`DevkitError` naming the
    file and line for a missing file, a wrong header, a group count that is not a multiple of 5, a non-numeric or
    non-finite coordinate, or an ImageId given twice.
    """
    out: dict[str, list[tuple[str, Box]]] = {}
    for lineno, _, line in numbered_lines(path, "LOC solution file"):
        if lineno == 1:
            if [c.strip() for c in line.split(",")] != ["ImageId", "PredictionString"]:
                raise DevkitError(f"{path}:1: expected the header 'ImageId,PredictionString', got {line!r}")
            continue
        image, sep, rest = line.partition(",")
        image, tokens = image.strip(), rest.split()
        if not sep or not image or len(tokens) % 5:
            raise DevkitError(f"{path}:{lineno}: expected 'ImageId,wnid xmin ymin xmax ymax ...', got {line!r}")
        if image in out:
            raise DevkitError(f"{path}:{lineno}: ImageId {image!r} appears twice")
        objects = []
        for g in range(0, len(tokens), 5):
            wnid = tokens[g]
            if classes is not None and wnid not in classes:
                raise DevkitError(f"{path}:{lineno}: unknown wnid {wnid!r}; known: {_describe(classes)}")
            where = f"{image} object {g // 5} ({wnid})"
            coords = [
                parse_coordinate(v, file=f"{path}:{lineno}", obj=where, name=k)
                for v, k in zip(tokens[g + 1 : g + 5], ("xmin", "ymin", "xmax", "ymax"))
            ]
            objects.append((wnid, (coords[0], coords[1], coords[2], coords[3])))
        out[image] = objects
    return out
