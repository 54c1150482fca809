from pathlib import Path

import numpy as np
import pytest
import torch

from detection.data import CocoDetection, DatasetError, build_dataset, build_transforms


def test_category_mapping_with_gaps(coco_root):
    ds = CocoDetection(coco_root(), "train")
    assert ds.classes == ["person", "car", "toothbrush"]  # sorted by category id 1, 3, 90
    assert ds.label_to_cat_id == {1: 1, 2: 3, 3: 90}
    assert ds.cat_id_to_label == {1: 1, 3: 2, 90: 3}


def test_eval_mode_keeps_empty_images_and_flags_crowd(coco_root):
    ds = CocoDetection(coco_root(), "train", train=False)
    assert [ds.image_info(i)["image_id"] for i in range(len(ds))] == [10, 20, 30]
    image, target = ds[0]
    assert image.dtype == torch.float32 and image.shape == (3, 60, 80)
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert target["image_id"] == 10 and target["orig_size"] == (60, 80) and target["scale"] == 1.0
    # [x, y, w, h] -> xyxy; the cat-90 box [70, 50, 20, 20] is clipped to the 80x60 image.
    expected = torch.tensor([[10, 20, 40, 35], [0, 0, 40, 40], [70, 50, 80, 60]], dtype=torch.float32)
    torch.testing.assert_close(target["boxes"], expected)
    assert target["labels"].tolist() == [2, 1, 3]
    assert target["iscrowd"].tolist() == [False, True, False]
    _, empty = ds[2]
    assert empty["boxes"].shape == (0, 4) and empty["labels"].shape == (0,)


def test_train_mode_drops_crowd_and_empty_images(coco_root):
    ds = CocoDetection(coco_root(), "train", train=True)
    assert [ds.image_info(i)["image_id"] for i in range(len(ds))] == [10, 20]
    _, target = ds[0]
    assert target["labels"].tolist() == [2, 3]
    assert not target["iscrowd"].any()
    kept = CocoDetection(coco_root(), "train", train=True, filter_empty=False)
    assert len(kept) == 3


def test_build_dataset_train_mode_is_explicit(coco_root):
    root = coco_root()
    train = build_dataset("coco", root, "train", build_transforms(True, (120,), 200, flip_prob=0.0), train=True)
    assert len(train) == 2
    image, target = train[0]
    assert image.shape == (3, 120, 160) and target["scale"] == pytest.approx(2.0)
    torch.testing.assert_close(target["boxes"][0], torch.tensor([20.0, 40.0, 80.0, 70.0]))
    assert len(build_dataset("coco", root, "train", build_transforms(False))) == 3
    assert len(build_dataset("coco", root, "train", build_transforms(True, (120,), 200))) == 3  # evaluation mode
    with pytest.raises(DatasetError, match="unknown dataset 'cocoa'"):
        build_dataset("cocoa", root, "train", None)


def test_missing_root_and_layout(tmp_path: Path, coco_root):
    with pytest.raises(DatasetError, match="does not exist"):
        CocoDetection(tmp_path / "nope", "train")
    root = coco_root()
    with pytest.raises(DatasetError, match="instances_val.json is missing"):
        CocoDetection(root, "val")


def _raises(coco_root, mutate, match):
    root = coco_root(mutate)
    with pytest.raises(DatasetError, match=match) as info:
        CocoDetection(root, "train")
    assert "instances_train.json" in str(info.value)


def test_duplicate_image_ids(coco_root):
    _raises(coco_root, lambda d: d["images"].append(dict(d["images"][0], file_name="z.jpg")), "duplicate image id 10")


def test_unknown_category_names_known_ids(coco_root):
    def mutate(d):
        d["annotations"][0]["category_id"] = 7

    _raises(coco_root, mutate, r"annotation id 1 .*unknown category id 7; known ids: \[1, 3, 90\]")


@pytest.mark.parametrize("value, what", [(float("nan"), "not finite"), ("ten", "not a number")])
def test_bad_coordinates_name_file_and_object(coco_root, value, what):
    def mutate(d):
        d["annotations"][3]["bbox"][1] = value

    _raises(coco_root, mutate, rf"annotation id 4 \(image 20\): coordinate y=.* {what}")


def test_malformed_json(coco_root):
    root = coco_root()
    (root / "annotations" / "instances_train.json").write_text('{"images": [')
    with pytest.raises(DatasetError, match=r"instances_train.json:1: invalid JSON \(Expecting value\)"):
        CocoDetection(root, "train")


def test_degenerate_boxes_dropped_with_warning(coco_root, caplog):
    def mutate(d):
        d["annotations"][0]["bbox"] = [10, 20, 0, 15]
        d["annotations"][3]["bbox"] = [50, 5, 10, 10]  # entirely right of the 40-px-wide image

    ds = CocoDetection(coco_root(mutate), "train", train=False)
    assert "annotation id 1 (image 10) has zero or negative width/height" in caplog.text
    assert "annotation id 4 (image 20)" in caplog.text
    assert ds[0][1]["labels"].tolist() == [1, 3]
    assert ds[1][1]["boxes"].shape == (0, 4)


def test_path_escaping_root_is_refused(coco_root):
    def mutate(d):
        d["images"][2]["file_name"] = "../../etc/passwd"

    _raises(coco_root, mutate, r"'\.\./\.\./etc/passwd' escapes the dataset root")


def test_unreadable_image_skipped_or_strict(coco_root, caplog):
    root = coco_root()
    (root / "train" / "b.png").write_bytes(b"")
    ds = CocoDetection(root, "train", train=False)
    assert ds[1] is None
    assert ds.skipped == [str(root / "train" / "b.png")]
    assert "b.png" in caplog.text
    strict = CocoDetection(root, "train", train=False, strict=True)
    with pytest.raises(DatasetError, match="b.png"):
        strict[1]


def test_file_size_differing_from_annotation_rescales_boxes(coco_root, write_image, caplog):
    root = coco_root()
    write_image(root / "train" / "a.jpg", 30, 40)  # the JSON says 60x80
    _, target = CocoDetection(root, "train", train=False)[0]
    assert "a.jpg is 30x40 (HxW) on disk but 60x80 in the annotations" in caplog.text
    assert target["orig_size"] == (30, 40)
    np.testing.assert_allclose(target["boxes"][0].numpy(), [5, 10, 20, 17.5])
