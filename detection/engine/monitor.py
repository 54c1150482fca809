"""Periodic evaluation during detector training that keeps ``model_best.pth`` by a chosen metric, adds the
validation losses and decides early stopping.

``detection/engine/run.py`` builds the :class:`PeriodicEvaluator` from ``test.eval_period`` / ``test.best_metric`` /
``test.val_losses`` / ``test.patience``; the trainer (``detection/engine/trainer.py``) calls it on every rank from
the one training loop, which records the metrics it returns (``metrics.jsonl``, TensorBoard ``eval/*``) and stops
when :attr:`PeriodicEvaluator.stop_reason` is set. The timing, ETA and memory of the log lines belong to that
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
from backbones.runtime import get_rank
from detection.engine.validation import training_untouched

__all__ = ["IterationTimer", "PeriodicEvaluator", "format_eta", "higher_is_better", "peak_memory_mb",
           "training_log_line"]

logger = logging.getLogger(__name__)

NOT_SCALARS = ("images", "skipped_images", "world_size")  # numbers of metrics.json that are counts, not metrics


def higher_is_better(metric: str) -> bool:
    """Accuracy metrics (``mAP50``, ``mAP``, …) improve upwards; the validation losses (``val_*``) downwards."""
    return not metric.startswith("val_")


class PeriodicEvaluator:
    """Evaluate every ``period`` iterations and keep the best weights in ``output_dir/model_best.pth``.

    ``evaluate(model, iteration)`` returns the metrics dict of ``metrics.json`` (``mAP50`` always, ``mAP`` for
    COCO); ``losses(model)``, when given, adds the validation losses (``val_*``, detection/engine/validation.py).
    ``metric`` names the key that decides "best" (higher is better; lower for a ``val_*`` loss). Scalar metrics
    go to the log and are returned (the training loop writes them to ``metrics.jsonl`` and TensorBoard as
    ``eval/<key>``). Under torchrun it is called on every rank with the same metrics (the evaluation is sharded and
    its result broadcast), so every rank takes the same decisions; rank 0 writes ``model_best.pth``.

    Early stopping: with ``patience`` N > 0, :attr:`stop_reason` says why training should stop once N evaluations
    in a row brought no gain. :meth:`state_dict` (the best value and its iteration, the evaluations without gain)
    is stored in the training checkpoints, so a resumed run keeps comparing and counting.
    """

    def __init__(self, evaluate: Callable[[nn.Module, int], dict[str, Any]], *, period: int, metric: str,
                 output_dir: Path, patience: int = 0,
                 losses: Callable[[nn.Module], dict[str, float]] | None = None) -> None:  # fmt: skip
        if period < 1:
            raise ValueError(f"test.eval_period must be positive to evaluate during training, got {period}")
        self.evaluate = evaluate
        self.losses = losses
        self.period = period
        self.metric = metric
        self.output_dir = output_dir
        self.patience = patience
        self.best: float | None = None
        self.best_iteration: int | None = None
        self.without_gain = 0  # evaluations in a row since the best
        self.last_iteration: int | None = None
        self.history: list[dict[str, Any]] = []

    def due(self, iteration: int) -> bool:
        return iteration % self.period == 0

    def improves(self, value: float) -> bool:
        if self.best is None:
            return True
        return value > self.best if higher_is_better(self.metric) else value < self.best

    @property
    def stop_reason(self) -> str | None:
        """The log line that ends training early, or None while the metric still improves (or without patience)."""
        if self.patience <= 0 or self.without_gain < self.patience:
            return None
        evaluations = "evaluation" if self.without_gain == 1 else "evaluations"
        return (f"early stop at iter {self.last_iteration}: {self.metric} has not improved for {self.without_gain} "
                f"{evaluations} (best {self.best:.4g} at iter {self.best_iteration}, model_best.pth)")

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_iteration": self.best_iteration, "without_gain": self.without_gain,
                "last_iteration": self.last_iteration}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = None if state.get("best") is None else float(state["best"])
        self.best_iteration = state.get("best_iteration")
        self.without_gain = int(state.get("without_gain", 0))
        self.last_iteration = state.get("last_iteration")

    def __call__(self, model: nn.Module, iteration: int, *, checkpoint: dict[str, Any]) -> dict[str, float]:
        """Evaluate ``model`` (its modes, buffers and the RNG states are put back afterwards: training goes on as
        if nothing happened); ``checkpoint`` holds what ``model_best.pth`` stores besides the weights (config,
        classes). Returns the scalar metrics."""
        start = time.perf_counter()
        with training_untouched(model):
            metrics = dict(self.evaluate(model, iteration))
            if self.losses is not None:
                metrics.update(self.losses(model))
        if self.metric not in metrics:
            scalars = sorted(k for k, v in metrics.items() if isinstance(v, (int, float)))
            raise KeyError(f"test.best_metric={self.metric!r} is not among the metrics: {', '.join(scalars)}")
        scalars = {k: float(v) for k, v in metrics.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in NOT_SCALARS}
        value = scalars[self.metric]
        improved = self.improves(value)
        self.last_iteration = iteration
        if improved:
            self.best, self.best_iteration, self.without_gain = value, iteration, 0
            if get_rank() == 0:
                save_checkpoint(self.output_dir / "model_best.pth",
                                {**checkpoint, "iteration": iteration, "metric": self.metric, "value": value})
        else:
            self.without_gain += 1
        self.history.append({"iteration": iteration, **scalars})
        logger.info("eval at iter %d: %s  (%s; %.1f s)%s", iteration,
                    "  ".join(f"{k}: {v:.4f}" for k, v in sorted(scalars.items())), metrics.get("metric", ""),
                    time.perf_counter() - start, f"  new best {self.metric} → model_best.pth" if improved else "")
        return scalars
