import json
import time

import cv2
import numpy as np

from detection.data import ShapesDataset, generate_shapes, write_crop_dataset
from detection.data.shapes import SHAPE_CLASSES


def test_generator_is_deterministic_and_fast(tmp_path):
    start = time.perf_counter()
    generate_shapes(tmp_path / "a", num_train=60, num_val=10, seed=3)
    assert time.perf_counter() - start < 10
    generate_shapes(tmp_path / "b", num_train=60, num_val=10, seed=3)
    generate_shapes(tmp_path / "c", num_train=60, num_val=10, seed=4)
    for split in ("train", "val"):
        a, b, c = ((tmp_path / r / "annotations" / f"instances_{split}.json").read_text() for r in "abc")
        assert a == b and a != c
    assert (tmp_path / "a/train/000007.jpg").read_bytes() == (tmp_path / "b/train/000007.jpg").read_bytes()


def test_statistics(tmp_path):
    generate_shapes(tmp_path, num_train=150, num_val=5)
    data = json.loads((tmp_path / "annotations/instances_train.json").read_text())
    assert [c["name"] for c in data["categories"]] == list(SHAPE_CLASSES)
    sides = np.array([max(a["bbox"][2:]) for a in data["annotations"]])
    assert sides.min() <= 20 and sides.max() >= 120  # ~16 px up to most of a ~160-px image
    per_image = np.bincount([a["image_id"] for a in data["annotations"]], minlength=151)[1:]
    assert per_image.min() >= 1 and per_image.max() <= 6 and per_image.max() >= 5
    shorter = [min(im["height"], im["width"]) for im in data["images"]]
    assert 144 <= min(shorter) and max(shorter) <= 184
    assert {im["height"] > im["width"] for im in data["images"]} == {True, False}
    labels = np.bincount([a["category_id"] for a in data["annotations"]])
    assert (labels[1:] > 0.1 * len(data["annotations"])).all()
    for image in data["images"][:5]:
        for a in (a for a in data["annotations"] if a["image_id"] == image["id"]):
            x, y, w, h = a["bbox"]
            assert 0 <= x and x + w <= image["width"] and 0 <= y and y + h <= image["height"]


def test_dataset_generates_when_missing_and_loads_via_coco(tmp_path):
    ds = ShapesDataset(tmp_path / "shapes", "val", generate_kwargs={"num_train": 4, "num_val": 6})
    assert len(ds) == 6 and ds.classes == list(SHAPE_CLASSES)
    image, target = ds[0]
    assert image.shape[1:] == target["orig_size"] and len(target["boxes"]) >= 1
    assert ShapesDataset(tmp_path / "shapes", "train").image_ids == [1, 2, 3, 4]  # reused, not regenerated


def test_crop_dataset_layout(tmp_path):
    generate_shapes(tmp_path / "det", num_train=3, num_val=8)
    out = write_crop_dataset(tmp_path / "det", tmp_path / "crops", "val", size=32, backgrounds_per_image=2)
    assert out == tmp_path / "crops" / "val"
    assert sorted(p.name for p in out.iterdir()) == sorted([*SHAPE_CLASSES, "background"])
    num_objects = len(json.loads((tmp_path / "det/annotations/instances_val.json").read_text())["annotations"])
    crops = [p for c in SHAPE_CLASSES for p in (out / c).glob("*.png")]
    assert len(crops) == num_objects
    assert 1 <= len(list((out / "background").glob("*.png"))) <= 16
    assert cv2.imread(str(crops[0])).shape == (32, 32, 3)
