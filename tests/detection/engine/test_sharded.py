"""``torchrun --nproc_per_node=2 tools/test_det.py`` (2 gloo ranks on the CPU) writes the same detections and
metrics as one process, for the plain model, the image pyramid and an ensemble of two; metrics.json says how it
was sharded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from backbones.checkpoint import save_checkpoint
from backbones.sharding import shard_range
from detection import build_detector, load_config
from detection.data.shapes import SHAPE_CLASSES, generate_shapes
from tools import test_det

ROOT = Path(__file__).resolve().parents[3]
TINY_CONFIG = ROOT / "tests" / "tiny_det.yaml"
NUM_VAL = 5  # odd: the two ranks get 2 and 3 images
RUN_ONLY = ("seconds_per_image", "world_size", "images_per_rank", "results_file")


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shapes")
    generate_shapes(root, num_train=1, num_val=NUM_VAL, min_size=64, max_size=96)
    return root


def checkpoint(path: Path, seed: int) -> Path:
    cfg = load_config(TINY_CONFIG, ["model.roi_heads.score_thresh=0.0"])
    torch.manual_seed(seed)
    return save_checkpoint(path, {"model": build_detector(cfg).state_dict(), "config": cfg.to_dict(),
                                  "classes": list(SHAPE_CLASSES)})  # fmt: skip


def arguments(shapes_root: Path, out: Path, weights: list[Path], overrides: list[str]) -> list[str]:
    return ["--weights", *map(str, weights), "--dataset", "shapes", "--data-root", str(shapes_root), "--split",
            "val", "--output-dir", str(out), "--device", "cpu", "--no-progress", *overrides]  # fmt: skip


def assert_close(got: object, want: object, where: str = "metrics") -> None:
    """Equal structure and strings; numbers equal up to float tolerance."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and sorted(got) == sorted(want), where
        for key in want:
            assert_close(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want)):
            assert_close(g, w, f"{where}[{i}]")
    elif isinstance(want, float):
        assert got == pytest.approx(want, abs=1e-6), where
    else:
        assert got == want, where


def test_shards_are_contiguous_nearly_equal_and_cover_every_index() -> None:
    for total in (0, 1, 5, 10):
        for world in (1, 2, 3, 4):
            shards = [shard_range(total, r, world) for r in range(world)]
            assert [i for s in shards for i in s] == list(range(total))
            assert max(map(len, shards)) - min(map(len, shards)) <= 1
    with pytest.raises(ValueError, match="rank 2 is not in a world of 2"):
        shard_range(4, 2, 2)


@pytest.mark.parametrize("case", ["plain", "pyramid", "ensemble"])
def test_two_gloo_ranks_write_what_one_process_writes(tmp_path: Path, shapes_root: Path, case: str) -> None:
    weights = [checkpoint(tmp_path / "a.pth", seed=0)]
    if case == "ensemble":
        weights.append(checkpoint(tmp_path / "b.pth", seed=1))
    overrides = ["test.pyramid_min_sizes=[48,64]"] if case == "pyramid" else []

    assert test_det.main(arguments(shapes_root, tmp_path / "one", weights, overrides)) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "tools" / "test_det.py"), *arguments(shapes_root, tmp_path / "two", weights, overrides)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    one = json.loads((tmp_path / "one" / "metrics.json").read_text())
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert (one["world_size"], one["images_per_rank"]) == (1, [NUM_VAL])
    assert (two["world_size"], two["images_per_rank"]) == (2, [2, 3])
    assert one["images"] == two["images"] == NUM_VAL
    assert_close({k: v for k, v in two.items() if k not in RUN_ONLY},
                 {k: v for k, v in one.items() if k not in RUN_ONLY})

    results = [json.loads((tmp_path / run / "coco_results_val.json").read_text()) for run in ("one", "two")]
    assert len(results[0]) == len(results[1]) > NUM_VAL  # score threshold 0: many detections per image
    for a, b in zip(*results):
        assert (a["image_id"], a["category_id"]) == (b["image_id"], b["category_id"])
        assert b["bbox"] == pytest.approx(a["bbox"], abs=1e-3) and b["score"] == pytest.approx(a["score"], abs=1e-5)
    assert sorted({r["image_id"] for r in results[1]}) == sorted({r["image_id"] for r in results[0]})
