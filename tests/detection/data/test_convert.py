"""tools/convert_dataset.py and detection/data/convert.py: each source format written as COCO instances JSON,
compared with the JSON written by hand, and read back by the COCO loader to the same targets as the source's own
dataset (the round trip)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from detection.data import build_dataset
from detection.data.coco import CocoDetection
from detection.data.convert import convert_to_coco
from detection.data.errors import DatasetError
from tools import convert_dataset

CATEGORIES_CAT_DOG = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]


@pytest.fixture
def yolo_yaml(tmp_path: Path, write_image: Callable[..., Path]) -> Path:
    root = tmp_path / "yolo"
    write_image(root / "images" / "train" / "a.jpg", 40, 80)
    write_image(root / "images" / "train" / "sub" / "b.png", 50, 20)
    (root / "labels" / "train" / "sub").mkdir(parents=True)
    (root / "labels" / "train" / "a.txt").write_text("1 0.5 0.5 0.25 0.5\n0 0.125 0.25 0.25 0.5\n")
    (root / "labels" / "train" / "sub" / "b.txt").write_text("")
    (root / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/train\nnames: [cat, dog]\n")
    return root / "data.yaml"


def test_yolo_to_coco_matches_the_hand_written_json(yolo_yaml: Path) -> None:
    assert convert_to_coco("yolo", yolo_yaml, "train") == {
        "images": [{"id": 1, "file_name": "images/train/a.jpg", "height": 40, "width": 80},
                   {"id": 2, "file_name": "images/train/sub/b.png", "height": 50, "width": 20}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 2, "bbox": [30, 10, 20, 20], "area": 400, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [0, 0, 20, 20], "area": 400, "iscrowd": 0},
        ],
        "categories": CATEGORIES_CAT_DOG,
    }


def test_labelme_to_coco_matches_the_hand_written_json(tmp_path: Path, write_image: Callable[..., Path]) -> None:
    root = tmp_path / "lm"
    write_image(root / "train" / "img" / "x.jpg", 30, 40)
    (root / "train" / "x.json").write_text(json.dumps({
        "shapes": [{"label": "dog", "points": [[12.5, 3], [2, 20]], "shape_type": "rectangle"},
                   {"label": "cat", "points": [[1, 1], [5, 2], [3, 9]], "shape_type": "polygon"}],
        "imagePath": "img\\x.jpg", "imageHeight": 30, "imageWidth": 40}))
    assert convert_to_coco("labelme", root, "train") == {
        "images": [{"id": 1, "file_name": "train/img/x.jpg", "height": 30, "width": 40}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 2, "bbox": [2, 3, 10.5, 17], "area": 178.5, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [1, 1, 4, 8], "area": 32, "iscrowd": 0},
        ],
        "categories": CATEGORIES_CAT_DOG,
    }


def test_voc_to_coco_keeps_pixel_edges_and_marks_difficult_as_crowd(voc_root: Callable[..., Path]) -> None:
    root = voc_root(("2007",))
    data = convert_to_coco("voc", root, "2007_trainval")
    assert data["images"] == [
        {"id": 1, "file_name": "VOCdevkit/VOC2007/JPEGImages/000001.jpg", "height": 60, "width": 80},
        {"id": 2, "file_name": "VOCdevkit/VOC2007/JPEGImages/000002.jpg", "height": 40, "width": 30},
        {"id": 3, "file_name": "VOCdevkit/VOC2007/JPEGImages/000005.jpg", "height": 50, "width": 50},
    ]
    # (xmin, ymin, xmax, ymax) = (1, 1, 20, 30) → [0, 0, 20, 30]; (11, 21, 50, 40) difficult → [10, 20, 40, 20]
    assert [(a["image_id"], a["bbox"], a["iscrowd"]) for a in data["annotations"]] == [
        (1, [0, 0, 20, 30], 0), (1, [10, 20, 40, 20], 1), (2, [4, 5, 21, 30], 0), (3, [1, 2, 39, 43], 1)]
    names = [c["name"] for c in data["categories"]]
    assert [names[a["category_id"] - 1] for a in data["annotations"]] == ["dog", "person", "cat", "chair"]


def test_coco_to_coco_renumbers_categories_in_id_order(coco_root: Callable[..., Path]) -> None:
    data = convert_to_coco("coco", coco_root(), "train")
    assert data["categories"] == [{"id": 1, "name": "person"}, {"id": 2, "name": "car"},
                                  {"id": 3, "name": "toothbrush"}]
    assert [(a["bbox"], a["category_id"], a["iscrowd"]) for a in data["annotations"]] == [
        ([10, 20, 30, 15], 2, 0), ([0, 0, 40, 40], 1, 1), ([70, 50, 20, 20], 3, 0), ([5, 5, 10, 30], 1, 0)]
    assert [(i["id"], i["file_name"]) for i in data["images"]] == [(10, "train/a.jpg"), (20, "train/b.png"),
                                                                     (30, "train/c.jpg")]


def test_round_trip_through_the_tool_gives_the_same_targets(yolo_yaml: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out" / "train.json"
    assert convert_dataset.main(["--from", "yolo", "--data-root", str(yolo_yaml), "--output", str(out)]) == 0
    assert "yolo train: 2 images, 2 objects, 2 classes" in capsys.readouterr().out
    assert [p.name for p in out.parent.iterdir()] == ["train.json"]  # no temporary left behind
    source = build_dataset("yolo", yolo_yaml, "train", None)
    converted = CocoDetection(tmp_path, "train", ann_file=out, image_dir=yolo_yaml.parent)
    assert converted.classes == source.classes and len(converted) == len(source)
    for i in range(len(source)):
        (image_a, a), (image_b, b) = source[i], converted[i]
        assert torch.equal(image_a, image_b) and a["image_id"] == b["image_id"]
        assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["labels"], b["labels"])


def test_the_tool_reports_a_bad_source_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = convert_dataset.main(["--from", "labelme", "--data-root", str(tmp_path / "none"), "--output",
                                 str(tmp_path / "x.json")])
    assert code == 1 and capsys.readouterr().err.startswith("error: labelme dataset root")
    assert not (tmp_path / "x.json").exists()
    with pytest.raises(DatasetError, match="unknown source format"):
        convert_to_coco("kitti", tmp_path, "train")


def test_a_coco_json_given_itself_keeps_its_file_names_and_ids(coco_root: Callable[..., Path]) -> None:
    json_file = coco_root() / "annotations" / "instances_train.json"
    data = convert_to_coco("coco", json_file, "train")
    assert [(i["id"], i["file_name"]) for i in data["images"]] == [(10, "a.jpg"), (20, "b.png"), (30, "c.jpg")]
    assert len(data["annotations"]) == 4 and [c["id"] for c in data["categories"]] == [1, 2, 3]
