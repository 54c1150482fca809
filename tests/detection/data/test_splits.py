"""Training on several splits (detection/data/splits.py, detection/data/coco.py's unions): one spelling for every
dataset, COCO 2014 in its real layout with Detectron's minival files, disjoint parts, agreeing categories and
``exclude_images``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from detection.config import load_config
from detection.data import CocoDetection, CocoUnion, DatasetError, build_dataset, resolve_split
from detection.data.coco import default_image_dir, read_image_ids
from detection.data.splits import join_splits, split_parts
from detection.engine.own_data import own_data_kwargs

CATEGORIES = [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}]
# COCO 2014: train ids 1–2, val ids 3–5; Detectron's minival is id 5, val minus minival ids 3–4.
SPLITS = {"train2014": [1, 2], "val2014": [3, 4, 5], "minival2014": [5], "valminusminival2014": [3, 4]}


def coco_json(ids: list[int], folder: str, categories: list[dict] = CATEGORIES) -> dict:
    images = [{"id": i, "file_name": f"COCO_{folder}_{i:012d}.jpg", "height": 48, "width": 64} for i in ids]
    annotations = [{"id": 100 + i, "image_id": i, "category_id": 1 + 2 * (i % 2), "bbox": [4, 4, 20, 16],
                    "iscrowd": 0, "area": 320} for i in ids]  # fmt: skip
    return {"images": images, "annotations": annotations, "categories": categories}


@pytest.fixture
def coco2014(tmp_path: Path, write_image) -> Path:
    """``annotations/instances_{train2014,val2014,minival2014,valminusminival2014}.json``, ``train2014/`` and
    ``val2014/`` (Detectron's minival files name val2014's images)."""
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    for split, ids in SPLITS.items():
        folder = "train2014" if split == "train2014" else "val2014"
        data = coco_json(ids, folder)
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
        for image in data["images"]:
            write_image(root / folder / image["file_name"], 48, 64, seed=image["id"])
    return root


def test_one_spelling_for_lists_and_plus_joined_names() -> None:
    assert join_splits(["train2014", "valminusminival2014"]) == "train2014+valminusminival2014"
    assert split_parts("train2014+valminusminival2014") == split_parts(["train2014", "valminusminival2014"])
    assert split_parts("07++12", {"07++12": "2007_trainval+2007_test+2012_trainval"}) == [
        "2007_trainval", "2007_test", "2012_trainval"]  # fmt: skip
    assert resolve_split("coco", ["train2014", "val2014"], train=True) == "train2014+val2014"
    for bad in ("train2014+", "train2014++val2014", ["train2014", ""]):
        with pytest.raises(DatasetError, match="empty"):
            split_parts(bad)


def test_the_config_takes_a_list_or_a_string() -> None:
    listed = load_config(None, ["data.train_split=[train2014, valminusminival2014]"]).data.train_split
    joined = load_config(None, ["data.train_split=train2014+valminusminival2014"]).data.train_split
    assert resolve_split("coco", listed, train=True) == resolve_split("coco", joined, train=True)


def test_detectrons_val_subsets_live_in_val2014(coco2014: Path) -> None:
    assert default_image_dir(coco2014, "minival2014") == coco2014 / "val2014"
    assert default_image_dir(coco2014, "valminusminival2014") == coco2014 / "val2014"
    assert default_image_dir(coco2014, "val2014") == coco2014 / "val2014"
    assert default_image_dir(coco2014, "mini", {"mini": "val2014"}) == coco2014 / "val2014"
    minival = build_dataset("coco", coco2014, "minival2014", None)
    assert isinstance(minival, CocoDetection) and minival.image_path(0) == coco2014 / "val2014" / \
        "COCO_val2014_000000000005.jpg"


@pytest.mark.parametrize("spec", ["train2014+valminusminival2014", ["train2014", "valminusminival2014"]])
def test_train2014_plus_val_minus_minival_trains_as_one(coco2014: Path, spec) -> None:
    union = build_dataset("coco", coco2014, spec, None, train=True)
    assert isinstance(union, CocoUnion) and len(union) == 4 and union.classes == ["person", "car"]
    assert union.split == "train2014+valminusminival2014" and union.label_to_cat_id == {1: 1, 2: 3}
    files = [union.locate(i)[0].image_path(union.locate(i)[1]).relative_to(coco2014).as_posix() for i in range(4)]
    assert files[1:3] == ["train2014/COCO_train2014_000000000002.jpg", "val2014/COCO_val2014_000000000003.jpg"]
    image, target = union[3]
    assert image.shape == (3, 48, 64) and target["labels"].tolist() == [1]  # id 4: category 1 (person)
    with pytest.raises(DatasetError, match="evaluate one at a time"):
        _ = union.coco


def test_a_split_sharing_images_with_another_is_refused_naming_both(coco2014: Path) -> None:
    with pytest.raises(DatasetError) as error:
        build_dataset("coco", coco2014, "train2014+val2014+minival2014", None, train=True)
    message = str(error.value)
    assert "instances_val2014.json" in message and "instances_minival2014.json" in message
    assert "share 1 image (e.g. image id 5)" in message and "valminusminival2014" in message


def test_exclude_images_removes_minival_from_the_full_val(coco2014: Path, tmp_path: Path, caplog) -> None:
    minival = coco2014 / "annotations" / "instances_minival2014.json"
    with caplog.at_level(logging.INFO, logger="detection.data.coco"):
        union = build_dataset("coco", coco2014, "train2014+val2014+minival2014", None, train=True,
                              exclude_images=minival)  # fmt: skip
    # minival is then empty: the two remaining parts are train2014 and val minus minival.
    assert [len(part) for part in union.datasets] == [2, 2, 0] and "removed 2 images" in caplog.text
    ids = tmp_path / "minival_ids.txt"
    ids.write_text("# minival\n5\n")
    assert len(build_dataset("coco", coco2014, "train2014+val2014", None, train=True, exclude_images=ids)) == 4
    assert read_image_ids(minival) == read_image_ids(ids) == {5}
    ids.write_text("5, 7\nCOCO_val2014_000000000005.jpg\n")
    with pytest.raises(DatasetError, match=r"minival_ids.txt:2: 'COCO_val2014_000000000005.jpg' is not an image id"):
        read_image_ids(ids)


def test_exclude_images_that_removes_nothing_warns(coco2014: Path, tmp_path: Path, caplog) -> None:
    ids = tmp_path / "ids.txt"
    ids.write_text("999\n")
    with caplog.at_level(logging.WARNING, logger="detection.data.coco"):
        build_dataset("coco", coco2014, "train2014", None, train=True, exclude_images=ids)
    assert "removed 0 images" in caplog.text


def test_splits_with_different_categories_cannot_be_joined(coco2014: Path) -> None:
    other = coco_json([5], "val2014", [{"id": 1, "name": "person"}, {"id": 3, "name": "automobile"}])
    (coco2014 / "annotations" / "instances_minival2014.json").write_text(json.dumps(other))
    with pytest.raises(DatasetError) as error:
        build_dataset("coco", coco2014, "train2014+minival2014", None, train=True)
    message = str(error.value)
    assert "instances_train2014.json has 2 (1: person, 3: car)" in message
    assert "instances_minival2014.json has 2 (1: person, 3: automobile)" in message


def test_several_own_jsons_with_one_image_folder_or_one_each(coco2014: Path) -> None:
    cfg = load_config(None, [
        f"data.train_json=[{coco2014}/annotations/instances_train2014.json, "
        f"{coco2014}/annotations/instances_valminusminival2014.json]",
        f"data.train_images=[{coco2014}/train2014, {coco2014}/val2014]",
    ])  # fmt: skip
    kwargs = own_data_kwargs("coco", cfg.data, train=True)
    union = build_dataset("coco", "unused", "train2014+valminusminival2014", None, train=True, **kwargs)
    assert isinstance(union, CocoUnion) and [p.split for p in union.datasets] == ["instances_train2014",
                                                                                   "instances_valminusminival2014"]
    assert len(union) == 4 and union[3] is not None
    with pytest.raises(DatasetError, match="2 annotation files .* but 3 image folders"):
        build_dataset("coco", "unused", "x", None, ann_file=kwargs["ann_file"], image_dir=["a", "b", "c"])


def test_unions_of_voc_years_are_checked_too(voc_root) -> None:
    root = voc_root()
    with pytest.raises(DatasetError, match="VOC2007 trainval and VOC2007 trainval share"):
        build_dataset("voc", root, "2007_trainval+2007_trainval", None, train=True)
