"""Classification loaders read the real on-disk layouts; augmentations are keyed and shaped as the recipes say."""

from __future__ import annotations

import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from backbones.data import (
    CenterView,
    CifarDataset,
    ImageFolderDataset,
    MultiScaleView,
    Normalizer,
    PadCropFlip,
    ScaleAugment,
    read_cifar_batches,
)
from backbones.synthetic import SHAPES, write_synthetic_cifar


def _write_cifar_by_hand(folder: Path, n_per_batch: int = 4) -> dict[str, np.ndarray]:
    """CIFAR-10 python layout written as the original (py2 pickles: bytes keys, [N, 3072] R/G/B planes)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        planes = rng.integers(0, 256, (n_per_batch, 3, 32, 32), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 3, n_per_batch)]
        batch = {b"batch_label": name.encode(), b"labels": labels, b"data": planes.reshape(n_per_batch, 3072),
                 b"filenames": [b"x.png"] * n_per_batch}  # fmt: skip
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
        written[name] = planes
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [b"cat", b"dog", b"ship"], b"num_vis": 3072}, f, protocol=2)
    return written


@pytest.mark.parametrize("subfolder", ["", "cifar-10-batches-py"])
def test_cifar_reads_python_batches(tmp_path: Path, subfolder: str) -> None:
    written = _write_cifar_by_hand(tmp_path / subfolder if subfolder else tmp_path / "c")
    root = tmp_path if subfolder else tmp_path / "c"
    images, labels, classes = read_cifar_batches(root, train=True)
    assert images.shape == (20, 32, 32, 3) and images.dtype == np.uint8 and labels.shape == (20,)
    assert classes == ["cat", "dog", "ship"]
    # pixel (y=5, x=7) of the 2nd image of batch 1: channels come from the R, G, B planes
    np.testing.assert_array_equal(images[1, 5, 7], written["data_batch_1"][1, :, 5, 7])
    test_images, _, _ = read_cifar_batches(root, train=False)
    np.testing.assert_array_equal(test_images[3], written["test_batch"][3].transpose(1, 2, 0))

    ds = CifarDataset(root, "test", CenterView(32, 32))
    img, label = ds[3]
    assert img.dtype == torch.uint8 and img.shape == (3, 32, 32) and isinstance(label, int)
    np.testing.assert_array_equal(img.numpy(), written["test_batch"][3])


def test_cifar_holdout_split(tmp_path: Path) -> None:
    _write_cifar_by_hand(tmp_path, n_per_batch=10)
    train = CifarDataset(tmp_path, "train", CenterView(32, 32), holdout=5)
    val = CifarDataset(tmp_path, "val", CenterView(32, 32), holdout=5)
    assert (len(train), len(val)) == (45, 5)
    all_images = read_cifar_batches(tmp_path, train=True)[0].reshape(50, -1)
    seen = {row.tobytes() for row in np.concatenate([train.images, val.images]).reshape(50, -1)}
    assert seen == {row.tobytes() for row in all_images}


def test_missing_cifar_names_expected_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="data_batch_1"):
        read_cifar_batches(tmp_path, train=True)


def test_synthetic_default_uses_cifar_layout(tmp_path: Path) -> None:
    write_synthetic_cifar(tmp_path, train_per_batch=20, test_size=10)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["batches.meta", "test_batch"] + [f"data_batch_{i}" for i in range(1, 6)]
    )
    images, labels, classes = read_cifar_batches(tmp_path, train=True)
    assert images.shape == (100, 32, 32, 3) and classes == list(SHAPES)
    assert np.bincount(labels).tolist() == [10] * 10


def test_imagefolder_reads_jpeg_tree_as_rgb(tmp_path: Path) -> None:
    colours = {"n01440764": (0, 0, 255), "n01443537": (0, 255, 0)}  # BGR on disk: red, green
    for wnid, bgr in colours.items():
        for split in ("train", "val"):
            (tmp_path / split / wnid).mkdir(parents=True)
            for i in range(2):
                cv2.imwrite(str(tmp_path / split / wnid / f"{wnid}_{i}.JPEG"), np.full((40, 60, 3), bgr, np.uint8))
    ds = ImageFolderDataset(tmp_path / "val", CenterView(24, 28))
    assert ds.classes == sorted(colours) and ds.targets == [0, 0, 1, 1]
    img, label = ds[0]
    assert img.shape == (3, 24, 24) and label == 0
    assert img[0].float().mean() > 240 and img[1].float().mean() < 15  # red, read as RGB
    train = ImageFolderDataset(tmp_path / "train", ScaleAugment(crop=16, scale_range=(18, 30)))
    assert train[(1, 0)][0].shape == (3, 16, 16)


def test_training_views_are_keyed_and_shaped() -> None:
    img = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    aug = PadCropFlip(crop=32, pad=4)
    rng = np.random.default_rng(1)
    out = aug(img, rng)
    assert out.shape == (3, 32, 32) and out.dtype == torch.uint8
    views = [aug(img, np.random.default_rng((0, e, 7))) for e in range(8)]
    assert torch.equal(views[0], aug(img, np.random.default_rng((0, 0, 7))))
    assert any(not torch.equal(views[0], v) for v in views[1:])

    big = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    for seed in range(5):
        assert ScaleAugment(crop=224)(big, np.random.default_rng(seed)).shape == (3, 224, 224)


def test_multiscale_view_sizes_and_flips() -> None:
    img = np.zeros((100, 150, 3), np.uint8)
    views = MultiScaleView((50, 80), flip=True)(img)
    assert [tuple(v.shape) for v in views] == [(3, 50, 75), (3, 50, 75), (3, 80, 120), (3, 80, 120)]


def test_normalizer_per_pixel_and_per_channel() -> None:
    x = torch.full((2, 3, 4, 4), 255, dtype=torch.uint8)
    mean = torch.rand(3, 4, 4)
    out = Normalizer(mean, [0.5, 0.5, 0.5])(x)
    torch.testing.assert_close(out, ((1 - mean) / 0.5).expand(2, 3, 4, 4))
    other = Normalizer(mean, [1.0, 1.0, 1.0])(torch.zeros(1, 3, 6, 6, dtype=torch.uint8))
    torch.testing.assert_close(other[0, :, 0, 0], -mean.mean((1, 2)))
    cfg = Normalizer([0.1, 0.2, 0.3], [1.0, 2.0, 3.0]).to_config()
    assert cfg["std"] == pytest.approx([1.0, 2.0, 3.0]) and cfg["mean"] == pytest.approx([0.1, 0.2, 0.3])
