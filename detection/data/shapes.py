"""``shapes``: a generated detection dataset written in COCO format, so the COCO loader is what runs on it.

Five filled shape classes in random colours with enough contrast to their surroundings, on textured backgrounds
(low-frequency noise, gradients, stripes, blotches). Each image holds 1–6 objects whose bounding boxes span from
``min_object_size`` (~16 px) to 90% of the image's shorter side; objects may overlap, but every object keeps at
least ``min_visible`` of its pixels visible, so every label stays learnable. Boxes are the tight boxes of the whole
shape (continuous xyxy, COCO ``[x, y, w, h]`` on disk). Every image is a pure function of ``(seed, split, index)``.

``generate_shapes_yolo`` writes the same images in the ultralytics YOLO layout, with background-only images if asked
(``--dataset yolo``, docs/custom_data.md).

``write_crop_dataset`` cuts ground-truth crops (plus a ``background`` class) into an ImageFolder tree for
pre-training the backbone as a classifier: the paper's pipeline in miniature.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from detection.data.coco import CocoDetection, load_coco_json
from detection.data.io import read_image, safe_join
from detection.data.transforms import DetectionTransform

SHAPE_CLASSES = ("circle", "square", "triangle", "diamond", "cross")
SPLITS = {"train": 0, "val": 1}


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A float32 ``[H, W, 3]`` textured background around a random base colour."""
    base = rng.uniform(30, 225, size=3).astype(np.float32)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    kind = rng.integers(4)
    if kind == 0:  # smooth noise
        coarse = rng.normal(0, 30, size=(rng.integers(3, 9), rng.integers(3, 9), 3)).astype(np.float32)
        texture = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    elif kind == 1:  # linear gradient
        angle = rng.uniform(0, 2 * np.pi)
        t = (xx * np.cos(angle) + yy * np.sin(angle)) / max(height, width)
        texture = (t - t.mean())[..., None] * rng.uniform(-90, 90, size=3).astype(np.float32)
    elif kind == 2:  # stripes
        angle, period = rng.uniform(0, np.pi), rng.uniform(6, 40)
        wave = np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period)
        texture = wave[..., None] * rng.uniform(-30, 30, size=3).astype(np.float32)
    else:  # blotches
        texture = np.zeros((height, width, 3), np.float32)
        for _ in range(rng.integers(3, 9)):
            center = (int(rng.integers(width)), int(rng.integers(height)))
            axes = (int(rng.integers(8, width // 2)), int(rng.integers(8, height // 2)))
            colour = rng.uniform(-50, 50, size=3).tolist()
            cv2.ellipse(texture, center, axes, float(rng.uniform(0, 180)), 0, 360, colour, -1)
        texture = cv2.GaussianBlur(texture, (0, 0), 5)
    return base + texture


def _shape_mask(kind: str, height: int, width: int, box: tuple[int, int, int, int]) -> np.ndarray:
    """uint8 mask of shape ``kind`` filling the integer box (x, y, w, h) as tightly as the shape allows."""
    x, y, w, h = box
    mask = np.zeros((height, width), np.uint8)
    x2, y2, cx, cy = x + w - 1, y + h - 1, x + (w - 1) / 2, y + (h - 1) / 2
    if kind == "circle":
        cv2.ellipse(mask, (round(cx), round(cy)), (max(1, (w - 1) // 2), max(1, (h - 1) // 2)), 0, 0, 360, 1, -1)
    elif kind == "square":
        mask[y : y2 + 1, x : x2 + 1] = 1
    elif kind == "triangle":
        cv2.fillPoly(mask, [np.array([[round(cx), y], [x2, y2], [x, y2]], np.int32)], 1)
    elif kind == "diamond":
        cv2.fillPoly(mask, [np.array([[round(cx), y], [x2, round(cy)], [round(cx), y2], [x, round(cy)]], np.int32)], 1)
    else:  # cross: two bars a third of the size thick
        tw, th = max(2, w // 3), max(2, h // 3)
        mask[y : y2 + 1, round(cx - tw / 2) : round(cx + tw / 2)] = 1
        mask[round(cy - th / 2) : round(cy + th / 2), x : x2 + 1] = 1
    return mask


def _contrasting_colour(rng: np.random.Generator, around: np.ndarray, min_distance: float = 110.0) -> np.ndarray:
    best, best_distance = None, -1.0
    for _ in range(30):
        colour = rng.uniform(0, 255, size=3)
        distance = float(np.linalg.norm(colour - around))
        if distance >= min_distance:
            return colour
        if distance > best_distance:
            best, best_distance = colour, distance
    return best  # type: ignore[return-value]


def render_image(
    rng: np.random.Generator, height: int, width: int, *, max_objects: int = 6, min_object_size: int = 16,
    max_object_fraction: float = 0.9, min_visible: float = 0.65,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """One RGB uint8 image and its objects: dicts with ``label`` (1-based), ``bbox`` [x, y, w, h], ``area``."""
    image = _background(rng, height, width)
    max_size = max(min_object_size + 1, int(max_object_fraction * min(height, width)))
    wanted = int(rng.integers(1, max_objects + 1))
    objects: list[dict[str, Any]] = []
    visible: list[np.ndarray] = []
    for _ in range(wanted * 8):
        if len(objects) == wanted:
            break
        size = float(np.exp(rng.uniform(np.log(min_object_size), np.log(max_size))))
        aspect = float(np.exp(rng.uniform(-0.2, 0.2)))
        w = int(np.clip(round(size * aspect), min_object_size, width))
        h = int(np.clip(round(size / aspect), min_object_size, height))
        x, y = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
        label = int(rng.integers(len(SHAPE_CLASSES)))
        mask = _shape_mask(SHAPE_CLASSES[label], height, width, (x, y, w, h)).astype(bool)
        if any((v & ~mask).sum() < min_visible * o["area"] for v, o in zip(visible, objects)):
            continue
        colour = _contrasting_colour(rng, image[mask].mean(axis=0))
        image[mask] = colour + rng.normal(0, 6, size=3)
        visible = [v & ~mask for v in visible] + [mask]
        bx, by, bw, bh = cv2.boundingRect(mask.astype(np.uint8))
        objects.append({"label": label + 1, "bbox": [bx, by, bw, bh], "area": float(mask.sum())})
    image += rng.normal(0, rng.uniform(2, 7), size=image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8), objects


def _image_size(rng: np.random.Generator, min_size: int, max_size: int) -> tuple[int, int]:
    short = int(rng.integers(min_size, (min_size + max_size) // 2 + 1))
    long = int(rng.integers(short, max_size + 1))
    return (short, long) if rng.random() < 0.6 else (long, short)


def generate_shapes(
    root: str | Path, *, num_train: int = 600, num_val: int = 150, seed: int = 0, min_size: int = 144,
    max_size: int = 224, min_object_size: int = 16, max_objects: int = 6, jpeg_quality: int = 92,
) -> Path:
    """Write the shapes dataset under ``root`` in COCO layout and return ``root``.

    Writes ``annotations/instances_{train,val}.json`` and ``{train,val}/<id>.jpg``. Image shorter sides are drawn
    from ``[min_size, (min_size + max_size) / 2]``, longer sides from ``[shorter, max_size]``, 60% landscape.
    """
    root = Path(root)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    categories = [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(SHAPE_CLASSES)]
    for split, count in (("train", num_train), ("val", num_val)):
        (root / split).mkdir(exist_ok=True)
        images, annotations = [], []
        for index in range(count):
            rng = np.random.default_rng([seed, SPLITS[split], index])
            height, width = _image_size(rng, min_size, max_size)
            pixels, objects = render_image(rng, height, width, max_objects=max_objects,
                                           min_object_size=min_object_size)
            image_id, file_name = index + 1, f"{index + 1:06d}.jpg"
            cv2.imwrite(str(root / split / file_name), cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR),
                        [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
            images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
            for obj in objects:
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": obj["label"],
                                    "bbox": obj["bbox"], "area": obj["area"], "iscrowd": 0})
        tmp = root / "annotations" / f".instances_{split}.json.tmp{os.getpid()}"
        tmp.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
        os.replace(tmp, root / "annotations" / f"instances_{split}.json")
    return root


def ensure_shapes(root: str | Path, **kwargs: Any) -> Path:
    """Generate the dataset at ``root`` unless it is already there. Safe when several processes race: each
    generates into its own temporary folder and the first complete one is renamed into place."""
    root = Path(root)
    if all((root / "annotations" / f"instances_{s}.json").is_file() for s in SPLITS):
        return root
    tmp = root.parent / f".{root.name}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    generate_shapes(tmp, **kwargs)
    try:
        os.rename(tmp, root)  # also replaces an empty directory
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not all((root / "annotations" / f"instances_{s}.json").is_file() for s in SPLITS):
            raise
    return root


def generate_shapes_yolo(
    root: str | Path, *, num_train: int = 600, num_val: int = 150, num_background: int = 0, seed: int = 0,
    min_size: int = 144, max_size: int = 224, max_objects: int = 6, jpeg_quality: int = 92,
) -> Path:
    """Write the shapes data in the ultralytics YOLO layout under ``root`` and return ``root / "data.yaml"``.

    ``data.yaml`` (``path: .``, ``train: images/train``, ``val: images/val``, ``names``), ``images/<split>/<n>.jpg``
    and ``labels/<split>/<n>.txt`` (``class cx cy w h`` normalised, class 0-based). The object images are those of
    :func:`generate_shapes` with the same arguments; each split then gets ``num_background`` images without objects
    (textured background only), half with an empty label file and half with none (both mean "no objects").
    """
    root = Path(root)
    for split, count in (("train", num_train), ("val", num_val)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for index in range(count + num_background):
            rng = np.random.default_rng([seed, SPLITS[split], index])
            height, width = _image_size(rng, min_size, max_size)
            name = f"{index + 1:06d}"
            if index < count:
                pixels, objects = render_image(rng, height, width, max_objects=max_objects)
                lines = [f"{o['label'] - 1} {(o['bbox'][0] + o['bbox'][2] / 2) / width:.6f} "
                         f"{(o['bbox'][1] + o['bbox'][3] / 2) / height:.6f} {o['bbox'][2] / width:.6f} "
                         f"{o['bbox'][3] / height:.6f}\n" for o in objects]
                (root / "labels" / split / f"{name}.txt").write_text("".join(lines))
            else:
                image = _background(rng, height, width) + rng.normal(0, 4, size=(height, width, 3))
                pixels = np.clip(image, 0, 255).astype(np.uint8)
                if index % 2:
                    (root / "labels" / split / f"{name}.txt").write_text("")
            cv2.imwrite(str(root / "images" / split / f"{name}.jpg"), cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR),
                        [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
    names = "".join(f"  {i}: {n}\n" for i, n in enumerate(SHAPE_CLASSES))
    (root / "data.yaml").write_text(f"path: .\ntrain: images/train\nval: images/val\nnames:\n{names}")
    return root / "data.yaml"


class ShapesDataset(CocoDetection):
    """The COCO loader on a shapes root (``split`` is ``"train"`` or ``"val"``); generated first if missing.
    Scored with pycocotools and, as the headline, VOC07 11-point mAP@0.5."""

    headline_voc07 = True

    def __init__(self, root: str | Path, split: str = "train", transforms: DetectionTransform | None = None, *,
                 generate: bool = True, generate_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if generate:
            ensure_shapes(root, **(generate_kwargs or {}))
        super().__init__(root, split, transforms, **kwargs)


def _box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    lt, rb = np.maximum(box[:2], boxes[:, :2]), np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return inter / (area(box) + area(boxes) - inter)


def _square_crop(image: np.ndarray, cx: float, cy: float, side: float, size: int) -> np.ndarray:
    """The square window of ``side`` pixels centred at (cx, cy), resampled to ``size``², edges replicated."""
    scale = size / side
    matrix = np.array([[scale, 0, size / 2 - cx * scale], [0, scale, size / 2 - cy * scale]], np.float32)
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def write_crop_dataset(
    coco_root: str | Path, out_root: str | Path, split: str, size: int = 64, *, context: float = 0.2,
    jitter: float = 0.1, backgrounds_per_image: int = 2, max_background_iou: float = 0.3, seed: int = 0,
) -> Path:
    """Cut classification crops from a COCO-layout detection split into ``out_root/<split>/<class>/*.png``.

    Each non-crowd ground-truth box gives one square crop of side ``max(w, h) · (1 + context)``, with its centre
    and side jittered by up to ``jitter`` of the side; each image also gives ``backgrounds_per_image`` random
    squares whose IoU with every box is below ``max_background_iou`` (class ``background``). Crops are resized to
    ``size × size``. Deterministic per ``seed``. Returns ``out_root/<split>``.
    """
    coco_root, out = Path(coco_root), Path(out_root) / split
    coco = load_coco_json(coco_root / "annotations" / f"instances_{split}.json")
    names = {c["id"]: c["name"] for c in coco.dataset["categories"]}
    for name in [*names.values(), "background"]:
        (out / name).mkdir(parents=True, exist_ok=True)
    for image_id in sorted(coco.imgs):
        rng = np.random.default_rng([seed, image_id])
        info = coco.imgs[image_id]
        image, _ = read_image(safe_join(coco_root / split, info["file_name"]))
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        anns = [a for a in coco.imgToAnns.get(image_id, []) if not a.get("iscrowd", 0)]
        gt = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                       for a in anns], np.float32).reshape(-1, 4)
        for ann, box in zip(anns, gt):
            side = max(box[2] - box[0], box[3] - box[1]) * (1 + context) * (1 + rng.uniform(-jitter, jitter))
            cx, cy = (box[:2] + box[2:]) / 2 + rng.uniform(-jitter, jitter, size=2) * side
            crop = _square_crop(bgr, cx, cy, max(side, 2.0), size)
            cv2.imwrite(str(out / names[ann["category_id"]] / f"{image_id:06d}_{ann['id']}.png"), crop)
        height, width = image.shape[:2]
        written = 0
        for _ in range(20 * backgrounds_per_image):
            if written == backgrounds_per_image:
                break
            side = float(rng.uniform(16, min(height, width)))
            x, y = rng.uniform(0, width - side), rng.uniform(0, height - side)
            window = np.array([x, y, x + side, y + side], np.float32)
            if len(gt) and _box_iou(window, gt).max() >= max_background_iou:
                continue
            crop = _square_crop(bgr, x + side / 2, y + side / 2, side, size)
            cv2.imwrite(str(out / "background" / f"{image_id:06d}_bg{written}.png"), crop)
            written += 1
    return out
