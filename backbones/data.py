"""Classification datasets (CIFAR-10 pickle batches, ImageFolder trees) and the paper's augmentations.

Datasets return **uint8** tensors (`[3, H, W]`, RGB) and an int label; conversion to float and normalisation
happen on the training device in one batched op (`Normalizer`), so workers move 4x fewer bytes and do no float
maths. Training augmentation is keyed: a sampler that yields `(index, epoch)` gets the same random crop/flip for
that pair in every run, whatever the number of workers, which is what makes `--resume` exact.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor, nn
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# PCA of ImageNet RGB pixels (AlexNet's "standard color augmentation", values as in fb.resnet.torch).
IMAGENET_EIGVAL = np.array([0.2175, 0.0188, 0.0045], dtype=np.float32)
IMAGENET_EIGVEC = np.array(
    [[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]], dtype=np.float32
)
CIFAR_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST_FILE = "test_batch"

Key = int | tuple[int, int]
Transform = Callable[[np.ndarray, np.random.Generator], Any]


def _to_chw(img: np.ndarray) -> Tensor:
    """HWC uint8 numpy -> contiguous `[3, H, W]` uint8 tensor."""
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))


def resize_shorter(img: np.ndarray, size: int) -> np.ndarray:
    """Resize an HWC image so its shorter side is `size` (area filter when shrinking, bilinear when enlarging)."""
    h, w = img.shape[:2]
    if min(h, w) == size:
        return img
    scale = size / min(h, w)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(img, (new_w, new_h), interpolation=interp)


def center_crop(img: np.ndarray, size: int) -> np.ndarray:
    h, w = img.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return img[top : top + size, left : left + size]


# ----------------------------------------------------------------------------------------------- training views
class ScaleAugment:
    """ImageNet recipe (Sec. 3.4): shorter side uniform in `scale_range`, random `crop`, flip, PCA lighting.

    `lighting` is the std of AlexNet's PCA colour noise (0 disables it).
    """

    def __init__(self, crop: int = 224, scale_range: tuple[int, int] = (256, 480), lighting: float = 0.1):
        self.crop, self.scale_range, self.lighting = crop, scale_range, lighting

    def __call__(self, img: np.ndarray, rng: np.random.Generator) -> Tensor:
        short = int(rng.integers(self.scale_range[0], self.scale_range[1] + 1))
        h, w = img.shape[:2]
        scale = short / min(h, w)
        new_h, new_w = max(short, round(h * scale)), max(short, round(w * scale))
        top, left = int(rng.integers(0, new_h - self.crop + 1)), int(rng.integers(0, new_w - self.crop + 1))
        # Crop the matching window of the original, then resize only that: same view, far fewer pixels touched.
        y0, x0 = int(top / scale), int(left / scale)
        side = max(1, round(self.crop / scale))
        y0, x0 = min(y0, h - min(side, h)), min(x0, w - min(side, w))
        window = img[y0 : y0 + side, x0 : x0 + side]
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        img = cv2.resize(window, (self.crop, self.crop), interpolation=interp)
        if rng.random() < 0.5:
            img = img[:, ::-1]
        if self.lighting > 0:
            alpha = rng.normal(0.0, self.lighting, size=3).astype(np.float32)
            offset = np.rint(IMAGENET_EIGVEC @ (alpha * IMAGENET_EIGVAL) * 255).astype(np.int16)
            img = np.clip(img.astype(np.int16) + offset, 0, 255).astype(np.uint8)
        return _to_chw(img)


class PadCropFlip:
    """CIFAR recipe (Sec. 4.2): zero-pad `pad` pixels, random `crop`×`crop` crop, horizontal flip."""

    def __init__(self, crop: int = 32, pad: int = 4):
        self.crop, self.pad = crop, pad

    def __call__(self, img: np.ndarray, rng: np.random.Generator) -> Tensor:
        p = self.pad
        padded = np.pad(img, ((p, p), (p, p), (0, 0)))
        top, left = int(rng.integers(0, 2 * p + 1)), int(rng.integers(0, 2 * p + 1))
        img = padded[top : top + self.crop, left : left + self.crop]
        if rng.random() < 0.5:
            img = img[:, ::-1]
        return _to_chw(img)


# --------------------------------------------------------------------------------------------- evaluation views
class CenterView:
    """Shorter side -> `resize`, then the central `crop`×`crop`: `[3, crop, crop]` uint8."""

    def __init__(self, crop: int = 224, resize: int = 256):
        self.crop, self.resize = crop, resize

    def __call__(self, img: np.ndarray, rng: np.random.Generator | None = None) -> Tensor:
        return _to_chw(center_crop(resize_shorter(img, self.resize), self.crop))


class TenCropView:
    """Shorter side -> `resize`, then 4 corners + centre and their flips: `[10, 3, crop, crop]` uint8.

    Order is torchvision's `ten_crop`: tl, tr, bl, br, centre, then the same five of the flipped image.
    """

    def __init__(self, crop: int = 224, resize: int = 256):
        self.crop, self.resize = crop, resize

    def __call__(self, img: np.ndarray, rng: np.random.Generator | None = None) -> Tensor:
        resized = _to_chw(resize_shorter(img, self.resize))
        return torch.stack(TF.ten_crop(resized, [self.crop, self.crop]))


class MultiScaleView:
    """Whole image at each shorter side in `scales` (and its flip): a list of `[3, h_s, w_s]` uint8 tensors."""

    def __init__(self, scales: Sequence[int] = (224, 256, 384, 480, 640), flip: bool = True):
        self.scales, self.flip = tuple(scales), flip

    def __call__(self, img: np.ndarray, rng: np.random.Generator | None = None) -> list[Tensor]:
        views = []
        for s in self.scales:
            view = _to_chw(resize_shorter(img, s))
            views.append(view)
            if self.flip:
                views.append(view.flip(-1))
        return views


# ---------------------------------------------------------------------------------------------------- datasets
class KeyedDataset(Dataset):
    """Base: `dataset[i]` or `dataset[(i, epoch)]` -> `(transform(image_i, rng), label_i)`.

    The rng is seeded from `(seed, epoch, i)` for tuple keys and from `i` for int keys, so views are reproducible.
    """

    classes: list[str]
    targets: list[int]

    def __init__(self, transform: Transform, seed: int = 0):
        self.transform, self.seed = transform, seed

    def load(self, index: int) -> np.ndarray:
        """The image as HWC uint8 RGB."""
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, key: Key) -> tuple[Any, int]:
        index, epoch = key if isinstance(key, tuple) else (key, -1)
        rng = np.random.default_rng((self.seed, epoch + 1, index))
        return self.transform(self.load(index), rng), self.targets[index]


def _cifar_dir(root: Path) -> Path:
    for cand in (root, root / "cifar-10-batches-py"):
        if (cand / CIFAR_TEST_FILE).exists() or (cand / CIFAR_TRAIN_FILES[0]).exists():
            return cand
    raise FileNotFoundError(
        f"no CIFAR-10 python batches under {root}: expected {', '.join(CIFAR_TRAIN_FILES)}, {CIFAR_TEST_FILE} "
        f"(the cifar-10-python.tar.gz layout, optionally inside cifar-10-batches-py/)"
    )


def _unpickle(path: Path) -> dict[str, Any]:
    with open(path, "rb") as f:
        raw = pickle.load(f, encoding="bytes")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in raw.items()}


def read_cifar_batches(root: str | Path, train: bool) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read CIFAR-10 pickle batches: `(images [N, 32, 32, 3] uint8 RGB, labels [N] int64, class names)`."""
    folder = _cifar_dir(Path(root))
    files = CIFAR_TRAIN_FILES if train else (CIFAR_TEST_FILE,)
    images, labels = [], []
    for name in files:
        batch = _unpickle(folder / name)
        images.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(np.asarray(batch["labels"], dtype=np.int64))
    meta = folder / "batches.meta"
    if meta.exists():
        classes = [n.decode() if isinstance(n, bytes) else n for n in _unpickle(meta)["label_names"]]
    else:
        classes = [str(i) for i in range(int(max(lab.max() for lab in labels)) + 1)]
    return np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels), classes


class CifarDataset(KeyedDataset):
    """CIFAR-10 from its python batches. `split`: "train" (50k), "test" (10k), or with `holdout=5000` the paper's
    45k "train" / 5k "val" split (a fixed random 5k of the training batches)."""

    def __init__(self, root: str | Path, split: str, transform: Transform, holdout: int = 0, seed: int = 0):
        super().__init__(transform, seed)
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be train/val/test, got {split!r}")
        images, labels, self.classes = read_cifar_batches(root, train=split != "test")
        if split != "test" and holdout:
            order = np.random.default_rng(0).permutation(len(labels))
            keep = order[:holdout] if split == "val" else order[holdout:]
            images, labels = images[np.sort(keep)], labels[np.sort(keep)]
        elif split == "val":
            raise ValueError("split='val' needs holdout > 0")
        self.images, self.targets = images, labels.tolist()

    def load(self, index: int) -> np.ndarray:
        return self.images[index]


class ImageFolderDataset(KeyedDataset):
    """`root/<class>/*.{jpg,JPEG,png,…}` read with OpenCV (RGB); classes sorted as torchvision's ImageFolder."""

    def __init__(self, root: str | Path, transform: Transform, seed: int = 0):
        super().__init__(transform, seed)
        self.classes, class_to_idx = find_classes(str(root))
        self.samples = make_dataset(str(root), class_to_idx, extensions=IMG_EXTENSIONS)
        if not self.samples:
            raise FileNotFoundError(f"no images under {root}/<class>/")
        self.targets = [label for _, label in self.samples]

    def load(self, index: int) -> np.ndarray:
        path = self.samples[index][0]
        img = cv2.imread(path, cv2.IMREAD_COLOR)
        if img is None:
            raise OSError(f"cannot read image {path}")
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def worker_init(worker_id: int) -> None:
    """DataLoader `worker_init_fn`: one OpenCV thread per worker (the workers already run in parallel)."""
    cv2.setNumThreads(1)


def pixel_mean_std(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel mean `[3, H, W]` and per-channel std `[3]` of `[N, H, W, 3]` uint8 images, in [0, 1] units."""
    x = images.astype(np.float32) / 255.0
    return x.mean(0).transpose(2, 0, 1), x.reshape(-1, 3).std(0)


class Normalizer(nn.Module):
    """uint8 `[B, 3, H, W]` -> float `(x / 255 - mean) / std` on the batch's device.

    `mean` is per-channel `[3]` or per-pixel `[3, H0, W0]` (the paper's CIFAR input); a per-pixel mean applied to
    another size falls back to its spatial average, i.e. the per-channel mean.
    """

    def __init__(self, mean: Sequence[Any] | np.ndarray | Tensor, std: Sequence[float] | np.ndarray | Tensor):
        super().__init__()
        m = torch.as_tensor(np.asarray(mean, dtype=np.float32))
        self.register_buffer("mean", m.view(3, 1, 1) if m.dim() == 1 else m)
        self.register_buffer("std", torch.as_tensor(np.asarray(std, dtype=np.float32)).view(3, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        mean = self.mean
        if mean.shape[-2:] != x.shape[-2:]:
            mean = mean.mean((1, 2), keepdim=True)
        return (x.float() / 255.0 - mean) / self.std

    def to_config(self) -> dict[str, Any]:
        """Plain lists for a checkpoint's `config` (safe for `weights_only` loading)."""
        mean = self.mean.squeeze() if self.mean.shape[-2:] == (1, 1) else self.mean
        return {"mean": mean.tolist(), "std": self.std.flatten().tolist()}


def eval_view(mode: str, crop: int, resize: int, scales: Sequence[int] = ()) -> Transform:
    """The test-time view for `mode`: "center" / "10crop" (shorter side `resize`, `crop` crops) or "fullconv"."""
    if mode == "center":
        return CenterView(crop, resize)
    if mode == "10crop":
        return TenCropView(crop, resize)
    if mode == "fullconv":
        return MultiScaleView(scales)
    raise ValueError(f"unknown test mode {mode!r}")


def build_eval_dataset(dataset: str, data_root: str | Path, view: Transform, holdout: int = 0) -> KeyedDataset:
    """The validation images of `dataset` ("cifar10"/"synthetic": test batch or the held-out split; "imagenet"/
    "imagefolder": `data_root/val/<class>/`)."""
    if dataset in ("cifar10", "synthetic"):
        return CifarDataset(data_root, "val" if holdout else "test", view, holdout=holdout)
    return ImageFolderDataset(Path(data_root) / "val", view)
