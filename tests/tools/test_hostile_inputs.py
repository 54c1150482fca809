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
@pytest.mark.parametrize("case", ["unreadable", "all-crowd", "no-annotations"])
def test_training_split_without_a_usable_batch_stops_with_one_line(
    tiny_shapes: Path, tmp_path: Path, run_train, case: str
) -> None:
    root = copy_shapes(tiny_shapes, tmp_path)
    if case == "unreadable":
        for image in (root / "train").iterdir():
            image.write_bytes(b"not an image")
        expected = ("error: no usable training batch in a whole epoch of the training split (16 images: 16 "
                    "unreadable, 0 without usable boxes); see the warnings above")
    else:
        def edit(data: dict[str, Any]) -> None:
            if case == "all-crowd":
                for ann in data["annotations"]:
                    ann["iscrowd"] = 1
            else:
                data["annotations"] = []

        edit_annotations(root, "train", edit)
        expected = ("error: the training split has no usable image (16 images: 0 unreadable, 16 without usable "
                    "boxes); check its annotations (crowd and difficult objects are not training boxes)")
    start = time.monotonic()
    done = run_train(root, tmp_path / "run", "--no-eval", timeout=120)
    assert time.monotonic() - start < 60
    assert done.returncode == 1
    assert error_line(done.stderr) == expected
    if case == "unreadable":  # one warning per file, not one per attempt
        assert done.stderr.count("skipping sample") == 16


# --- COCO annotation defects: one line naming the file and the entry --------------------------------------------
def _drop_image_id(data: dict[str, Any]) -> None:
    del data["images"][0]["id"]


def _drop_category_name(data: dict[str, Any]) -> None:
    del data["categories"][0]["name"]


def _annotations_as_dict(data: dict[str, Any]) -> None:
    data["annotations"] = {str(a["id"]): a for a in data["annotations"]}


def _string_iscrowd(data: dict[str, Any]) -> None:
    for ann in data["annotations"]:
        ann["iscrowd"] = "0"


def _nul_in_file_name(data: dict[str, Any]) -> None:
    data["images"][3]["file_name"] = "000004.jpg\x00.png"


@pytest.mark.parametrize(("edit", "expected"), [
    (_drop_image_id, r"images\[0\] has no integer 'id'"),
    (_drop_category_name, r"categories\[0\] needs an integer 'id' and a 'name'"),
    (_annotations_as_dict, r"'annotations' must be a list, got dict"),
    (_string_iscrowd, r"annotation id \d+ \(image \d+\) has iscrowd '0'; expected 0 or 1"),
    (_nul_in_file_name, r"image \d+ file_name '000004.jpg\\x00.png' contains a NUL byte; refused"),
])  # fmt: skip
def test_coco_annotation_defects_are_one_line_before_training(
    tiny_shapes: Path, tmp_path: Path, run_train, edit: Any, expected: str
) -> None:
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


@pytest.mark.parametrize(("size", "difficult", "expected"), [
    ((0, 60), "0", "<size> gives width 0 and height 60; both must be positive"),
    ((-80, 60), "0", "<size> gives width -80 and height 60; both must be positive"),
    ((80, 60), "yes", "object 0 (dog): <difficult> is 'yes', not an integer"),
])  # fmt: skip
def test_voc_annotation_defects_are_one_line(
    tiny_weights: Path, tmp_path: Path, run_tool, size: tuple[int, int], difficult: str, expected: str
) -> None:
    """``<width>0</width>`` was a ZeroDivisionError in test_det; a negative size warned about every box instead."""
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
@pytest.mark.parametrize("strict", [False, True])
def test_gigapixel_header_is_skipped_in_training_unless_strict(
    tiny_shapes: Path, tmp_path: Path, run_train, strict: bool
) -> None:
    """Every other training image is a 120-byte PNG claiming 60000 × 60000 pixels (10.8 GB decoded)."""
    root = copy_shapes(tiny_shapes, tmp_path)
    bombs = sorted((root / "train").iterdir())[::2]
    for bomb in bombs:
        bomb.write_bytes(fake_png(60000, 60000))
    flags = ["--strict"] if strict else []
    done = run_train(root, tmp_path / "run", "--no-eval", "solver.max_iter=4", "solver.checkpoint_period=0", *flags)
    message = (r"image (\S+) is 60000x60000 \(WxH\) = 3600000000 pixels by its header, over the limit of 150000000 "
               r"\(input\.max_image_pixels\); not decoded")
    if strict:
        assert done.returncode == 1
        found = re.fullmatch(f"error: {message}", error_line(done.stderr))
        assert found is not None and Path(found.group(1)) in bombs, error_line(done.stderr)
    else:
        assert done.returncode == 0, done.stderr[-3000:]
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
                              "classes": ["a", "b", "c", "d", "e"]})
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


# --- evaluation tools validate the ground truth and count inverted result boxes ----------------------------------
def coco_ground_truth(path: Path, **annotation: Any) -> Path:
    ann = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10.0, 10.0, 50.0, 40.0], "area": 2000.0,
           "iscrowd": 0, **annotation}
    ann = {k: v for k, v in ann.items() if v is not None}
    data = {"images": [{"id": 1, "width": 100, "height": 100, "file_name": "a.jpg"}], "annotations": [ann],
            "categories": [{"id": 1, "name": "thing"}]}
    path.write_text(json.dumps(data))  # json writes NaN as the bare word NaN, which json (and pycocotools) reads
    return path


def test_eval_coco_validates_ground_truth_and_results(tmp_path: Path, run_tool) -> None:
    good = [{"image_id": 1, "category_id": 1, "bbox": [10.0, 10.0, 50.0, 40.0], "score": 0.9}]
    results = tmp_path / "results.json"
    results.write_text(json.dumps(good))

    nan_gt = coco_ground_truth(tmp_path / "nan.json", bbox=[10.0, float("nan"), 50.0, 40.0])
    done = run_tool("eval_coco.py", "--annotations", nan_gt, "--results", results)
    assert done.returncode == 2  # used to be scored as if nothing were wrong
    assert error_line(done.stderr) == f"error: {nan_gt}: annotation id 1 (image 1): coordinate y=nan is not finite"

    bare_gt = coco_ground_truth(tmp_path / "bare.json", area=None, iscrowd=None)  # what the training loader accepts
    done = run_tool("eval_coco.py", "--annotations", bare_gt, "--results", results)
    assert done.returncode == 0, done.stderr[-3000:]  # used to be a KeyError
    assert "inverted" not in done.stderr

    results.write_text(json.dumps([{**good[0], "score": True}]))
    done = run_tool("eval_coco.py", "--annotations", bare_gt, "--results", results)
    assert done.returncode == 2
    assert error_line(done.stderr).startswith(f"error: {results}: result #0: bbox and score must be finite numbers")

    results.write_text(json.dumps([*good, {**good[0], "bbox": [60.0, 50.0, -50.0, -40.0], "score": 0.8}]))
    done = run_tool("eval_coco.py", "--annotations", bare_gt, "--results", results)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (f"warning: 1 of 2 results in {results} have inverted boxes (negative width or height in [x, y, w, h]); "
            "they match nothing and count as false positives") in done.stderr


def test_eval_voc_counts_inverted_result_boxes(tmp_path: Path, run_tool) -> None:
    year = tmp_path / "VOC2007"
    (year / "Annotations").mkdir(parents=True)
    (year / "ImageSets" / "Main").mkdir(parents=True)
    (year / "ImageSets" / "Main" / "test.txt").write_text("000001\n")
    (year / "Annotations" / "000001.xml").write_text(
        "<annotation><size><width>100</width><height>80</height></size><object><name>dog</name><difficult>0"
        "</difficult><bndbox><xmin>11</xmin><ymin>11</ymin><xmax>60</xmax><ymax>50</ymax></bndbox></object>"
        "</annotation>")
    results = tmp_path / "results"
    results.mkdir()
    (results / "comp4_det_test_dog.txt").write_text("000001 0.9 11 11 60 50\n000001 0.8 60 50 11 11\n")
    done = run_tool("eval_voc.py", "--voc-root", year, "--split", "test", "--results", results, "--classes", "dog")
    assert done.returncode == 0, done.stderr[-3000:]
    assert (f"warning: 1 of 2 detections in {results} have inverted boxes (xmax < xmin or ymax < ymin); they match "
            "nothing and count as false positives") in done.stderr
