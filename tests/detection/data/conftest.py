"""Tiny on-disk datasets in the real layouts, written with OpenCV and json."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from detection.data.prepare import Archive


def write_image(path: Path, height: int, width: int, *, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, size=(height, width, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), pixels)
    return path


@pytest.fixture(name="write_image")
def write_image_fixture() -> Callable[..., Path]:
    """``write_image(path, height, width, seed=0)``: a random-noise image in the format the suffix names."""
    return write_image


@pytest.fixture
def coco_root(tmp_path: Path) -> Callable[..., Path]:
    """Factory: a COCO root with split ``train``: category ids {1, 3, 90}, a crowd object, an empty image.

    Images: id 10 (60x80) with a cat-3 box, a crowd cat-1 box and a cat-90 box; id 20 (80x40, portrait) with a
    cat-1 box; id 30 (50x50) without annotations. ``mutate(data)`` may edit the JSON before it is written.
    """

    def make(mutate: Callable[[dict[str, Any]], None] | None = None, split: str = "train") -> Path:
        root = tmp_path / "coco"
        images = [
            {"id": 10, "file_name": "a.jpg", "height": 60, "width": 80},
            {"id": 20, "file_name": "b.png", "height": 80, "width": 40},
            {"id": 30, "file_name": "c.jpg", "height": 50, "width": 50},
        ]
        annotations = [
            {"id": 1, "image_id": 10, "category_id": 3, "bbox": [10, 20, 30, 15], "iscrowd": 0, "area": 450},
            {"id": 2, "image_id": 10, "category_id": 1, "bbox": [0, 0, 40, 40], "iscrowd": 1, "area": 1600},
            {"id": 3, "image_id": 10, "category_id": 90, "bbox": [70, 50, 20, 20], "iscrowd": 0, "area": 400},
            {"id": 4, "image_id": 20, "category_id": 1, "bbox": [5, 5, 10, 30], "iscrowd": 0, "area": 300},
        ]
        categories = [{"id": 90, "name": "toothbrush"}, {"id": 1, "name": "person"}, {"id": 3, "name": "car"}]
        data = {"images": images, "annotations": annotations, "categories": categories}
        if mutate is not None:
            mutate(data)
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
        for image in images:
            if "/" not in image["file_name"]:
                write_image(root / split / image["file_name"], image["height"], image["width"], seed=image["id"])
        return root

    return make


def pascal_xml(width: int, height: int, objects: list[tuple]) -> str:
    """A PASCAL-style annotation; each object is ``(name, xmin, ymin, xmax, ymax[, difficult])``."""
    parts = [f"<annotation><filename>x</filename><size><width>{width}</width><height>{height}</height>"
             "<depth>3</depth></size>"]
    for name, *coords in objects:
        difficult = f"<difficult>{coords[4]}</difficult>" if len(coords) > 4 else ""
        box = "".join(f"<{k}>{v}</{k}>" for k, v in zip(("xmin", "ymin", "xmax", "ymax"), coords))
        parts.append(f"<object><name>{name}</name><truncated>0</truncated>{difficult}<bndbox>{box}</bndbox></object>")
    return "".join(parts) + "</annotation>"


@pytest.fixture(name="pascal_xml")
def pascal_xml_fixture() -> Callable[..., str]:
    return pascal_xml


VOC_IMAGES = {
    "2007": {
        "000001": (60, 80, [("dog", 1, 1, 20, 30, 0), ("person", 11, 21, 50, 40, 1)]),
        "000002": (40, 30, [("cat", 5, 6, 25, 35)]),  # portrait
        "000005": (50, 50, [("chair", 2, 3, 40, 45, 1)]),  # only a difficult object
        "000009": (50, 60, [("car", 10, 10, 30, 30, 0)]),
    },
    "2012": {"2008_000001": (45, 70, [("bus", 1, 1, 70, 45)])},
}
VOC_SPLITS = {"2007": {"trainval": ["000001", "000002", "000005"], "test": ["000009"]},
              "2012": {"trainval": ["2008_000001"]}}


@pytest.fixture
def voc_root(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``<tmp>/VOCdevkit/VOC2007`` (trainval 3 images, test 1) and ``VOC2012`` (trainval 1)."""

    def make(years: tuple[str, ...] = ("2007", "2012")) -> Path:
        for year in years:
            base = tmp_path / "VOCdevkit" / f"VOC{year}"
            (base / "Annotations").mkdir(parents=True, exist_ok=True)
            (base / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
            for i, (name, (h, w, objects)) in enumerate(VOC_IMAGES[year].items()):
                write_image(base / "JPEGImages" / f"{name}.jpg", h, w, seed=i)
                (base / "Annotations" / f"{name}.xml").write_text(pascal_xml(w, h, objects))
            for split, names in VOC_SPLITS[year].items():
                (base / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(names) + "\n")
        return tmp_path

    return make


@pytest.fixture
def ilsvrc_root(tmp_path: Path) -> Path:
    """An ``ILSVRC`` folder: 3 classes in map_det.txt, train (2 images, one without objects), val (3), val1/val2."""
    root = tmp_path / "ILSVRC"
    (root / "devkit" / "data").mkdir(parents=True)
    (root / "devkit" / "data" / "map_det.txt").write_text(
        "n02672831 1 accordion\nn02691156 2 airplane\nn02219486 3 ant\n")
    sets = root / "ImageSets" / "DET"
    sets.mkdir(parents=True)
    images = {
        "train": {"ILSVRC2013_train/n02672831/n02672831_1": (40, 60, [("n02672831", 1, 2, 30, 40)]),
                  "ILSVRC2013_train_extra0/ILSVRC2013_train_00000001": (30, 30, [])},
        "val": {f"ILSVRC2012_val_0000000{i}": (50, 40, [("n02219486", i, i, 20 + i, 30)]) for i in (1, 2, 3)},
    }
    for data_split, items in images.items():
        for i, (name, (h, w, objects)) in enumerate(items.items()):
            write_image(root / "Data" / "DET" / data_split / f"{name}.JPEG", h, w, seed=i)
            xml = root / "Annotations" / "DET" / data_split / f"{name}.xml"
            xml.parent.mkdir(parents=True, exist_ok=True)
            xml.write_text(pascal_xml(w, h, objects))
    (sets / "train.txt").write_text("".join(f"{n} {i}\n" for i, n in enumerate(images["train"], start=1)))
    val = list(images["val"])
    (sets / "val.txt").write_text("".join(f"{n} {i}\n" for i, n in enumerate(val, start=1)))
    (sets / "val1.txt").write_text(f"{val[0]} 1\n{val[2]} 3\n")
    (sets / "val2.txt").write_text(f"{val[1]} 2\n")
    return tmp_path


class Served:
    """Fixed in-memory files on 127.0.0.1 (an ephemeral port); honours ``Range: bytes=N-``; logs requests (the
    dataset download tests: test_prepare.py, test_prepare_imagenet.py)."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.requests: list[tuple[str, str | None]] = []
        self.headers: list[dict[str, str]] = []  # every request's headers
        served = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                name = self.path.lstrip("/")
                served.requests.append((name, self.headers.get("Range")))
                served.headers.append(dict(self.headers))
                if name not in served.files:
                    self.send_error(404)
                    return
                data, start = served.files[name], 0
                if self.headers.get("Range", "").startswith("bytes="):
                    start = int(self.headers["Range"][6:].rstrip("-"))
                    if start >= len(data):
                        self.send_error(416)
                        return
                    self.send_response(206)
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                self.wfile.write(data[start:])

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/{name}"

    def archive(self, name: str) -> Archive:
        return Archive(self.url(name), hashlib.md5(self.files[name]).hexdigest())


@pytest.fixture
def serve() -> Iterator:
    servers: list[Served] = []

    def start(files: dict[str, bytes]) -> Served:
        served = Served(files)
        served.thread.start()
        servers.append(served)
        return served

    yield start
    for served in servers:
        served.server.shutdown()
        served.server.server_close()
