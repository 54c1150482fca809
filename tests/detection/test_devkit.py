"""The devkit file readers shared by detection/data and detection/evaluation: contents, conventions, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from detection.data.errors import DatasetError
from detection.devkit import (
    VOC_CLASSES,
    DevkitError,
    PascalObject,
    Synset,
    from_devkit_boxes,
    read_class_map,
    read_ilsvrc_split,
    read_pascal_xml,
    read_voc_split,
    to_devkit_boxes,
    voc_uses_07_metric,
)
from detection.evaluation.voc import EvaluationInputError


def write_xml(path: Path, objects: str, size: str = "<size><width>80</width><height>60</height></size>") -> Path:
    path.write_text(f"<annotation><filename>x.jpg</filename>{size}\n{objects}\n</annotation>\n")
    return path


def pascal_object(name: str, box: tuple, difficult: str | None = None) -> str:
    flag = "" if difficult is None else f"<difficult>{difficult}</difficult>"
    coords = "".join(f"<{k}>{v}</{k}>" for k, v in zip(("xmin", "ymin", "xmax", "ymax"), box))
    return f"<object><name>{name}</name>{flag}<bndbox>{coords}</bndbox></object>"


def test_pascal_xml_keeps_boxes_as_written(tmp_path: Path) -> None:
    objects = pascal_object("dog", (1, 2, 30, 40), "1") + pascal_object(" cat ", (5, 6, 7, 8))
    path = write_xml(tmp_path / "a.xml", objects)
    ann = read_pascal_xml(path)
    assert (ann.width, ann.height) == (80, 60)
    assert ann.objects == [PascalObject("dog", (1.0, 2.0, 30.0, 40.0), True), PascalObject("cat", (5, 6, 7, 8), False)]
    assert read_pascal_xml(path, classes=VOC_CLASSES).objects == ann.objects


def test_devkit_errors_are_dataset_and_evaluation_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError):
        read_voc_split(tmp_path / "missing.txt")
    with pytest.raises(EvaluationInputError):
        read_voc_split(tmp_path / "missing.txt")
    assert issubclass(DevkitError, DatasetError) and issubclass(DevkitError, EvaluationInputError)


@pytest.mark.parametrize(
    "objects, size, match",
    [
        ("<object><name>cat</name>", None, r"a\.xml:3: malformed XML \(.*line 3"),
        (pascal_object("dog", (1, 1, 5, 5)), "", r"a\.xml: missing or invalid <size><width>/<height>"),
        ("<object><bndbox/></object>", None, r"a\.xml: object 0: no <name>"),
        ("<object><name>dog</name></object>", None, r"a\.xml: object 0 \(dog\): no <bndbox>"),
        (pascal_object("dog", (1, "nan", 5, 5)), None, r"object 0 \(dog\): coordinate ymin='nan' is not finite"),
        (pascal_object("dog", ("one", 1, 5, 5)), None, r"object 0 \(dog\): coordinate xmin='one' is not a number"),
        (pascal_object("dog", (1, 1, 5)), None, r"object 0 \(dog\): coordinate ymax=None is not a number"),
        (pascal_object("dog", (1, 1, 5, 5), "yes"), None, r"object 0 \(dog\): <difficult> is 'yes', not an integer"),
    ],
)
def test_pascal_xml_errors_name_file_and_object(tmp_path: Path, objects: str, size: str | None, match: str) -> None:
    path = write_xml(tmp_path / "a.xml", objects) if size is None else write_xml(tmp_path / "a.xml", objects, size)
    with pytest.raises(DevkitError, match=match):
        read_pascal_xml(path)


def test_pascal_xml_unknown_class_and_missing_file(tmp_path: Path) -> None:
    path = write_xml(tmp_path / "a.xml", pascal_object("dog", (1, 1, 5, 5)) + pascal_object("unicorn", (1, 1, 5, 5)))
    unknown = r"a\.xml: object 1 \(unicorn\): unknown class name 'unicorn'; known: cat, dog$"
    with pytest.raises(DevkitError, match=unknown):
        read_pascal_xml(path, classes={"dog", "cat"})
    with pytest.raises(DevkitError, match=r"missing\.xml: annotation file not found"):
        read_pascal_xml(tmp_path / "missing.xml")


def test_voc_split(tmp_path: Path) -> None:
    path = tmp_path / "test.txt"
    path.write_text("000001\n\n000002  1\n")
    assert read_voc_split(path) == ["000001", "000002"]


def test_class_map_sorted_by_index_with_readable_names(tmp_path: Path) -> None:
    path = tmp_path / "map_det.txt"
    path.write_text("n02 2 traffic light\n\nn01 1 accordion\n")
    assert read_class_map(path) == [Synset("n01", 1, "accordion"), Synset("n02", 2, "traffic light")]


def test_ilsvrc_split_in_file_order(tmp_path: Path) -> None:
    path = tmp_path / "val2.txt"
    path.write_text("b 7\na 3\n\nc\n")
    assert read_ilsvrc_split(path) == [("b", 7), ("a", 3), ("c", 4)]  # a bare name takes its line number


@pytest.mark.parametrize(
    "reader, text, match",
    [
        (read_class_map, "n01 1 accordion\nn02 two airplane\n", r"list\.txt:2: expected '<wnid> <class_index> <name>'"),
        (read_class_map, "n01 1 accordion\nn01 2 airplane\n", r"list\.txt: class map repeats wnid \['n01'\]"),
        (read_class_map, "n01 1 accordion\nn02 1 airplane\n", r"list\.txt: class map repeats index \[1\]"),
        (read_class_map, "", r"list\.txt: class map is empty"),
        (read_ilsvrc_split, "b 7\na 7\n", r"list\.txt:2: image index 7 of a is also that of b"),
        (read_ilsvrc_split, "b 7 extra\n", r"list\.txt:1: expected '<image_name> <image_index>'"),
        (read_ilsvrc_split, "b -1\n", r"list\.txt:1: expected '<image_name> <image_index>'"),
        (read_ilsvrc_split, "\n", r"list\.txt: split file is empty"),
        (read_voc_split, "\n \n", r"list\.txt: split file is empty"),
    ],
)
def test_list_file_errors_name_file_and_line(tmp_path: Path, reader, text: str, match: str) -> None:
    path = tmp_path / "list.txt"
    path.write_text(text)
    with pytest.raises(DevkitError, match=match):
        reader(path)
    with pytest.raises(DevkitError, match=r"nowhere\.txt: .* not found"):
        reader(tmp_path / "nowhere.txt")


def test_box_conventions() -> None:
    devkit = np.array([[1.0, 1.0, 10.0, 20.0]])
    internal = from_devkit_boxes(devkit)
    assert internal.dtype == np.float32 and internal.tolist() == [[0.0, 0.0, 10.0, 20.0]]  # pixel 1..10 is [0, 10]
    np.testing.assert_array_equal(to_devkit_boxes(internal), devkit)
    assert from_devkit_boxes([]).shape == (0, 4)


@pytest.mark.parametrize("year, eleven_point", [("2007", True), ("2008", True), ("2010", False), (2012, False)])
def test_voc_metric_by_year(year: str | int, eleven_point: bool) -> None:
    assert voc_uses_07_metric(year) is eleven_point


# --- COCO instances files (read_coco_instances: the training loader's and eval_coco's ground truth) -------------
import json  # noqa: E402
from typing import Any  # noqa: E402

from detection.devkit import read_coco_instances  # noqa: E402


def coco_file(path: Path, edit: Any = None) -> Path:
    data = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 80}],
        "annotations": [{"id": 7, "image_id": 1, "category_id": 3, "bbox": [10, 10, 20, 30]}],
        "categories": [{"id": 3, "name": "car"}],
    }
    if edit is not None:
        edit(data)
    path.write_text(json.dumps(data))
    return path


def test_coco_missing_area_iscrowd_and_annotation_id_are_completed(tmp_path: Path) -> None:
    def drop_id(data: dict) -> None:
        data["annotations"].append({"image_id": 1, "category_id": 3, "bbox": [0, 0, 5, 5]})

    data = read_coco_instances(coco_file(tmp_path / "a.json", drop_id))
    first, second = data["annotations"]
    assert (first["iscrowd"], first["area"]) == (0, 600.0)
    assert second["id"] == 8 and second["area"] == 25.0


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d["images"][0].pop("id"), r"images\[0\] has no integer 'id'"),
    (lambda d: d["images"][0].update(id="1"), r"images\[0\] has no integer 'id'"),
    (lambda d: d["categories"][0].pop("name"), r"categories\[0\] needs an integer 'id' and a 'name'"),
    (lambda d: d.update(annotations={"7": d["annotations"][0]}), "'annotations' must be a list, got dict"),
    (lambda d: d.update(images=["a.jpg"]), r"images\[0\] must be an object"),
    (lambda d: d["annotations"][0].update(iscrowd="0"), r"annotation id 7 \(image 1\) has iscrowd '0'; expected"),
    (lambda d: d["annotations"][0].update(bbox=[10, float("nan"), 20, 30]), "coordinate y=nan is not finite"),
    (lambda d: d["annotations"][0].update(area="big"), "coordinate area='big' is not a number"),
    (lambda d: d["images"][0].update(width=0), "image id 1 needs a 'file_name' and positive integer"),
])  # fmt: skip
def test_coco_defects_name_the_file_and_the_entry(tmp_path: Path, edit: Any, message: str) -> None:
    path = coco_file(tmp_path / "a.json", edit)
    with pytest.raises(DevkitError, match=rf"^{path}: .*{message}"):
        read_coco_instances(path)


def test_coco_ground_truth_without_file_names_is_accepted_for_evaluation(tmp_path: Path) -> None:
    path = coco_file(tmp_path / "a.json", lambda d: d["images"][0].pop("file_name"))
    assert read_coco_instances(path, image_files=False)["images"][0]["id"] == 1
    with pytest.raises(DevkitError, match="needs a 'file_name'"):
        read_coco_instances(path)


@pytest.mark.parametrize(("width", "height"), [(0, 60), (80, -60)])
def test_pascal_size_must_be_positive(tmp_path: Path, width: int, height: int) -> None:
    path = write_xml(tmp_path / "a.xml", "", f"<size><width>{width}</width><height>{height}</height></size>")
    with pytest.raises(DevkitError, match=f"<size> gives width {width} and height {height}; both must be positive"):
        read_pascal_xml(path)
