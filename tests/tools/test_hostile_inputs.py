"""The tools on hostile data: a training split without one usable batch, malformed COCO and VOC annotations,
images whose header claims gigapixels, bad ground truth and result files for the evaluation tools. Each ends in
one error line (or a warning naming the file), within seconds, never a hang or a traceback."""

from __future__ import annotations

import json
import re
import shutil
import struct
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
import torch

from backbones.checkpoint import save_checkpoint
from detection.build import build_detector
from detection.config import load_config

ROOT = Path(__file__).resolve().parents[2]
TINY_CONFIG = ROOT / "tests" / "tiny_det.yaml"


def fake_png(width: int, height: int) -> bytes:
    """A valid PNG header (IHDR) announcing ``width`` × ``height`` RGB pixels, with almost no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(
        b"IEND", b"")


def error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = stderr.strip().splitlines()
    return lines[-1] if lines else ""


def copy_shapes(tiny_shapes: Path, tmp_path: Path) -> Path:
    root = tmp_path / "shapes"
    shutil.copytree(tiny_shapes, root)
    return root


def edit_annotations(root: Path, split: str, edit: Any) -> Path:
    path = root / "annotations" / f"instances_{split}.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    return path


# --- a training split with no usable batch: stop within seconds, counting what was found ------------------------
def test_training_split_without_a_usable_batch_stops_with_one_line(
    tiny_shapes: Path, tmp_path: Path, run_train
) -> None:
    """Every training image unreadable: it used to spin forever on empty batches, warning each time. (Splits with no
    training box at all, no annotations or all crowd, are in tests/detection/engine/test_data_stream.py.)"""
    root = copy_shapes(tiny_shapes, tmp_path)
    for image in (root / "train").iterdir():
        image.write_bytes(b"not an image")
    start = time.monotonic()
    done = run_train(root, tmp_path / "run", "--no-eval", timeout=120)
    assert time.monotonic() - start < 60
    assert done.returncode == 1
    assert error_line(done.stderr) == ("error: no usable training batch in a whole epoch of the training split (16 "
                                       "images: 16 unreadable, 0 without usable boxes); see the warnings above")
    assert done.stderr.count("skipping sample") == 16  # one warning per file, not one per attempt


# --- COCO annotation defects: one line naming the file and the entry --------------------------------------------
def _drop_image_id(data: dict[str, Any]) -> None:
    del data["images"][0]["id"]


def _nul_in_file_name(data: dict[str, Any]) -> None:
    data["images"][3]["file_name"] = "000004.jpg\x00.png"


@pytest.mark.parametrize(("edit", "expected"), [
    (_drop_image_id, r"images\[0\] has no integer 'id'"),
    (_nul_in_file_name, r"image \d+ file_name '000004.jpg\\x00.png' contains a NUL byte; refused"),
])  # fmt: skip
def test_coco_annotation_defects_are_one_line_before_training(
    tiny_shapes: Path, tmp_path: Path, run_train, edit: Any, expected: str
) -> None:
    """A NUL byte in a file name used to fail at iteration 2 or later; every other defect of read_coco_instances
    (category without name, annotations not a list, iscrowd "0", ...) is in tests/detection/test_devkit.py."""
    root = copy_shapes(tiny_shapes, tmp_path)
    path = edit_annotations(root, "train", edit)
    done = run_train(root, tmp_path / "run", "--no-eval", "data.train_split=train", dataset="coco")
    assert done.returncode == 1
    line = error_line(done.stderr)
    assert line.startswith(f"error: {path}"), line
    assert re.search(expected, line), line
    assert not list((tmp_path / "run").glob("model_*.pth"))


# --- VOC annotation defects in tools/test_det.py ---------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny detector saved as a toolkit checkpoint (enough to reach the data loading)."""
    cfg = load_config(TINY_CONFIG, ["num_classes=20"])
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "model_final.pth"
    save_checkpoint(path, {"model": build_detector(cfg).state_dict(), "config": cfg.to_dict(), "classes": []})
    return path


def test_voc_annotation_defects_are_one_line(tiny_weights: Path, tmp_path: Path, run_tool) -> None:
    """``<width>0</width>`` was a ZeroDivisionError in test_det. (A negative size, which warned about every box
    instead, and ``<difficult>yes</difficult>``: tests/detection/test_devkit.py.)"""
    size, difficult, expected = (0, 60), "0", "<size> gives width 0 and height 60; both must be positive"
    year = tmp_path / "VOCdevkit" / "VOC2007"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (year / sub).mkdir(parents=True)
    (year / "ImageSets" / "Main" / "test.txt").write_text("000001\n")
    (year / "JPEGImages" / "000001.jpg").write_bytes(b"")  # never read: the annotation is refused first
    xml = year / "Annotations" / "000001.xml"
    xml.write_text(f"<annotation><size><width>{size[0]}</width><height>{size[1]}</height></size><object>"
                   f"<name>dog</name><difficult>{difficult}</difficult><bndbox><xmin>1</xmin><ymin>1</ymin>"
                   "<xmax>20</xmax><ymax>30</ymax></bndbox></object></annotation>")
    done = run_tool("test_det.py", "--weights", tiny_weights, "--dataset", "voc", "--data-root", tmp_path,
                    "--split", "2007_test", "--output-dir", tmp_path / "out", "--device", "cpu", "--no-progress")
    assert done.returncode == 1
    assert error_line(done.stderr) == f"error: {xml}: {expected}"


# --- images whose header claims gigapixels: skipped naming the file (--strict: an error) --------------------------
def test_gigapixel_header_is_skipped_in_training(tiny_shapes: Path, tmp_path: Path, run_train) -> None:
    """Every other training image is a 120-byte PNG claiming 60000 × 60000 pixels (10.8 GB decoded). Under
    ``--strict`` the dataset raises instead (tests/detection/data/test_base.py; the demo's --strict below)."""
    root = copy_shapes(tiny_shapes, tmp_path)
    bombs = sorted((root / "train").iterdir())[::2]
    for bomb in bombs:
        bomb.write_bytes(fake_png(60000, 60000))
    done = run_train(root, tmp_path / "run", "--no-eval", "solver.max_iter=4", "solver.checkpoint_period=0")
    assert done.returncode == 0, done.stderr[-3000:]
    message = (r"image (\S+) is 60000x60000 \(WxH\) = 3600000000 pixels by its header, over the limit of 150000000 "
               r"\(input\.max_image_pixels\); not decoded")
    named = {Path(m) for m in re.findall(message, done.stderr)}
    assert named and named <= set(bombs)
    assert f"{len(named)} unreadable training images were skipped" in done.stderr


def test_pixel_limit_is_configurable_in_test_det_and_demo(
    tiny_shapes: Path, tiny_weights: Path, tmp_path: Path, run_tool
) -> None:
    """Shapes images are at most 96 × 96 = 9216 pixels: a limit of 2000 skips every one of them, by name."""
    cfg = load_config(TINY_CONFIG)
    weights = tmp_path / "model_final.pth"
    save_checkpoint(weights, {"model": build_detector(cfg).state_dict(), "config": cfg.to_dict(),
                              "classes": ["circle", "square", "triangle", "diamond", "cross"]})
    done = run_tool("test_det.py", "--weights", weights, "--dataset", "shapes", "--data-root", tiny_shapes,
                    "--split", "val", "--output-dir", tmp_path / "test", "--device", "cpu", "--no-progress",
                    "input.max_image_pixels=2000")
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((tmp_path / "test" / "metrics.json").read_text())["skipped_images"] == 4
    assert done.stderr.count("over the limit of 2000 (input.max_image_pixels)") == 4

    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(tiny_shapes / "val" / "000001.jpg", images / "small.jpg")
    (images / "bomb.png").write_bytes(fake_png(40000, 40000))
    done = run_tool("demo.py", "--weights", weights, "--images", images, "--output-dir", tmp_path / "demo",
                    "--device", "cpu")
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"image {images / 'bomb.png'} is 40000x40000 (WxH)" in done.stderr
    assert "wrote 1 images" in done.stdout and "(1 unreadable, skipped)" in done.stdout
    done = run_tool("demo.py", "--weights", weights, "--images", images, "--output-dir", tmp_path / "demo",
                    "--device", "cpu", "--strict")
    assert done.returncode == 1
    assert error_line(done.stderr).startswith(f"error: image {images / 'bomb.png'} is 40000x40000 (WxH)")


@pytest.mark.parametrize("tool", ["test_det.py", "demo.py"])
def test_inference_tools_output_path_that_is_a_file_is_one_line(
    tiny_shapes: Path, tiny_weights: Path, tmp_path: Path, run_tool, tool: str
) -> None:
    out = tmp_path / "out"
    out.write_text("a file")
    if tool == "test_det.py":
        args = ["--dataset", "shapes", "--data-root", str(tiny_shapes), "--split", "val"]
    else:
        args = ["--images", str(tiny_shapes / "val")]
    done = run_tool(tool, "--weights", tiny_weights, "--output-dir", out, "--device", "cpu", *args)
    assert done.returncode == 2
    assert error_line(done.stderr) == f"error: output path {out} exists and is not a folder; pass a folder to " \
                                      "--output-dir"


def test_checkpoint_whose_model_is_not_a_state_dict_is_one_line(tiny_shapes: Path, tmp_path: Path, run_tool) -> None:
    weights = tmp_path / "odd.pth"
    torch.save({"model": [torch.zeros(3)], "config": load_config(TINY_CONFIG).to_dict()}, weights)
    done = run_tool("test_det.py", "--weights", weights, "--dataset", "shapes", "--data-root", tiny_shapes,
                    "--split", "val", "--output-dir", tmp_path / "out", "--device", "cpu")
    assert done.returncode == 2
    assert error_line(done.stderr) == (f"error: cannot load checkpoint {weights}: its 'model' entry is not a state "
                                       "dict (names → tensors) but a list")
