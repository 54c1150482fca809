"""trainer.data_stream on training splits without a usable batch: it stops, saying what it found, instead of
looping forever (it used to spin on ``while True`` and write tens of thousands of warnings)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from detection.data import build_dataset, build_transforms
from detection.data.errors import DatasetError
from detection.data.sampler import GroupedBatchSampler
from detection.engine.trainer import TrainState, data_stream


def stream(root: Path) -> object:
    transforms = build_transforms(train=True, min_sizes=(64,), max_size=96)
    dataset = build_dataset("shapes", root, "train", transforms, train=True)
    sampler = GroupedBatchSampler(dataset, batch_size=2, seed=0)
    return data_stream(dataset, sampler, TrainState(), seed=0, num_workers=0)


@pytest.fixture
def shapes_copy(shapes_root: Path, tmp_path: Path) -> Path:
    root = tmp_path / "shapes"
    shutil.copytree(shapes_root, root)
    return root


def test_every_image_unreadable_stops_after_one_epoch(shapes_copy: Path) -> None:
    for image in (shapes_copy / "train").iterdir():
        image.write_bytes(b"\xff\xd8 not really a JPEG \xff\xd9")
    start = time.monotonic()
    with pytest.raises(DatasetError, match=r"^no usable training batch in a whole epoch of the training split "
                                           r"\(16 images: 16 unreadable, 0 without usable boxes\)"):
        next(iter(stream(shapes_copy)))  # type: ignore[call-overload]
    assert time.monotonic() - start < 10


@pytest.mark.parametrize("case", ["all-crowd", "no-annotations"])
def test_split_without_any_training_box_stops_at_once(shapes_copy: Path, case: str) -> None:
    path = shapes_copy / "annotations" / "instances_train.json"
    data = json.loads(path.read_text())
    if case == "all-crowd":
        for ann in data["annotations"]:
            ann["iscrowd"] = 1  # crowd regions are not training boxes
    else:
        data["annotations"] = []
    path.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=r"^the training split has no usable image \(16 images: 0 unreadable, "
                                           r"16 without usable boxes\)"):
        next(iter(stream(shapes_copy)))  # type: ignore[call-overload]


def test_some_unreadable_images_are_passed_over(shapes_copy: Path) -> None:
    images = sorted((shapes_copy / "train").iterdir())
    for image in images[:-2]:
        image.write_bytes(b"garbage")
    batches = stream(shapes_copy)
    seen = [next(batches) for _ in range(3)]  # type: ignore[call-overload]
    assert all(len(images) >= 1 for images, _ in seen)
