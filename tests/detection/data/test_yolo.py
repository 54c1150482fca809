"""YOLO datasets (ultralytics layout) read directly: data.yaml forms, label files to pixel boxes, empty and missing
label files, list files, the default test split, bad lines named by file and line, COCO-protocol scoring."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from detection.data import build_dataset, resolve_split
from detection.data.errors import DatasetError, UnreadableImageError
from detection.data.yolo import label_path
from detection.engine.evaluate import evaluate_predictions
from detection.engine.inference import Predictions

# Three 40×80 (H×W) training images: two objects, an empty label file, no label file; one 50×50 val image.
LABELS = {"a": "1 0.5 0.5 0.25 0.5\n0 0.125 0.25 0.25 0.5\n", "b": "", "c": None}


@pytest.fixture
def yolo_root(tmp_path: Path, write_image: Callable[..., Path]) -> Path:
    for name, text in LABELS.items():
        write_image(tmp_path / "images" / "train" / f"{name}.jpg", 40, 80)
        if text is not None:
            (tmp_path / "labels" / "train").mkdir(parents=True, exist_ok=True)
            (tmp_path / "labels" / "train" / f"{name}.txt").write_text(text)
    write_image(tmp_path / "images" / "val" / "v.png", 50, 50)
    (tmp_path / "labels" / "val").mkdir(parents=True)
    (tmp_path / "labels" / "val" / "v.txt").write_text("0 0.5 0.5 1.0 1.0\n")
    (tmp_path / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\nnames: {0: cat, 1: dog}\n")
    return tmp_path


def test_label_lines_become_pixel_boxes_and_empty_images_are_kept_in_evaluation(yolo_root: Path) -> None:
    dataset = build_dataset("yolo", yolo_root / "data.yaml", "train", None)
    assert dataset.classes == ["cat", "dog"]
    assert len(dataset) == 3 and dataset.protocol == "coco"
    image, target = dataset[0]
    assert image.shape == (3, 40, 80)
    # dog: centre (40, 20), 20 × 20 px; cat: centre (10, 10), 20 × 20 px
    assert target["boxes"].tolist() == [[30.0, 10.0, 50.0, 30.0], [0.0, 0.0, 20.0, 20.0]]
    assert target["labels"].tolist() == [2, 1]
    for index in (1, 2):  # an empty label file and a missing one: no objects
        assert dataset[index][1]["boxes"].shape == (0, 4)
    assert [im["file_name"] for im in dataset.coco.dataset["images"]] == [str(yolo_root / "images" / "train" / n)
                                                                          for n in ("a.jpg", "b.jpg", "c.jpg")]


def test_training_drops_images_without_objects_unless_kept(yolo_root: Path) -> None:
    dropped = build_dataset("yolo", yolo_root, "train", None, train=True)  # the folder holding data.yaml works too
    assert len(dropped) == 1 and dropped.num_without_boxes == 2
    kept = build_dataset("yolo", yolo_root, "train", None, train=True, filter_empty=False)
    assert len(kept) == 3 and kept.num_without_boxes == 0


def test_list_files_names_as_a_list_and_the_default_test_split(yolo_root: Path) -> None:
    (yolo_root / "train.txt").write_text("./images/train/a.jpg\nimages/train/c.jpg\n\n")
    (yolo_root / "data.yaml").write_text("train: train.txt\nval: [images/val]\ntest: images/val\nnc: 2\n"
                                         "names: [cat, dog]\n")
    dataset = build_dataset("yolo", yolo_root / "data.yaml", "train", None)
    assert [dataset.image_path(i).name for i in range(len(dataset))] == ["a.jpg", "c.jpg"]
    assert resolve_split("yolo", "", train=False, root=yolo_root / "data.yaml") == "test"
    (yolo_root / "data.yaml").write_text("train: train.txt\nval: images/val\nnames: [cat, dog]\n")
    assert resolve_split("yolo", "", train=False, root=yolo_root / "data.yaml") == "val"
    assert resolve_split("yolo", "", train=True, root=yolo_root / "data.yaml") == "train"


def test_label_path_follows_ultralytics() -> None:
    assert label_path(Path("/d/images/x/images/train/a.b.jpg")) == Path("/d/images/x/labels/train/a.b.txt")
    assert label_path(Path("/d/pics/a.png")) == Path("/d/pics/a.txt")


@pytest.mark.parametrize(("line", "message"), [
    ("1 0.5 0.5 0.2", "expected 5 fields"),
    ("2 0.5 0.5 0.2 0.2", "class 2 is out of range"),
    ("x 0.5 0.5 0.2 0.2", "is not an integer"),
    ("0 0.5 1.5 0.2 0.2", r"normalised to \[0, 1\]"),
    ("0 0.5 0.5 nan 0.2", r"normalised to \[0, 1\]"),
    ("0 0.5 0.5 0.2 wide", "must be numbers"),
])
def test_a_bad_line_names_the_file_and_line(yolo_root: Path, line: str, message: str) -> None:
    (yolo_root / "labels" / "train" / "a.txt").write_text(f"0 0.5 0.5 0.1 0.1\n{line}\n")
    with pytest.raises(DatasetError, match=message) as info:
        build_dataset("yolo", yolo_root / "data.yaml", "train", None)
    assert f"{yolo_root / 'labels' / 'train' / 'a.txt'}:2:" in str(info.value)


def test_coordinates_within_the_tolerance_are_read_and_clipped(yolo_root: Path) -> None:
    (yolo_root / "labels" / "train" / "a.txt").write_text("0 0.5 0.5 1.005 1.0\n")
    dataset = build_dataset("yolo", yolo_root / "data.yaml", "train", None)
    assert dataset[0][1]["boxes"].tolist() == [[0.0, 0.0, 80.0, 40.0]]


@pytest.mark.parametrize(("text", "message"), [
    ("train: images/train\nval: images/val\n", "names must be"),
    ("train: images/train\nnames: {0: a, 2: b}\n", "class indices 0..1"),
    ("train: images/train\nnc: 3\nnames: [cat, dog]\n", "nc is 3"),
    ("train: images/none\nnames: [cat, dog]\n", "neither an image folder nor a list file"),
    ("path: elsewhere\ntrain: images/train\nnames: [cat, dog]\n", "is not a folder"),
    ("val: images/val\nnames: [cat, dog]\n", "names no 'train' split"),
])
def test_a_bad_data_yaml_is_one_error_naming_it(yolo_root: Path, text: str, message: str) -> None:
    (yolo_root / "data.yaml").write_text(text)
    with pytest.raises(DatasetError, match=message):
        build_dataset("yolo", yolo_root / "data.yaml", "train", None)


def test_a_hostile_data_yaml_is_refused_quickly_naming_it(yolo_root: Path) -> None:
    """Read as configs are (detection.files.read_yaml): aliases expanding ×10 per level, UTF-16, invalid YAML."""
    levels = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"{b}: &{b} [{', '.join(['*' + a] * 10)}]" for a, b in zip("abcdefgh", "bcdefghi")]
    for text, message in [("\n".join(levels) + "\n", "aliases expand to more than"),
                          ("train: [unclosed\n", "invalid YAML")]:
        (yolo_root / "data.yaml").write_text(text)
        with pytest.raises(DatasetError, match=message) as info:
            build_dataset("yolo", yolo_root / "data.yaml", "train", None)
        assert str(yolo_root / "data.yaml") in str(info.value) and len(str(info.value)) < 400
    (yolo_root / "data.yaml").write_text("train: images/train\nnames: [cat, dog]\n", encoding="utf-16")
    with pytest.raises(DatasetError, match="UTF-16"):
        build_dataset("yolo", yolo_root / "data.yaml", "train", None)


def test_missing_data_yaml_says_what_is_expected(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="expected a data.yaml"):
        build_dataset("yolo", tmp_path, "train", None)


def test_scored_under_the_coco_protocol_with_empty_images(yolo_root: Path, tmp_path: Path) -> None:
    """Perfect detections on every image (the empty ones have none) score AP 1; a false positive on an empty image
    costs precision."""
    dataset = build_dataset("yolo", yolo_root / "data.yaml", "train", None)
    predictions = Predictions()
    for i in range(len(dataset)):
        target = dataset[i][1]
        predictions.targets.append(target)
        predictions.outputs.append({"boxes": target["boxes"], "labels": target["labels"],
                                    "scores": torch.ones(len(target["labels"]))})
    metrics, _ = evaluate_predictions("yolo", dataset, predictions, tmp_path / "out", "train")
    assert metrics["mAP50"] == pytest.approx(1.0)
    predictions.outputs[1] = {"boxes": torch.tensor([[0.0, 0.0, 20.0, 20.0]]), "labels": torch.tensor([1]),
                              "scores": torch.tensor([2.0])}  # on the empty image, ranked first
    metrics, _ = evaluate_predictions("yolo", dataset, predictions, tmp_path / "out", "train")
    assert metrics["mAP50"] < 1.0


def test_an_unreadable_image_is_skipped_with_a_warning_or_raises_under_strict(
    yolo_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (yolo_root / "images" / "train" / "b.jpg").write_bytes(b"not an image")
    dataset = build_dataset("yolo", yolo_root / "data.yaml", "train", None)
    assert len(dataset) == 2 and dataset.skipped == [str(yolo_root / "images" / "train" / "b.jpg")]
    assert "cannot read the size of image" in caplog.text
    assert len(dataset.coco.dataset["images"]) == 2  # not scored either
    with pytest.raises(UnreadableImageError, match="b.jpg"):
        build_dataset("yolo", yolo_root / "data.yaml", "train", None, strict=True)
