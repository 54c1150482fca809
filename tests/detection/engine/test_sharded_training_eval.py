"""The periodic evaluation during ``torchrun --nproc_per_node=2 tools/train_det.py`` (2 gloo ranks on the CPU) is
sharded: each rank tests its block of the images and computes their validation losses; rank 0 writes
eval/iter_*/ and model_best.pth; the metrics and the losses equal a one-process evaluation of the same weights, and
both ranks take the same early-stopping decision (a disagreement would hang the job, not fail it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from detection.build import load_detector
from detection.data import build_dataset, build_transforms
from detection.data.shapes import generate_shapes
from detection.engine.validation import ValidationLosses
from detection.fast.optimize import optimize_for_training
from tests.detection.engine.test_sharded import assert_close
from tools import test_det

ROOT = Path(__file__).resolve().parents[3]
TINY_CONFIG = ROOT / "tests" / "tiny_det.yaml"
NUM_VAL = 5  # odd: the two ranks get 2 and 3 images
MAX_ITER, EVAL_PERIOD = 6, 2
RUN_ONLY = ("seconds_per_image", "world_size", "images_per_rank", "results_file", "provenance")


@pytest.fixture(scope="module")
def sharded_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(shapes root, output folder) of a 2-rank training evaluated every 2 iterations with patience 1; a learning
    rate too small to change a float32 weight keeps the metrics from improving, so both ranks must stop early."""
    tmp = tmp_path_factory.mktemp("sharded_training")
    root = generate_shapes(tmp / "shapes", num_train=4, num_val=NUM_VAL, min_size=64, max_size=96)
    out = tmp / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "tools" / "train_det.py"), "--dataset", "shapes", "--data-root", str(root), "--config",
           str(TINY_CONFIG), "--output-dir", str(out), "--device", "cpu", "--no-progress",
           f"solver.max_iter={MAX_ITER}", f"solver.checkpoint_period={EVAL_PERIOD}", f"test.eval_period={EVAL_PERIOD}",
           "test.patience=1", "solver.base_lr=1e-12"]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return root, out


def evaluated(out: Path) -> dict[int, dict[str, Any]]:
    return {int(p.name[len("iter_"):]): json.loads((p / "metrics.json").read_text())
            for p in sorted((out / "eval").iterdir())}  # fmt: skip


def test_every_rank_evaluates_its_block_and_the_metrics_equal_one_process(
    sharded_run: tuple[Path, Path], tmp_path: Path
) -> None:
    root, out = sharded_run
    runs = evaluated(out)
    assert runs and set(runs) <= set(range(EVAL_PERIOD, MAX_ITER + 1, EVAL_PERIOD))
    for iteration, sharded in runs.items():
        assert (sharded["world_size"], sharded["images_per_rank"]) == (2, [2, 3]), iteration
        one = tmp_path / f"one_{iteration}"
        assert test_det.main(["--weights", str(out / f"model_{iteration:07d}.pth"), "--dataset", "shapes",
                              "--data-root", str(root), "--split", "val", "--output-dir", str(one), "--device",
                              "cpu", "--no-progress"]) == 0  # fmt: skip
        single = json.loads((one / "metrics.json").read_text())
        assert single["world_size"] == 1 and single["images"] == sharded["images"] == NUM_VAL
        assert_close({k: v for k, v in sharded.items() if k not in RUN_ONLY},
                     {k: v for k, v in single.items() if k not in RUN_ONLY}, f"iter {iteration}")
    final = json.loads((out / "metrics.json").read_text())  # the test after training: sharded the same way
    assert (final["world_size"], final["images_per_rank"]) == (2, [2, 3])
    assert (out / "model_best.pth").is_file()


def test_sharded_validation_losses_equal_one_process(sharded_run: tuple[Path, Path]) -> None:
    root, out = sharded_run
    logged = {r["iteration"]: r["eval"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
              if "eval" in r}  # fmt: skip
    assert sorted(logged) == sorted(evaluated(out))
    for iteration, metrics in logged.items():
        model, cfg, _ = load_detector(out / f"model_{iteration:07d}.pth")
        optimize_for_training(model)  # as the training run holds it
        transforms = build_transforms(train=False, min_sizes=(cfg.input.test_min_size,),
                                      max_size=cfg.input.test_max_size, resize_in_eval=True)  # fmt: skip
        dataset = build_dataset("shapes", root, "val", transforms)
        want = ValidationLosses(dataset, device=torch.device("cpu"), seed=cfg.seed)(model)
        got = {k: v for k, v in metrics.items() if k.startswith("val_")}
        assert sorted(got) == sorted(want) and "val_total_loss" in got
        for key, value in want.items():
            assert got[key] == pytest.approx(value, rel=1e-4, abs=1e-6), (iteration, key)


def test_both_ranks_take_the_same_early_stopping_decision(sharded_run: tuple[Path, Path]) -> None:
    _, out = sharded_run
    scores = {it: m["mAP50"] for it, m in evaluated(out).items()}
    best, stop = None, None
    for it in sorted(scores):  # patience 1: the first evaluation that does not beat the best stops
        if best is not None and scores[it] <= best:
            stop = it
            break
        best = scores[it]
    assert stop is not None and stop < MAX_ITER and max(scores) == stop
    assert (out / f"model_{stop:07d}.pth").is_file() and (out / "model_final.pth").is_file()
    assert f"early stop at iter {stop}: mAP50 has not improved for 1 evaluation " in (out / "log.txt").read_text()
