"""The pieces together: shapes on disk → COCO loader → grouped sampler → DataLoader → collate, with broken files."""

import json

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from detection.data import (
    CocoDetection,
    DatasetError,
    GroupedBatchSampler,
    build_dataset,
    build_transforms,
    collate,
    generate_shapes,
)


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    return generate_shapes(tmp_path_factory.mktemp("shapes"), num_train=24, num_val=4, seed=1)


def test_training_batches_with_broken_files(shapes_root, caplog):
    broken = {"000003.jpg": b"", "000007.jpg": b"not an image", "000011.jpg": None}
    for name, data in broken.items():
        path = shapes_root / "train" / name
        if data is None:
            path.write_bytes(path.read_bytes()[:300])  # truncated JPEG
        else:
            path.write_bytes(data)
    ds = build_dataset("shapes", shapes_root, "train", build_transforms(True, (96, 128), 200), train=True)
    sampler = GroupedBatchSampler(ds, 4, seed=0)
    loader = DataLoader(ds, batch_sampler=sampler, collate_fn=collate, num_workers=0)
    seen, skipped = 0, 0
    for images, targets in loader:
        skipped += targets.num_skipped
        seen += len(images)
        for image, target in zip(images, targets):
            assert min(image.shape[1:]) in (96, 128) and max(image.shape[1:]) <= 200
            boxes = target["boxes"]
            assert (boxes[:, 2:] > boxes[:, :2]).all()
            assert (boxes[:, 2] <= image.shape[2] + 1e-3).all() and (boxes[:, 3] <= image.shape[1] + 1e-3).all()
        assert len({image.shape[1] <= image.shape[2] for image in images}) <= 1  # one aspect group per batch
    sampled = [i for batch in sampler for i in batch]  # padding may repeat an index
    num_broken = sum(ds.image_info(i)["file_name"] in broken for i in sampled)
    assert num_broken >= 3 and skipped == num_broken and seen == len(sampled) - num_broken
    assert sorted(p.rsplit("/", 1)[1] for p in ds.skipped) == sorted(broken)
    for name in broken:
        assert name in caplog.text
    with pytest.raises(DatasetError, match="000003.jpg"):
        strict = build_dataset("shapes", shapes_root, "train", None, strict=True)
        [strict[i] for i in range(len(strict))]


def test_huge_image_boxes_follow_the_reduced_decode(tmp_path):
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    (root / "val").mkdir()
    cv2.imwrite(str(root / "val" / "wide.jpg"), np.full((60, 12000, 3), 128, np.uint8))
    data = {"images": [{"id": 1, "file_name": "wide.jpg", "height": 60, "width": 12000}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [6000, 10, 4000, 40], "iscrowd": 0}],
            "categories": [{"id": 1, "name": "thing"}]}
    (root / "annotations" / "instances_val.json").write_text(json.dumps(data))
    image, target = CocoDetection(root, "val")[0]
    assert target["orig_size"] == (60, 12000) and max(image.shape) <= 10_000
    factor = image.shape[2] / 12000
    assert target["scale"] == pytest.approx(factor, rel=0.02)
    torch.testing.assert_close(target["boxes"], torch.tensor([[6000.0, 10, 10000, 50]]) * factor, rtol=0, atol=0.5)
