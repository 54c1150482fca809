"""The embedded default classification data: 10 classes of drawn shapes written in the CIFAR-10 pickle layout.

`write_synthetic_cifar(root)` creates `root/data_batch_1..5`, `root/test_batch` and `root/batches.meta` exactly as
the real `cifar-10-batches-py/` (python pickles, bytes keys, `data` as `[N, 3072]` uint8 with the R, G and B planes
one after another), so training on it goes through the real CIFAR loader. The class is the shape; colours, size,
position, rotation and noise are random, so a net has to learn shape, not colour.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import cv2
import numpy as np

from backbones.data import CIFAR_TEST_FILE, CIFAR_TRAIN_FILES

SHAPES = ("circle", "square", "triangle", "plus", "ring", "hstripes", "vstripes", "diamond", "cross", "dots")
SIZE = 32


def _polygon(center: np.ndarray, radius: float, n: int, angle: float) -> np.ndarray:
    t = angle + np.arange(n) * 2 * np.pi / n
    return np.stack([center[0] + radius * np.cos(t), center[1] + radius * np.sin(t)], 1).round().astype(np.int32)


def draw_shape(label: int, rng: np.random.Generator) -> np.ndarray:
    """One `[32, 32, 3]` uint8 RGB image of shape `SHAPES[label]`."""
    bg = rng.integers(0, 256, 3)
    fg = (bg + rng.integers(80, 176, 3)) % 256  # guaranteed contrast in every channel
    img = np.empty((SIZE, SIZE, 3), np.uint8)
    img[:] = bg
    color = tuple(int(c) for c in fg)
    r = float(rng.uniform(6, 11))
    c = rng.uniform(r + 1, SIZE - r - 1, 2)
    ci, ri = (int(round(c[0])), int(round(c[1]))), int(round(r))
    angle = float(rng.uniform(0, 2 * np.pi))
    thick = int(rng.integers(2, 4))
    name = SHAPES[label]
    if name == "circle":
        cv2.circle(img, ci, ri, color, -1, cv2.LINE_AA)
    elif name == "ring":
        cv2.circle(img, ci, ri, color, thick, cv2.LINE_AA)
    elif name in ("square", "triangle", "diamond"):
        n, a = {"square": (4, np.pi / 4), "triangle": (3, angle), "diamond": (4, 0.0)}[name]
        r_poly = r if name != "diamond" else r * 1.1
        pts = _polygon(c, r_poly, n, a + (rng.uniform(-0.2, 0.2) if name != "triangle" else 0))
        if name == "diamond":
            pts[:, 0] = (c[0] + (pts[:, 0] - c[0]) * 0.6).round().astype(np.int32)
        cv2.fillPoly(img, [pts], color, cv2.LINE_AA)
    elif name in ("plus", "cross"):
        base = 0.0 if name == "plus" else np.pi / 4
        for a in (base, base + np.pi / 2):
            d = np.array([np.cos(a), np.sin(a)]) * r
            p1, p2 = (c - d).round().astype(int), (c + d).round().astype(int)
            cv2.line(img, (int(p1[0]), int(p1[1])), (int(p2[0]), int(p2[1])), color, thick, cv2.LINE_AA)
    elif name in ("hstripes", "vstripes"):
        period = int(rng.integers(5, 8))
        x0, y0, x1, y1 = (int(v) for v in (c[0] - r, c[1] - r, c[0] + r, c[1] + r))
        for k in range(-period, 2 * SIZE, period):
            if name == "hstripes" and y0 <= k <= y1:
                cv2.line(img, (x0, k), (x1, k), color, 2)
            if name == "vstripes" and x0 <= k <= x1:
                cv2.line(img, (k, y0), (k, y1), color, 2)
    else:  # dots: a 3x3 grid of small discs
        step = r * 0.75
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                p = (int(round(c[0] + dx * step)), int(round(c[1] + dy * step)))
                cv2.circle(img, p, max(1, ri // 5), color, -1, cv2.LINE_AA)
    noise = rng.normal(0, 12, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def write_cifar_batches(
    root: str | Path, batches: dict[str, tuple[np.ndarray, np.ndarray]], classes: list[str]
) -> Path:
    """Write `{file name: (images [N, 32, 32, 3] uint8 RGB, labels [N])}` and `batches.meta` as CIFAR-10 does."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for name, (images, labels) in batches.items():
        data = images.transpose(0, 3, 1, 2).reshape(len(images), -1)  # CIFAR: R plane, G plane, B plane
        batch = {
            b"batch_label": name.encode(),
            b"labels": [int(v) for v in labels],
            b"data": np.ascontiguousarray(data),
            b"filenames": [f"{classes[lab]}_{i:06d}.png".encode() for i, lab in enumerate(labels)],
        }
        _atomic_pickle(root / name, batch)
    meta = {b"label_names": [c.encode() for c in classes], b"num_vis": 3072}
    _atomic_pickle(root / "batches.meta", meta)
    return root


def _atomic_pickle(path: Path, obj: object) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        pickle.dump(obj, f, protocol=2)
    tmp.replace(path)


def write_synthetic_cifar(root: str | Path, train_per_batch: int = 2000, test_size: int = 2000, seed: int = 0) -> Path:
    """Write the shapes dataset in CIFAR-10 layout under `root` (skipped if already complete); returns `root`."""
    root = Path(root)
    files = [root / n for n in (*CIFAR_TRAIN_FILES, CIFAR_TEST_FILE, "batches.meta")]
    if all(f.exists() for f in files):
        return root
    rng = np.random.default_rng(seed)
    batches = {}
    for name, n in [(f, train_per_batch) for f in CIFAR_TRAIN_FILES] + [(CIFAR_TEST_FILE, test_size)]:
        labels = rng.permutation(np.arange(n) % len(SHAPES))
        batches[name] = (np.stack([draw_shape(int(lab), rng) for lab in labels]), labels)
    return write_cifar_batches(root, batches, list(SHAPES))
