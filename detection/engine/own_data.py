"""Training and testing on one's own data (docs/custom_data.md): the config's own-data fields become dataset
keyword arguments, the class list of the data is checked against the model's, and a missing dataset root is
explained (the layout expected, the command that fetches it, the offline quickstart).

- COCO format anywhere: ``data.train_json`` / ``data.train_images`` and ``data.test_json`` / ``data.test_images``
  (``--train-json`` … on the command line) replace ``<root>/annotations/instances_<split>.json`` and
  ``<root>/<split>/``; the classes are the JSON's categories in increasing id order. Training may take several
  JSONs (``--train-json a.json b.json``), one image folder for all or one each.
- COCO's splits: ``data.image_dirs`` (split → image folder) and, for training, ``data.exclude_images`` (image ids
  to leave out of the training splits) go to :func:`detection.data.coco.coco_dataset`.
- VOC format: a folder with ``Annotations/``, ``JPEGImages/`` and ``ImageSets/Main/`` (no ``VOC<year>`` level) and
  its classes in ``data.classes`` or ``<folder>/classes.txt``.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from detection.config import Config, ConfigError, DataConfig
from detection.data.errors import DatasetError

logger = logging.getLogger(__name__)

# What each dataset expects under --data-root, and the command that fetches it (tools/prepare_dataset.py).
LAYOUTS: dict[str, str] = {
    "coco": "annotations/instances_<split>.json and <split>/ image folders (e.g. train2017, val2017)",
    "voc": "VOCdevkit/VOC2007 (and VOC2012) with Annotations/, JPEGImages/ and ImageSets/Main/",
    "imagenet_det": "ILSVRC/Data/DET, Annotations/DET, ImageSets/DET and devkit/data/map_det.txt",
}

PREPARE_NAMES = {"coco": "coco", "voc": "voc", "imagenet_det": "imagenet"}


def own_data_kwargs(name: str, data: DataConfig, *, train: bool, classes: list[str] | None = None) -> dict[str, Any]:
    """Keyword arguments for ``build_dataset(name, ...)`` from the config's own-data fields.

    ``classes`` (the model's, e.g. from a checkpoint) fixes the label order of a VOC-format folder; otherwise
    ``data.classes`` does (and else the folder's ``classes.txt``). COCO-format data takes its classes from the JSON.
    """
    which = "train" if train else "test"
    ann_file, image_dir = _paths(getattr(data, f"{which}_json")), _paths(getattr(data, f"{which}_images"))
    kwargs: dict[str, Any] = {}
    if name == "coco" and data.image_dirs:
        kwargs["image_dirs"] = dict(data.image_dirs)
    if train and data.exclude_images:
        if name != "coco":
            raise ConfigError(f"data.exclude_images ({data.exclude_images}) removes COCO image ids; --dataset {name} "
                              "names its training images by its split files instead")
        kwargs["exclude_images"] = Path(data.exclude_images)
    if (ann_file or image_dir) and name != "coco":
        # E.g. a checkpoint trained on own COCO-format data, tested on a VOC folder: its stored paths do not apply.
        logger.warning("data.%s_json / data.%s_images are for --dataset coco; ignored for --dataset %s", which, which,
                       name)
    elif ann_file or image_dir:
        if not (ann_file and image_dir):
            raise ConfigError(f"own COCO-format data needs both data.{which}_json and data.{which}_images "
                              f"(--{which}-json and --{which}-images)")
        kwargs.update(ann_file=ann_file if len(ann_file) > 1 else ann_file[0],
                      image_dir=image_dir if len(image_dir) > 1 else image_dir[0])
    names = classes or data.classes
    if name in ("voc", "labelme") and names:
        kwargs["classes"] = list(names)
    if train and data.keep_empty:
        kwargs["filter_empty"] = False
    return kwargs


def report_empty_images(dataset: Any, *, keep_empty: bool) -> None:
    """Log how many training images without objects were kept (``data.keep_empty``) or dropped."""
    if keep_empty:
        parts = getattr(dataset, "datasets", [dataset])
        kept = sum(len(part.annotation(i).boxes) == 0 for part in parts for i in range(len(part)))
        logger.info("data.keep_empty: %d training images without objects kept (RPN and RoI negatives only)", kept)
    else:
        dropped = int(getattr(dataset, "num_without_boxes", 0))
        logger.info("%d training images without objects dropped (data.keep_empty=true keeps them)", dropped)


def _paths(value: str | list[str]) -> list[Path]:
    """A config path field (one path, or a list of them) as a list; ``""`` is none."""
    return [Path(v) for v in ([value] if isinstance(value, str) else value) if v]


def check_data_root(name: str, root: Path, kwargs: dict[str, Any]) -> None:
    """A :class:`DatasetError` that says what to do when the data of ``name`` is not at ``root``: the layout the
    loader reads, the ``tools/prepare_dataset.py`` command that fetches it, and the offline quickstart."""
    if name not in LAYOUTS or root.is_dir() or "ann_file" in kwargs:
        return
    own = " or --train-json/--train-images for COCO-format data elsewhere" if name == "coco" else ""
    raise DatasetError(
        f"dataset root {root} does not exist: --dataset {name} expects {LAYOUTS[name]} under --data-root; fetch it "
        f"with `python tools/prepare_dataset.py {PREPARE_NAMES[name]} --data-root {root}`{own} "
        f"(docs/custom_data.md for own data); "
        f"`python tools/quickstart.py` runs offline on generated data"
    )


def check_classes(cfg: Config, classes: list[str], where: str, *, model_classes: list[str] | None = None) -> None:
    """Match the model to the data's ``classes``.

    ``num_classes: 0`` becomes ``len(classes)`` (training on own data). A different count, or (when
    ``model_classes``, e.g. a checkpoint's, are known) different names or order, is a one-line
    :class:`DatasetError` naming both lists.
    """
    if cfg.num_classes == 0:
        cfg.num_classes = len(classes)
        logger.info("num_classes = %d from %s: %s", len(classes), where, ", ".join(classes))
        return
    if model_classes and list(model_classes) != list(classes):
        raise DatasetError(f"the model was trained on {len(model_classes)} classes ({_names(model_classes)}) but "
                           f"{where} has {len(classes)} ({_names(classes)}); test it on data with the same classes "
                           f"in the same order")
    if cfg.num_classes != len(classes):
        raise DatasetError(f"the config says num_classes={cfg.num_classes} but {where} has {len(classes)} classes "
                           f"({_names(classes)}); set num_classes={len(classes)}, or 0 to take it from the data")


def _names(classes: list[str], shown: int = 10) -> str:
    return ", ".join(classes[:shown]) + (f", … ({len(classes) - shown} more)" if len(classes) > shown else "")


def add_own_data_arguments(parser: argparse.ArgumentParser, *, train: bool = True) -> None:
    """``--train-json/--train-images`` (training tools) and ``--test-json/--test-images``: own COCO-format data."""
    for which in ("train", "test") if train else ("test",):
        # Training may repeat the flags (several JSONs train as one); repeated, not nargs="+", so that trailing
        # key=value overrides are not taken for paths.
        several = {"action": "append"} if which == "train" else {}
        parser.add_argument(f"--{which}-json", type=Path, default=None, **several,
                            help=f"COCO-format instances JSON of the {which} split (own data, any path"
                                 f"{'; repeat it to train on several as one' if several else ''})")  # fmt: skip
        parser.add_argument(f"--{which}-images", type=Path, default=None, **several,
                            help=f"image folder of --{which}-json (file_name is relative to it"
                                 f"{'; once for all JSONs, or once per JSON' if several else ''})")  # fmt: skip


def own_data_overrides(args: argparse.Namespace) -> list[str]:
    """The ``key=value`` overrides the own-data flags stand for; with ``--data-root`` and no JSON flag, own-data
    paths stored in the config (or a checkpoint's) are cleared so that the root is what is read."""
    overrides = []
    for which in ("train", "test"):
        ann_file, images = getattr(args, f"{which}_json", None), getattr(args, f"{which}_images", None)
        if ann_file is not None:
            overrides.append(f"data.{which}_json={_override_value(ann_file)}")
        if images is not None:
            overrides.append(f"data.{which}_images={_override_value(images)}")
        if ann_file is None and images is None and getattr(args, "data_root", None) is not None:
            # --data-root names the data: own-data paths from a config or checkpoint must not replace it.
            overrides += [f'data.{which}_json=""', f'data.{which}_images=""']
    return overrides


def _override_value(value: Path | list[Path]) -> str:
    """A path, or several, as the value of a ``key=value`` override (a JSON list is YAML too)."""
    paths = value if isinstance(value, list) else [value]
    return str(paths[0]) if len(paths) == 1 else json.dumps([str(p) for p in paths])


def own_split_name(name: str, data: DataConfig, *, train: bool) -> str:
    """The split label of own COCO-format data: the JSON files' stems, ``+``-joined ("" when there is none), so its
    results files and metrics say ``val`` for ``val.json`` rather than the default ``val2017``."""
    files = _paths(data.train_json if train else data.test_json)
    return "+".join(f.stem for f in files) if files and name == "coco" else ""
