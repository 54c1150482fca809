"""tools/test_det.py with several ``--weights`` (an ensemble) and flip testing, in process on tiny generated data."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from backbones.checkpoint import save_checkpoint
from detection import build_detector, load_config
from detection.data.shapes import SHAPE_CLASSES, generate_shapes

ROOT = Path(__file__).resolve().parents[2]
TINY_CONFIG = ROOT / "tests" / "tiny_det.yaml"


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shapes")
    generate_shapes(root, num_train=2, num_val=3, min_size=64, max_size=96)
    return root


def checkpoint(path: Path, *overrides: str, seed: int = 0) -> Path:
    cfg = load_config(TINY_CONFIG, ["model.roi_heads.score_thresh=0.0", *overrides])
    torch.manual_seed(seed)
    # The shapes data's names when the counts agree (test_det checks a checkpoint's names against the data's).
    classes = [f"c{i}" for i in range(cfg.num_classes)]
    if cfg.num_classes == len(SHAPE_CLASSES):
        classes = list(SHAPE_CLASSES)
    return save_checkpoint(path, {"model": build_detector(cfg).state_dict(), "config": cfg.to_dict(),
                                  "classes": classes})  # fmt: skip


def load_main():
    spec = importlib.util.spec_from_file_location("test_det_tool", ROOT / "tools" / "test_det.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool.main


def run(main, shapes_root: Path, out: Path, weights: list[Path], *extra: str) -> int:
    return main(["--weights", *map(str, weights), "--dataset", "shapes", "--data-root", str(shapes_root), "--split",
                 "val", "--output-dir", str(out), "--device", "cpu", "--no-progress", *extra])  # fmt: skip


def test_an_ensemble_with_flips_is_tested_and_scored(tmp_path: Path, shapes_root: Path) -> None:
    a = checkpoint(tmp_path / "a.pth")
    b = checkpoint(tmp_path / "b.pth", "model.roi_heads.global_context=true", seed=1)  # members may differ in head
    assert run(load_main(), shapes_root, tmp_path / "out", [a, b], "test.flip=true", "--json",
               str(tmp_path / "m.json")) == 0  # fmt: skip
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["images"] == 3 and metrics["mAP50"] is not None and metrics["seconds_per_image"] > 0
    assert json.loads((tmp_path / "m.json").read_text()) == metrics  # --json: the same metrics where asked


def test_members_of_other_classes_are_refused(tmp_path: Path, shapes_root: Path, capsys) -> None:
    a = checkpoint(tmp_path / "a.pth")
    other = checkpoint(tmp_path / "other.pth", "num_classes=3")
    assert run(load_main(), shapes_root, tmp_path / "out", [a, other]) == 2
    error = capsys.readouterr().err
    assert f"cannot load checkpoint {other}: an ensemble member must predict the same classes" in error
