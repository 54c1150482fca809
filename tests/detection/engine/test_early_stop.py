"""Early stopping (``test.patience``) end to end with tools/train_det.py on the tiny detector: the stop writes the
checkpoint and model_final.pth and logs why, model_best.pth keeps the best, ``--resume`` of a stopped run says so
and trains no further, ``--resume-anyway`` with more patience goes on counting; the periodic evaluation (with its
validation losses) does not change what training does; patience without evaluation is a config error."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from backbones.checkpoint import load_checkpoint
from detection.config import ConfigError, load_config
from tools import train_det

TINY_CONFIG = Path(__file__).resolve().parents[2] / "tiny_det.yaml"
MAX_ITER = 10
TIMING = ("time", "data_time", "memory_mb", "eta_s")


def train(shapes_root: Path, out: Path, *extra: str) -> int:
    flags = [e for e in extra if e.startswith("--")]
    overrides = [e for e in extra if not e.startswith("--")]
    return train_det.main(["--dataset", "shapes", "--data-root", str(shapes_root), "--config", str(TINY_CONFIG),
                           "--output-dir", str(out), "--device", "cpu", "--no-progress", "--no-eval", *flags,
                           f"solver.max_iter={MAX_ITER}", *overrides])  # fmt: skip


def evaluations(out: Path) -> dict[int, float]:
    return {int(p.name[len("iter_"):]): json.loads((p / "metrics.json").read_text())["mAP50"]
            for p in sorted((out / "eval").iterdir())}  # fmt: skip


def first_stop(scores: dict[int, float], patience: int) -> int | None:
    """The iteration where ``patience`` evaluations in a row have not beaten the best (strictly)."""
    best, without_gain = None, 0
    for it in sorted(scores):
        if best is None or scores[it] > best:
            best, without_gain = scores[it], 0
        else:
            without_gain += 1
        if without_gain >= patience:
            return it
    return None


def numbered(out: Path) -> list[int]:
    return sorted(int(p.stem.split("_")[1]) for p in out.glob("model_[0-9]*.pth"))


def training_records(out: Path) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in lines if "eval" not in r]


@pytest.fixture(scope="module")
def stopped_run(shapes_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Evaluated every 2 iterations with patience 2; a learning rate too small to change a float32 weight keeps
    mAP50 from improving after the first evaluation, so the run must stop early."""
    out = tmp_path_factory.mktemp("stopped")
    assert train(shapes_root, out, "test.eval_period=2", "test.patience=2", "solver.base_lr=1e-12",
                 "solver.checkpoint_period=5") == 0  # fmt: skip
    return out


def test_early_stop_writes_the_checkpoint_and_model_final_and_says_why(stopped_run: Path) -> None:
    scores = evaluations(stopped_run)
    stop = first_stop(scores, patience=2)
    assert stop is not None and stop < MAX_ITER and max(scores) == stop  # no evaluation after the stop
    best_iteration = min(it for it in scores if scores[it] == max(scores.values()))
    log = (stopped_run / "log.txt").read_text()
    reason = (f"early stop at iter {stop}: mAP50 has not improved for 2 evaluations "
              f"(best {scores[best_iteration]:.4g} at iter {best_iteration}, model_best.pth)")
    assert reason in log and f"training finished: {stop} iterations" in log
    assert numbered(stopped_run) == [5, stop]  # the periodic checkpoint and the one at the stop
    final = load_checkpoint(stopped_run / "model_final.pth")
    last = load_checkpoint(stopped_run / f"model_{stop:07d}.pth")
    assert all(torch.equal(final["model"][k], v) for k, v in last["model"].items())
    assert last["evaluator"] == {"best": scores[best_iteration], "best_iteration": best_iteration,
                                 "without_gain": 2, "last_iteration": stop}  # fmt: skip
    assert load_checkpoint(stopped_run / "model_best.pth")["iteration"] == best_iteration
    assert all(r["iteration"] <= stop for r in training_records(stopped_run))
    evals = [json.loads(line)["eval"] for line in (stopped_run / "metrics.jsonl").read_text().splitlines()
             if "eval" in json.loads(line)]  # fmt: skip
    assert all(k in evals[0] for k in ("val_loss_cls", "val_loss_box", "val_loss_rpn_cls", "val_total_loss"))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(stopped_run / "tensorboard"))
    events.Reload()
    assert [e.value for e in events.Scalars("eval/val_total_loss")] == pytest.approx(
        [e["val_total_loss"] for e in evals])
    assert "val_total_loss: " in log  # the eval log line


def test_resuming_a_stopped_run_trains_no_further_and_more_patience_goes_on_counting(
    stopped_run: Path, shapes_root: Path, tmp_path: Path
) -> None:
    stop = first_stop(evaluations(stopped_run), patience=2)
    out = tmp_path / "resumed"
    shutil.copytree(stopped_run, out)
    assert train(shapes_root, out, "--resume", "test.eval_period=2", "test.patience=2", "solver.base_lr=1e-12",
                 "solver.checkpoint_period=5") == 0  # fmt: skip
    log = (out / "log.txt").read_text()
    assert re.search(rf"early stop at iter {stop}: .*; this run had already stopped there: not training on", log)
    assert numbered(out) == [5, stop] and max(evaluations(out)) == stop

    # Another patience is another config (--resume-anyway); the count of evaluations without gain carries on.
    assert train(shapes_root, out, "--resume-anyway", "test.eval_period=2", "test.patience=3", "solver.base_lr=1e-12",
                 "solver.checkpoint_period=5") == 0  # fmt: skip
    scores = evaluations(out)
    again = first_stop(scores, patience=3)
    assert again is not None and stop < again < MAX_ITER and max(scores) == again
    assert f"early stop at iter {again}: mAP50 has not improved for 3 evaluations" in (out / "log.txt").read_text()


def test_periodic_evaluation_leaves_training_as_it_was(shapes_root: Path, tmp_path: Path) -> None:
    assert train(shapes_root, tmp_path / "plain", "solver.max_iter=6", "solver.checkpoint_period=0") == 0
    assert train(shapes_root, tmp_path / "evaluated", "solver.max_iter=6", "solver.checkpoint_period=0",
                 "test.eval_period=2") == 0  # fmt: skip
    assert len(evaluations(tmp_path / "evaluated")) == 3
    assert training_records(tmp_path / "evaluated") == training_records(tmp_path / "plain")
    plain = load_checkpoint(tmp_path / "plain" / "model_final.pth")["model"]
    evaluated = load_checkpoint(tmp_path / "evaluated" / "model_final.pth")["model"]
    assert all(torch.equal(evaluated[k], v) for k, v in plain.items())


def test_patience_without_periodic_evaluation_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"test\.patience=3 needs test\.eval_period > 0"):
        load_config(TINY_CONFIG, ["test.patience=3"])
    with pytest.raises(ConfigError, match=r"test\.patience=-1 must be non-negative"):
        load_config(TINY_CONFIG, ["test.patience=-1", "test.eval_period=2"])
    assert load_config(TINY_CONFIG, ["test.patience=3", "test.eval_period=2"]).test.patience == 3
