"""labelme folders read directly: rectangles (either corner order), other shapes as their bounding boxes with a
warning, points dropped, class names from a class file or the sorted labels of every split, bad files named."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from detection.data import build_dataset
from detection.data.errors import DatasetError


def shape(label: str, points: list[list[float]], kind: str | None = "rectangle") -> dict[str, Any]:
    return {"label": label, "points": points, "shape_type": kind, "group_id": None, "flags": {}}


def write_labelme(folder: Path, name: str, shapes: list[dict[str, Any]], write_image: Callable[..., Path],
                  height: int = 40, width: int = 60) -> Path:
    write_image(folder / f"{name}.jpg", height, width)
    path = folder / f"{name}.json"
    path.write_text(json.dumps({"version": "5.4.1", "flags": {}, "shapes": shapes, "imagePath": f"{name}.jpg",
                                "imageData": None, "imageHeight": height, "imageWidth": width}))
    return path


@pytest.fixture
def labelme_root(tmp_path: Path, write_image: Callable[..., Path]) -> Path:
    train, val = tmp_path / "train", tmp_path / "val"
    write_labelme(train, "a", [shape("zebra", [[30, 20], [10, 5]]),  # corners in either order
                               shape("ant", [[5, 5], [15, 5], [10, 25]], "polygon"),
                               shape("ant", [[20, 20], [20, 23]], "circle"),
                               shape("ant", [[3, 3]], "point")], write_image)
    write_labelme(train, "b", [], write_image)  # a background image
    write_labelme(val, "c", [shape("bee", [[1.5, 2.5], [10.25, 20]])], write_image)
    return tmp_path


def test_shapes_become_boxes_and_classes_are_the_sorted_labels_of_every_split(
    labelme_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        dataset = build_dataset("labelme", labelme_root, "train", None)
    assert dataset.classes == ["ant", "bee", "zebra"]  # "bee" only in val: train and val agree
    assert len(dataset) == 2 and dataset.protocol == "coco"
    target = dataset[0][1]
    assert target["boxes"].tolist() == [[10, 5, 30, 20], [5, 5, 15, 25], [17, 17, 23, 23]]
    assert target["labels"].tolist() == [3, 1, 1]
    assert dataset[1][1]["boxes"].shape == (0, 4)
    text = caplog.text
    assert "1 polygon shape(s) taken as their bounding boxes" in text and "1 circle shape(s)" in text
    assert "1 point shape(s) dropped" in text and str(labelme_root / "train" / "a.json") in text
    val = build_dataset("labelme", labelme_root, "", None)  # the default test split: val/
    assert val[0][1]["boxes"].tolist() == [[1.5, 2.5, 10.25, 20.0]] and val.classes == dataset.classes


def test_a_class_file_fixes_the_order_and_refuses_other_labels(labelme_root: Path) -> None:
    (labelme_root / "labels.txt").write_text("__ignore__\n_background_\nzebra\nant\nbee\n")
    dataset = build_dataset("labelme", labelme_root, "train", None)
    assert dataset.classes == ["zebra", "ant", "bee"]
    assert dataset[0][1]["labels"].tolist() == [1, 2, 2]
    (labelme_root / "classes.txt").write_text("ant\nzebra\n")  # classes.txt comes first
    with pytest.raises(DatasetError, match=r"val/c.json: shapes\[0\] \(bee\): label 'bee' is not a known class"):
        build_dataset("labelme", labelme_root, "val", None)


def test_training_keeps_background_images_only_when_asked(labelme_root: Path) -> None:
    assert len(build_dataset("labelme", labelme_root, "train", None, train=True)) == 1
    assert len(build_dataset("labelme", labelme_root, "train", None, train=True, filter_empty=False)) == 2


def test_the_root_itself_is_split_dot(labelme_root: Path) -> None:
    assert len(build_dataset("labelme", labelme_root, ".", None)) == 3


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d.pop("imageHeight"), "missing imageHeight"),
    (lambda d: d.update(imageWidth=0), "imageWidth must be a positive integer"),
    (lambda d: d.update(imagePath="gone.jpg"), "does not exist"),
    (lambda d: d["shapes"][0].update(points=[[1, 2, 3]]), r"points must be a list of \[x, y\]"),
    (lambda d: d["shapes"][0].update(points=[[1, 2]]), "a rectangle needs 2 points"),
    (lambda d: d["shapes"][0].pop("label"), "has no label"),
])
def test_a_bad_file_is_one_error_naming_it(labelme_root: Path, edit: Callable[[dict], Any], message: str) -> None:
    path = labelme_root / "val" / "c.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    (labelme_root / "classes.txt").write_text("ant\nbee\nzebra\n")
    with pytest.raises(DatasetError, match=message) as info:
        build_dataset("labelme", labelme_root, "val", None)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(("content", "message"), [
    (("[" * 10_000 + "]" * 10_000).encode(), "nested too deeply"),
    (b'{"shapes": [}', "invalid JSON"),
    ('{"imageHeight": 1}'.encode("utf-16"), "UTF-16"),
])
def test_an_unreadable_file_is_one_error_naming_it(labelme_root: Path, content: bytes, message: str) -> None:
    path = labelme_root / "val" / "c.json"
    path.write_bytes(content)
    with pytest.raises(DatasetError, match=message) as info:
        build_dataset("labelme", labelme_root, "val", None)
    assert str(path) in str(info.value)


def test_a_missing_split_lists_the_folders(labelme_root: Path) -> None:
    with pytest.raises(DatasetError, match="splits are subfolders of .*: train, val"):
        build_dataset("labelme", labelme_root, "test", None)
