"""A YOLO dataset trained end to end with the tools, as docs/custom_data.md shows it: the shapes data written in the
YOLO layout with background-only images, kept in training (data.keep_empty) under repeat-factor sampling, tested
with tools/test_det.py and drawn with tools/browse_dataset.py; a labelme folder drawn too."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from backbones.checkpoint import load_checkpoint
from detection.config import load_config
from detection.data import build_dataset
from detection.data.shapes import SHAPE_CLASSES, generate_shapes_yolo
from tools import quickstart, train_det

Tool = Callable[..., subprocess.CompletedProcess]


@pytest.fixture(scope="module")
def shapes_yolo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 + 3 shapes images of 64–96 px and 2 background-only images per split, in the YOLO layout."""
    return generate_shapes_yolo(tmp_path_factory.mktemp("yolo"), num_train=8, num_val=3, num_background=2,
                                min_size=64, max_size=96)


def test_train_and_test_on_a_yolo_dataset(shapes_yolo: Path, tmp_path: Path, run_train: Tool,
                                          run_tool: Tool) -> None:
    out = tmp_path / "run"
    done = run_train(shapes_yolo, out, "num_classes=0", "solver.max_iter=4", "solver.checkpoint_period=0",
                     "data.keep_empty=true", "data.sampler=repeat_factor", "data.repeat_threshold=0.5",
                     dataset="yolo")
    assert done.returncode == 0, done.stderr[-3000:]
    log = (out / "log.txt").read_text()
    assert "training on yolo train: 10 images, 5 classes" in log
    assert "data.keep_empty: 2 training images without objects kept" in log
    assert "repeat-factor sampling (threshold 0.5): an epoch is" in log
    assert load_checkpoint(out / "model_final.pth")["classes"] == list(SHAPE_CLASSES)
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["dataset"], metrics["split"], metrics["images"]) == ("yolo", "val", 5)  # background ones too
    assert metrics["metric"] == "COCO mAP@0.5 (pycocotools)"

    tested = run_tool("test_det.py", "--weights", out / "model_final.pth", "--dataset", "yolo", "--data-root",
                      shapes_yolo, "--output-dir", tmp_path / "test", "--device", "cpu", "--no-progress")
    assert tested.returncode == 0, tested.stderr[-3000:]
    assert json.loads((tmp_path / "test" / "metrics.json").read_text())["mAP50"] == metrics["mAP50"]


def test_default_training_drops_the_background_images_and_says_so(shapes_yolo: Path, tmp_path: Path,
                                                                   run_tool: Tool) -> None:
    done = run_tool("browse_dataset.py", "--dataset", "yolo", "--data-root", shapes_yolo, "--transforms",
                    "--num", "2", "--output-dir", tmp_path / "browse")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "8 images" in done.stdout  # the 2 background-only training images dropped
    assert len(list((tmp_path / "browse").glob("*.png"))) == 2


def test_quickstart_format_yolo_trains_the_detector_on_the_yolo_layout(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """``tools/quickstart.py --format yolo`` writes the YOLO copy beside the shapes data and hands train_det
    ``--dataset yolo`` with configs/yolo_shapes.yaml (the stages are recorded here, not run)."""
    commands: list[list[str]] = []
    monkeypatch.setattr(quickstart, "run", commands.append)
    data = tmp_path / "shapes"
    with pytest.raises(FileNotFoundError):  # the metrics the recorded stages would have written
        quickstart.main(["--format", "yolo", "--num-train", "10", "--num-val", "2", "--cls-iters", "10",
                         "--device", "cpu", "--data-root", str(data), "--output-dir", str(tmp_path / "out")])
    train = train_det.build_parser().parse_args(commands[-1][2:])
    assert (train.dataset, train.data_root) == ("yolo", tmp_path / "shapes_yolo" / "data.yaml")
    assert train.config.name == "yolo_shapes.yaml"
    cfg = load_config(train.config)
    assert cfg.num_classes == len(SHAPE_CLASSES) and cfg.data.keep_empty
    dataset = build_dataset("yolo", train.data_root, "train", None, train=True, filter_empty=False)
    assert len(dataset) == 11 and dataset.classes == list(SHAPE_CLASSES)  # 10 with objects, 1 background-only


def labelme_from_yolo(data_yaml: Path, out: Path) -> Path:
    """The YOLO shapes as a labelme folder: a JSON per image (rectangles; every third object a polygon of its box's
    corners), a split per subfolder, no class file (the classes are then the sorted labels)."""
    for split in ("train", "val"):
        dataset = build_dataset("yolo", data_yaml, split, None)
        for i in range(len(dataset)):
            target, info = dataset[i][1], dataset.image_info(i)
            shapes = []
            for k, (box, label) in enumerate(zip(target["boxes"].tolist(), target["labels"].tolist())):
                x1, y1, x2, y2 = box
                polygon = k % 3 == 2
                points = [[x1, y1], [x2, y1], [x2, y2], [x1, y2]] if polygon else [[x1, y1], [x2, y2]]
                shapes.append({"label": dataset.classes[label - 1], "points": points,
                               "shape_type": "polygon" if polygon else "rectangle"})
            folder = out / split
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy(dataset.image_path(i), folder / info["file_name"])
            (folder / f"{Path(info['file_name']).stem}.json").write_text(json.dumps(
                {"shapes": shapes, "imagePath": info["file_name"], "imageHeight": info["height"],
                 "imageWidth": info["width"]}))
    return out


def test_train_and_test_on_a_labelme_folder(shapes_yolo: Path, tmp_path: Path, run_train: Tool,
                                            run_tool: Tool) -> None:
    root = labelme_from_yolo(shapes_yolo, tmp_path / "labelme")
    out = tmp_path / "run"
    done = run_train(root, out, "num_classes=0", "solver.max_iter=2", "solver.checkpoint_period=0",
                     dataset="labelme")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "polygon shape(s) taken as their bounding boxes" in done.stderr
    assert load_checkpoint(out / "model_final.pth")["classes"] == sorted(SHAPE_CLASSES)
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["dataset"], metrics["split"], metrics["images"]) == ("labelme", "val", 5)
    (root / "classes.txt").write_text("\n".join(SHAPE_CLASSES))  # another order: the checkpoint's is used
    tested = run_tool("test_det.py", "--weights", out / "model_final.pth", "--dataset", "labelme", "--data-root",
                      root, "--output-dir", tmp_path / "test", "--device", "cpu", "--no-progress")
    assert tested.returncode == 0, tested.stderr[-3000:]
    assert json.loads((tmp_path / "test" / "metrics.json").read_text())["mAP50"] == metrics["mAP50"]
