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
    evaluator = PeriodicEvaluator(lambda m, it: {"mAP50": scores[it], "metric": "test", "images": 3},
                                  period=2, metric="mAP50", output_dir=tmp_path)  # fmt: skip
    assert [i for i in range(1, 7) if evaluator.due(i)] == [2, 4, 6]
    for it in (2, 4, 6):
        model.eval()
        evaluator(model, it, checkpoint={"model": model.state_dict(), "classes": ["a", "b"]})
        assert model.training  # back to training mode
    best = load_checkpoint(tmp_path / "model_best.pth")
    assert (best["iteration"], best["value"], best["metric"]) == (4, 0.5, "mAP50")
    assert evaluator.best == 0.5 and [h["iteration"] for h in evaluator.history] == [2, 4, 6]
    wrong = PeriodicEvaluator(lambda m, it: {"mAP50": 0.1, "mAP": 0.05}, period=1, metric="AP75", output_dir=tmp_path)
    with pytest.raises(KeyError, match="AP75.*mAP, mAP50"):
        wrong(model, 1, checkpoint={})
