"""The CLS-LOC reader (XMLs or the solution CSVs), the generator and the training crop with its boxes."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from detection.devkit import DevkitError, read_loc_solution, read_loc_synset_mapping
from detection.errors import DatasetError
from detection.localization.data import (
    LocTrainDataset,
    find_cls_loc_root,
    random_crop_with_boxes,
    read_cls_loc,
    write_imagefolder_view,
)


def test_generated_root_has_the_distributed_layout(cls_loc_root: Path) -> None:
    ilsvrc = cls_loc_root / "ILSVRC"
    assert len(list((ilsvrc / "Data/CLS-LOC/train").glob("*/*.JPEG"))) == 12
    assert len(list((ilsvrc / "Annotations/CLS-LOC/val").glob("ILSVRC2012_val_*.xml"))) == 6
    for name in ("train_cls.txt", "train_loc.txt", "val.txt"):
        assert (ilsvrc / "ImageSets/CLS-LOC" / name).is_file()
    wnids = [w for w, _ in read_loc_synset_mapping(cls_loc_root / "LOC_synset_mapping.txt")]
    assert len(wnids) == 3 and wnids == sorted(wnids)
    assert find_cls_loc_root(ilsvrc) == (cls_loc_root, ilsvrc)  # the ILSVRC folder itself works as the root


def test_xml_and_csv_sources_agree(cls_loc_root: Path, tmp_path: Path) -> None:
    from_xml = {split: read_cls_loc(cls_loc_root, split) for split in ("train", "val")}
    # The same root without the annotation folders: the boxes now come from LOC_*_solution.csv.
    copy = tmp_path / "csv_only"
    shutil.copytree(cls_loc_root, copy, ignore=shutil.ignore_patterns("Annotations"))
    for split, data in from_xml.items():
        from_csv = read_cls_loc(copy, split)
        assert [(r.image_id, r.label, r.boxes) for r in from_csv.records] == [
            (r.image_id, r.label, r.boxes) for r in data.records
        ]
    record = from_xml["train"].records[0]
    assert record.path.is_file() and record.image_id.startswith(from_xml["train"].wnids[record.label])


def test_solution_csv_errors_name_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "LOC_val_solution.csv"
    path.write_text("ImageId,PredictionString\nimg1,n01 1 2 30 40\nimg2,n01 1 2 30\n")
    with pytest.raises(DevkitError, match=r"LOC_val_solution.csv:3: expected"):
        read_loc_solution(path)
    path.write_text("ImageId,PredictionString\nimg1,n01 1 2 x 40\n")
    with pytest.raises(DevkitError, match=r"LOC_val_solution.csv:2: img1 object 0 \(n01\): coordinate xmax"):
        read_loc_solution(path)
    path.write_text("ImageId,PredictionString\nimg1,n02 1 2 30 40 n01 5 6 7 8\n")
    assert read_loc_solution(path) == {"img1": [("n02", (1.0, 2.0, 30.0, 40.0)), ("n01", (5.0, 6.0, 7.0, 8.0))]}
    with pytest.raises(DevkitError, match="unknown wnid 'n02'"):
        read_loc_solution(path, classes={"n01"})


def test_synset_mapping_rejects_repeats(tmp_path: Path) -> None:
    path = tmp_path / "LOC_synset_mapping.txt"
    path.write_text("n01 tench, Tinca tinca\nn02 goldfish\nn01 again\n")
    with pytest.raises(DevkitError, match="LOC_synset_mapping.txt:3: wnid n01 repeats line 1"):
        read_loc_synset_mapping(path)


def test_not_a_root_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not a CLS-LOC root"):
        read_cls_loc(tmp_path, "train")


def test_crop_boxes_follow_the_pixels() -> None:
    # A 20x20 image cropped at its own size (no resize): boxes are unchanged, or mirrored when flipped.
    image = np.zeros((20, 20, 3), np.uint8)
    image[2:8, 4:14] = 255
    boxes = np.array([[4, 2, 14, 8]], np.float32)
    seen_flip = seen_plain = False
    for seed in range(8):
        crop, out = random_crop_with_boxes(image, boxes, np.random.default_rng(seed), 20, (20, 20))
        ys, xs = np.nonzero(crop[..., 0])
        assert out.tolist() == [[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]]
        seen_flip |= out[0, 0] == 6
        seen_plain |= out[0, 0] == 4
    assert seen_flip and seen_plain


def test_crop_drops_boxes_mostly_outside() -> None:
    image = np.zeros((40, 40, 3), np.uint8)
    boxes = np.array([[0, 0, 10, 10], [0, 0, 40, 40]], np.float32)
    for seed in range(10):
        _, out = random_crop_with_boxes(image, boxes, np.random.default_rng(seed), 20, (40, 40))
        widths, heights = out[:, 2] - out[:, 0], out[:, 3] - out[:, 1]
        assert (widths >= 4).all() and (heights >= 4).all() and (out >= 0).all() and (out <= 20).all()


def test_training_samples_are_reproducible(cls_loc_root: Path) -> None:
    data = read_cls_loc(cls_loc_root, "train")
    dataset = LocTrainDataset(data.records, data.wnids, 48, (56, 64), seed=3)
    a, b = dataset[(5, 1)], dataset[(5, 1)]
    assert a[0].shape == (3, 48, 48) and a[0].dtype.is_floating_point is False
    assert (a[0] == b[0]).all() and (a[1] == b[1]).all() and a[2] == data.records[5].label


def test_imagefolder_view_for_the_classifier(cls_loc_root: Path, tmp_path: Path) -> None:
    view = write_imagefolder_view(cls_loc_root, tmp_path / "view")
    data = read_cls_loc(cls_loc_root, "val")
    assert sorted(p.name for p in (view / "train").iterdir()) == data.wnids
    linked = sorted(p.stem for p in (view / "val").glob("*/*.JPEG"))
    assert linked == sorted(r.image_id for r in data.records)
