"""The training feedback parts: iteration/data timing and ETA, and periodic evaluation keeping the best weights."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from torch import nn

from backbones.checkpoint import load_checkpoint
from detection.engine.monitor import IterationTimer, PeriodicEvaluator, format_eta, peak_memory_mb, training_log_line


def test_timer_separates_data_time_and_gives_an_eta() -> None:
    def slow_stream():  # noqa: ANN202
        while True:
            time.sleep(0.02)  # "loading"
            yield None

    timer = IterationTimer(window=5)
    stream = timer.wrap(slow_stream())
    for _ in range(4):
        next(stream)
        time.sleep(0.03)  # "training"
    assert len(timer.times) == 3  # the first batch has no interval before it
    assert 0.015 < timer.data_time < timer.time and timer.time > 0.045
    assert timer.eta_seconds(10, 20) == pytest.approx(10 * timer.time)
    timer.restart()
    next(stream)
    assert len(timer.times) == 3  # the interval across a restart (an evaluation) is not counted


def test_log_line_fields() -> None:
    assert format_eta(3725.4) == "1:02:05" and format_eta(float("nan")) == "?"
    timer = IterationTimer()
    timer.times.extend([0.5, 0.5])
    timer.data_times.extend([0.1, 0.1])
    line = training_log_line(iteration=20, max_iter=100, values={"loss": 1.5, "loss_rpn": 0.25}, lr=0.02,
                             timer=timer, memory_mb=812.4)  # fmt: skip
    assert line == ("eta: 0:00:40  iter: 20/100  loss: 1.5000  loss_rpn: 0.2500  time: 0.5000  data_time: 0.1000  "
                    "lr: 0.02  max_mem: 812M")
    assert peak_memory_mb(torch.device("cpu")) > 10  # this process's peak resident set


def test_periodic_evaluator_keeps_the_best(tmp_path: Path) -> None:
    scores = {2: 0.3, 4: 0.5, 6: 0.4}
    model = nn.Linear(2, 2)

    def evaluate(m: nn.Module, it: int) -> dict[str, object]:
        m.eval()  # as testing does
        return {"mAP50": scores[it], "metric": "test", "images": 3}

    evaluator = PeriodicEvaluator(evaluate, period=2, metric="mAP50", output_dir=tmp_path)
    assert [i for i in range(1, 7) if evaluator.due(i)] == [2, 4, 6]
    for it in (2, 4, 6):
        evaluator(model, it, checkpoint={"model": model.state_dict(), "classes": ["a", "b"]})
        assert model.training  # back to training mode
    best = load_checkpoint(tmp_path / "model_best.pth")
    assert (best["iteration"], best["value"], best["metric"]) == (4, 0.5, "mAP50")
    assert evaluator.best == 0.5 and [h["iteration"] for h in evaluator.history] == [2, 4, 6]
    wrong = PeriodicEvaluator(lambda m, it: {"mAP50": 0.1, "mAP": 0.05}, period=1, metric="AP75", output_dir=tmp_path)
    with pytest.raises(KeyError, match="AP75.*mAP, mAP50"):
        wrong(model, 1, checkpoint={})


def run_evaluations(evaluator: PeriodicEvaluator, scores: dict[int, float]) -> list[str | None]:
    model = nn.Linear(2, 2)
    reasons = []
    for it in sorted(scores):
        evaluator(model, it, checkpoint={"model": model.state_dict()})
        reasons.append(evaluator.stop_reason)
    return reasons


def test_patience_stops_after_that_many_evaluations_without_gain(tmp_path: Path) -> None:
    scores = {10: 0.3, 20: 0.512, 30: 0.4, 40: 0.512, 50: 0.5}  # an equal value is no gain
    evaluator = PeriodicEvaluator(lambda m, it: {"mAP50": scores[it]}, period=10, metric="mAP50",
                                  output_dir=tmp_path, patience=3)  # fmt: skip
    reasons = run_evaluations(evaluator, scores)
    assert reasons[:4] == [None] * 4
    assert reasons[4] == "early stop at iter 50: mAP50 has not improved for 3 evaluations (best 0.512 at iter 20, " \
                         "model_best.pth)"
    assert load_checkpoint(tmp_path / "model_best.pth")["iteration"] == 20

    resumed = PeriodicEvaluator(lambda m, it: {}, period=10, metric="mAP50", output_dir=tmp_path, patience=3)
    resumed.load_state_dict(evaluator.state_dict())  # what the training checkpoints hold
    assert resumed.stop_reason == reasons[4]
    resumed.patience = 5  # --resume-anyway with more patience: the count goes on from 3
    assert resumed.stop_reason is None and resumed.without_gain == 3 and resumed.best_iteration == 20


def test_validation_losses_are_added_and_a_loss_improves_downwards(tmp_path: Path) -> None:
    losses = iter([2.0, 1.5, 1.7, 1.6])
    evaluator = PeriodicEvaluator(lambda m, it: {"mAP50": 0.1, "world_size": 2},
                                  losses=lambda m: {"val_total_loss": next(losses)}, period=1,
                                  metric="val_total_loss", output_dir=tmp_path, patience=2)  # fmt: skip
    reasons = run_evaluations(evaluator, {1: 0, 2: 0, 3: 0, 4: 0})
    assert [h["val_total_loss"] for h in evaluator.history] == [2.0, 1.5, 1.7, 1.6]
    assert "world_size" not in evaluator.history[0]  # a count, not a metric
    assert evaluator.best == 1.5 and evaluator.best_iteration == 2
    assert reasons == [None, None, None, "early stop at iter 4: val_total_loss has not improved for 2 evaluations "
                                         "(best 1.5 at iter 2, model_best.pth)"]
    assert not PeriodicEvaluator(lambda m, it: {}, period=1, metric="mAP50", output_dir=tmp_path).stop_reason
