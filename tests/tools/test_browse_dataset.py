"""tools/browse_dataset.py: ground-truth boxes of a split drawn, as stored and after the training transforms."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path

import cv2
import pytest

from detection.data.shapes import SHAPE_CLASSES, generate_shapes

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def browse():  # noqa: ANN201 - the tool's main
    spec = importlib.util.spec_from_file_location("browse_tool", ROOT / "tools" / "browse_dataset.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_shapes(tmp_path_factory.mktemp("shapes"), num_train=4, num_val=3, min_size=64, max_size=96)


def test_draws_each_image_and_counts_objects(browse, shapes: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    assert browse(["--dataset", "shapes", "--data-root", str(shapes), "--split", "val", "--output-dir",
                   str(tmp_path)]) == 0  # fmt: skip
    data = json.loads((shapes / "annotations" / "instances_val.json").read_text())
    assert sorted(p.name for p in tmp_path.glob("*.png")) == sorted(
        Path(i["file_name"]).with_suffix(".png").name for i in data["images"])
    for info in data["images"]:  # same size as the file: boxes drawn in its pixels
        drawn = cv2.imread(str(tmp_path / Path(info["file_name"]).with_suffix(".png").name))
        assert drawn.shape[:2] == (info["height"], info["width"])
        original = cv2.imread(str(shapes / "val" / info["file_name"]))
        assert (drawn != original).any()
    counts = Counter(SHAPE_CLASSES[a["category_id"] - 1] for a in data["annotations"])
    out = capsys.readouterr().out
    assert "drew 3 of 3 images" in out
    assert "objects per class: " + ", ".join(f"{c} {counts[c]}" for c in SHAPE_CLASSES) in out


def test_training_transforms_resize_the_training_split(browse, shapes: Path, tmp_path: Path) -> None:  # noqa: ANN001
    assert browse(["--dataset", "shapes", "--data-root", str(shapes), "--transforms", "--num", "2",
                   "--output-dir", str(tmp_path), "input.train_min_sizes=[48]", "input.train_max_size=200"]) == 0
    drawn = sorted(tmp_path.glob("*.png"))
    assert len(drawn) == 2
    assert all(min(cv2.imread(str(p)).shape[:2]) == 48 for p in drawn)
