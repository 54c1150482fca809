"""Feedback during long training runs: iteration and data-loading times, ETA and peak memory for the log lines
(as detectron2's), and periodic evaluation that keeps ``model_best.pth`` by a chosen metric.

The detection trainer (``detection/engine/trainer.py``) wraps its data stream in an :class:`IterationTimer` and
calls its :class:`PeriodicEvaluator` after each step; ``detection/engine/run.py`` builds the evaluator from
``test.eval_period`` / ``test.best_metric``.
"""

from __future__ import annotations

import datetime
import logging
import math
import resource
import statistics
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from backbones.checkpoint import save_checkpoint

logger = logging.getLogger(__name__)
T = TypeVar("T")


class IterationTimer:
    """Seconds per iteration and per data wait, as medians over the last ``window`` iterations.

    An iteration is the interval between two batches leaving the data stream; the part of it spent inside the
    stream (loading, augmenting, collating) is its data time. :meth:`restart` drops the interval in progress
    (used after an evaluation, which is not training time).
    """

    def __init__(self, window: int = 20) -> None:
        self.times: deque[float] = deque(maxlen=window)
        self.data_times: deque[float] = deque(maxlen=window)
        self._last: float | None = None

    def wrap(self, stream: Iterator[T]) -> Iterator[T]:
        while True:
            asked = time.perf_counter()
            item = next(stream)
            now = time.perf_counter()
            if self._last is not None:
                self.times.append(now - self._last)
                self.data_times.append(now - asked)
            self._last = now
            yield item

    def restart(self) -> None:
        self._last = None

    @property
    def time(self) -> float:
        return statistics.median(self.times) if self.times else math.nan

    @property
    def data_time(self) -> float:
        return statistics.median(self.data_times) if self.data_times else math.nan

    def eta_seconds(self, done: int, total: int) -> float:
        return max(total - done, 0) * self.time


def format_eta(seconds: float) -> str:
    """``0:01:23`` (or ``?`` before the first timed iteration)."""
    return str(datetime.timedelta(seconds=round(seconds))) if math.isfinite(seconds) else "?"


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process in MiB: CUDA memory allocated by tensors on a GPU, else the peak resident set
    size of the process (``getrusage``; kilobytes on Linux, bytes on macOS)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def training_log_line(
    *, iteration: int, max_iter: int, values: dict[str, float], lr: float, timer: IterationTimer, memory_mb: float
) -> str:
    """``eta: 0:01:23  iter: 20/100  loss: 1.234 …  time: 0.1234  data_time: 0.0012  lr: 0.02  max_mem: 812M``."""
    losses = "  ".join(f"{k}: {v:.4f}" for k, v in sorted(values.items()))
    return (f"eta: {format_eta(timer.eta_seconds(iteration, max_iter))}  iter: {iteration}/{max_iter}  {losses}  "
            f"time: {timer.time:.4f}  data_time: {timer.data_time:.4f}  lr: {lr:.5g}  max_mem: {memory_mb:.0f}M")


class PeriodicEvaluator:
    """Evaluate every ``period`` iterations and keep the best weights in ``output_dir/model_best.pth``.

    ``evaluate(model, iteration)`` returns the metrics dict of ``metrics.json`` (``mAP50`` always, ``mAP`` for
    COCO); ``metric`` names the key that decides "best" (higher is better). Scalar metrics go to the log and to
    TensorBoard as ``eval/<key>``. ``best`` (the best value so far) is stored in the training checkpoints so a
    resumed run keeps comparing against it.
    """

    def __init__(
        self, evaluate: Callable[[nn.Module, int], dict[str, Any]], *, period: int, metric: str, output_dir: Path
    ) -> None:
        if period < 1:
            raise ValueError(f"test.eval_period must be positive to evaluate during training, got {period}")
        self.evaluate = evaluate
        self.period = period
        self.metric = metric
        self.output_dir = output_dir
        self.best: float | None = None
        self.history: list[dict[str, Any]] = []

    def due(self, iteration: int) -> bool:
        return iteration % self.period == 0

    def __call__(self, model: nn.Module, iteration: int, *, checkpoint: dict[str, Any], writer: Any = None) -> None:
        """Evaluate ``model`` (put back in training mode afterwards); ``checkpoint`` holds what ``model_best.pth``
        stores besides the weights (config, classes)."""
        start = time.perf_counter()
        metrics = self.evaluate(model, iteration)
        model.train()
        if self.metric not in metrics:
            scalars = sorted(k for k, v in metrics.items() if isinstance(v, (int, float)))
            raise KeyError(f"test.best_metric={self.metric!r} is not among the metrics: {', '.join(scalars)}")
        scalars = {k: float(v) for k, v in metrics.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("images", "skipped_images")}
        value = scalars[self.metric]
        improved = self.best is None or value > self.best
        if improved:
            self.best = value
            save_checkpoint(self.output_dir / "model_best.pth",
                            {**checkpoint, "iteration": iteration, "metric": self.metric, "value": value})
        self.history.append({"iteration": iteration, **scalars})
        logger.info("eval at iter %d: %s  (%s; %.1f s)%s", iteration,
                    "  ".join(f"{k}: {v:.4f}" for k, v in sorted(scalars.items())), metrics.get("metric", ""),
                    time.perf_counter() - start, f"  new best {self.metric} → model_best.pth" if improved else "")
        if writer is not None:
            for key, v in scalars.items():
                writer.add_scalar(f"eval/{key}", v, iteration)
            writer.flush()
