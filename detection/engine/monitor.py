"""Periodic evaluation during detector training that keeps ``model_best.pth`` by a chosen metric.

``detection/engine/run.py`` builds the :class:`PeriodicEvaluator` from ``test.eval_period`` / ``test.best_metric``;
the trainer (``detection/engine/trainer.py``) calls it from the one training loop, which records the metrics it
returns (``metrics.jsonl``, TensorBoard ``eval/*``). The timing, ETA and memory of the log lines belong to that
loop (``backbones/loop_monitor.py``) and are importable from here too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from backbones.checkpoint import save_checkpoint
from backbones.loop_monitor import IterationTimer, format_eta, peak_memory_mb, training_log_line

__all__ = ["IterationTimer", "PeriodicEvaluator", "format_eta", "peak_memory_mb", "training_log_line"]

logger = logging.getLogger(__name__)


class PeriodicEvaluator:
    """Evaluate every ``period`` iterations and keep the best weights in ``output_dir/model_best.pth``.

    ``evaluate(model, iteration)`` returns the metrics dict of ``metrics.json`` (``mAP50`` always, ``mAP`` for
    COCO); ``metric`` names the key that decides "best" (higher is better). Scalar metrics go to the log and are
    returned (the training loop writes them to ``metrics.jsonl`` and TensorBoard as ``eval/<key>``). ``best`` (the
    best value so far) is stored in the training checkpoints so a resumed run keeps comparing against it.
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

    def __call__(self, model: nn.Module, iteration: int, *, checkpoint: dict[str, Any]) -> dict[str, float]:
        """Evaluate ``model`` (put back in training mode afterwards); ``checkpoint`` holds what ``model_best.pth``
        stores besides the weights (config, classes). Returns the scalar metrics."""
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
        return scalars
