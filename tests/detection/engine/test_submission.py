"""Test splits without public annotations (COCO test-dev, VOC2012 test, ILSVRC DET test) load with empty targets
and testing writes the evaluation servers' files and says it cannot score them; on a training split missing
annotations stay an error."""

from __future__ import annotations

import json
import tarfile
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from detection.data import CocoDetection, ImageNetDetDataset, VOCDataset
from detection.data.errors import DatasetError
from detection.engine import run
from detection.engine.evaluate import evaluate_predictions
from detection.engine.inference import Predictions
from detection.engine.run import RunOptions

WNIDS = ("n02672831", "n02691156")


def write_jpeg(path: Path, height: int, width: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    cv2.imwrite(str(path), pixels)


def coco_test_dev(root: Path) -> Path:
    """``annotations/image_info_test-dev2017.json`` (no "annotations" key) + ``test2017/`` with two images."""
    images = [{"id": 7, "file_name": "a.jpg", "width": 80, "height": 64},
              {"id": 9, "file_name": "b.jpg", "width": 64, "height": 72}]  # fmt: skip
    for im in images:
        write_jpeg(root / "test2017" / im["file_name"], im["height"], im["width"])
    info = {"images": images, "categories": [{"id": 3, "name": "car"}, {"id": 18, "name": "dog"}]}
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "image_info_test-dev2017.json").write_text(json.dumps(info))
    return root


def voc_2012_test(root: Path) -> Path:
    base = root / "VOCdevkit" / "VOC2012"
    for name in ("2008_000001", "2008_000002"):
        write_jpeg(base / "JPEGImages" / f"{name}.jpg", 40, 50)
    (base / "ImageSets" / "Main").mkdir(parents=True)
    (base / "ImageSets" / "Main" / "test.txt").write_text("2008_000001\n2008_000002\n")
    return root


def ilsvrc_test(root: Path) -> Path:
    data = root / "ILSVRC"
    (data / "devkit" / "data").mkdir(parents=True)
    (data / "devkit" / "data" / "map_det.txt").write_text(f"{WNIDS[0]} 1 accordion\n{WNIDS[1]} 2 airplane\n")
    write_jpeg(data / "Data" / "DET" / "test" / "ILSVRC2015_test_00000001.JPEG", 30, 40)
    (data / "ImageSets" / "DET").mkdir(parents=True)
    (data / "ImageSets" / "DET" / "test.txt").write_text("ILSVRC2015_test_00000001 1\n")
    return root


def one_detection_each(dataset) -> Predictions:
    """Per image, one detection of label 2 at internal [0, 0, 10, 20] with score 0.5."""
    out = Predictions()
    for i in range(len(dataset)):
        out.targets.append({"image_id": dataset.image_info(i)["image_id"], "boxes": torch.zeros(0, 4),
                            "labels": torch.zeros(0, dtype=torch.int64)})  # fmt: skip
        out.outputs.append({"boxes": torch.tensor([[0.0, 0.0, 10.0, 20.0]]), "scores": torch.tensor([0.5]),
                            "labels": torch.tensor([2])})  # fmt: skip
    return out


def test_coco_test_dev_writes_the_zipped_results_json(tmp_path: Path) -> None:
    dataset = CocoDetection(coco_test_dev(tmp_path), "test-dev2017")
    assert not dataset.has_annotations and len(dataset) == 2
    assert dataset.image_info(1) == {"height": 72, "width": 64, "file_name": "b.jpg", "image_id": 9}
    metrics, message = evaluate_predictions("coco", dataset, one_detection_each(dataset), tmp_path / "out",
                                            "test-dev2017")  # fmt: skip
    assert metrics["mAP50"] is None and "cannot be scored" in message
    archive = tmp_path / "out" / "detections_test-dev2017_resdet_results.zip"
    assert metrics["submission"] == str(archive)
    with zipfile.ZipFile(archive) as zf:
        assert zf.namelist() == ["detections_test-dev2017_resdet_results.json"]
        results = json.loads(zf.read(zf.namelist()[0]))
    assert results == [{"image_id": i, "category_id": 18, "bbox": [0.0, 0.0, 10.0, 20.0], "score": 0.5}
                       for i in (7, 9)]  # fmt: skip


def test_voc2012_test_writes_the_servers_comp4_layout(tmp_path: Path) -> None:
    dataset = VOCDataset(voc_2012_test(tmp_path), "2012_test")
    assert not dataset.has_annotations
    assert dataset.image_info(0)["height"] == 40 and dataset.image_info(0)["width"] == 50  # from the header
    metrics, _ = evaluate_predictions("voc", dataset, one_detection_each(dataset), tmp_path / "out", "2012_test")
    assert metrics["mAP50"] is None
    with tarfile.open(metrics["submission"]) as tar:
        members = tar.getnames()
        bicycle = tar.extractfile("results/VOC2012/Main/comp4_det_test_bicycle.txt").read().decode()
    assert "results/VOC2012/Main/comp4_det_test_aeroplane.txt" in members
    assert len([m for m in members if m.endswith(".txt")]) == 20
    assert bicycle.splitlines() == ["2008_000001 0.5 1.0 1.0 10.0 20.0", "2008_000002 0.5 1.0 1.0 10.0 20.0"]


def test_ilsvrc_det_test_writes_the_submission_lines(tmp_path: Path) -> None:
    dataset = ImageNetDetDataset(ilsvrc_test(tmp_path), "test")
    assert not dataset.has_annotations and dataset.blacklist_file is None
    metrics, _ = evaluate_predictions("imagenet_det", dataset, one_detection_each(dataset), tmp_path / "out", "test")
    assert Path(metrics["submission"]).read_text() == "1 2 0.5 1.0 1.0 10.0 20.0\n"


@pytest.mark.parametrize("kind", ["coco", "voc", "imagenet_det"])
def test_a_split_without_annotations_cannot_be_trained_on(tmp_path: Path, kind: str) -> None:
    with pytest.raises(DatasetError, match="no annotations.*not a training split"):
        if kind == "coco":
            CocoDetection(coco_test_dev(tmp_path), "test-dev2017", train=True)
        elif kind == "voc":
            VOCDataset(voc_2012_test(tmp_path), "2012_test", train=True)
        else:
            ImageNetDetDataset(ilsvrc_test(tmp_path), "test", train=True)


def test_a_missing_annotation_on_an_annotated_split_is_still_an_error(tmp_path: Path) -> None:
    root = voc_2012_test(tmp_path)
    main = root / "VOCdevkit" / "VOC2012" / "ImageSets" / "Main"
    (main / "trainval.txt").write_text("2008_000001\n")
    (root / "VOCdevkit" / "VOC2012" / "Annotations").mkdir()
    with pytest.raises(DatasetError, match="2008_000001.*annotation .* is missing"):
        VOCDataset(root, "2012_trainval")


def test_testing_a_tiny_model_on_test_dev_end_to_end(tmp_path: Path, tiny_config) -> None:
    from detection import build_detector

    cfg = tiny_config("num_classes=2", "model.roi_heads.score_thresh=0.0")
    model = build_detector(cfg).eval()
    opts = RunOptions(dataset="coco", data_root=coco_test_dev(tmp_path / "coco"), output_dir=tmp_path / "out",
                      device="cpu", progress=False)  # fmt: skip
    metrics = run.test(cfg, opts, model, "test-dev2017")
    assert metrics["mAP50"] is None and metrics["images"] == 2
    with zipfile.ZipFile(metrics["submission"]) as zf:
        results = json.loads(zf.read(zf.namelist()[0]))
    assert {r["image_id"] for r in results} == {7, 9} and {r["category_id"] for r in results} <= {3, 18}
