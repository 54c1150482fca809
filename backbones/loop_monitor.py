"""Feedback during long training runs (:class:`backbones.loop.TrainLoop`): iteration and data-loading times, ETA
and peak memory for the log lines (as detectron2's), and ``OUTPUT_DIR/metrics.jsonl``, every logged scalar as one
JSON object per line.

``metrics.jsonl`` holds two kinds of line, appended (rank 0 only, flushed at each write) in iteration order:

- a log step: ``{"iteration": 20, "lr": 0.02, "time": 0.41, "data_time": 0.01, "memory_mb": 812.0,
  "eta_s": 33.0, "loss": 1.23, "loss_cls": 0.51, ...}`` (each loss by name; ``time`` / ``data_time`` are seconds
  per iteration, medians over the log window; ``null`` where not yet measured);
- a periodic evaluation: ``{"iteration": 20, "eval": {"mAP50": 0.41, ...}}``.

A resumed run first cuts the file back to the lines of the iterations its checkpoint covers
(:meth:`MetricsLog.start`), so its file has the lines an uninterrupted run's has.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import resource
import statistics
import sys
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import torch

__all__ = ["IterationTimer", "MetricsLog", "format_eta", "peak_memory_mb", "training_log_line"]

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
            try:
                item = next(stream)
            except StopIteration:
                return
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


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN / inf
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    return value


class MetricsLog:
    """``path`` (``OUTPUT_DIR/metrics.jsonl``) as an append-only JSON-lines file; a no-op when ``path`` is None
    (ranks other than 0)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._file: Any = None

    def start(self, iteration: int) -> None:
        """Keep the lines of iterations ``<= iteration`` (none for a fresh run), written atomically; then append."""
        if self.path is None:
            return
        kept = []
        if iteration > 0 and self.path.is_file():
            for line in self.path.read_text().splitlines():
                try:
                    if int(json.loads(line)["iteration"]) <= iteration:
                        kept.append(line)
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut short by a kill mid-write
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp.{os.getpid()}")
        tmp.write_text("".join(line + "\n" for line in kept))
        tmp.replace(self.path)
        self.close()
        self._file = open(self.path, "a")  # noqa: SIM115 - appended to for the whole run

    def write(self, record: dict[str, Any]) -> None:
        if self._file is None:
            return
        self._file.write(json.dumps(_finite_or_none(record)) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
