"""Training curves from a run's ``metrics.jsonl`` (JSON lines the trainer writes on rank 0): one object per log
step ``{"iteration", "lr", "time", "data_time", "memory_mb", "eta_s", "loss_<name>": ...}`` and one per periodic
evaluation ``{"iteration", "eval": {metric: value}}``. Several runs are overlaid, one colour each.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from detection.errors import EvaluationInputError
from detection.evaluation.analysis.plots import require_matplotlib, to_png

METRICS_FILE = "metrics.jsonl"


@dataclass
class TrainingLog:
    """A run's scalars: ``series[name] = (iterations, values)`` for the log steps, ``evals[metric]`` likewise;
    ``skipped`` counts unreadable lines (a run killed mid-write leaves half a line)."""

    name: str
    series: dict[str, tuple[list[int], list[float]]] = field(default_factory=dict)
    evals: dict[str, tuple[list[int], list[float]]] = field(default_factory=dict)
    skipped: int = 0


def _add(table: dict[str, tuple[list[int], list[float]]], name: str, iteration: int, value: object) -> None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        its, values = table.setdefault(name, ([], []))
        its.append(iteration)
        values.append(float(value))


def read_training_log(run_dir: Path) -> TrainingLog:
    """``run_dir/metrics.jsonl`` (or that file itself) → :class:`TrainingLog` named after the folder."""
    path = run_dir / METRICS_FILE if run_dir.is_dir() else run_dir
    if not path.is_file():
        raise EvaluationInputError(f"{path}: no training log (the trainer writes {METRICS_FILE} in its output folder)")
    log = TrainingLog(name=path.parent.name or str(path.parent))
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                iteration = int(record["iteration"])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                log.skipped += 1
                continue
            for name, value in record.items():
                if name == "eval" and isinstance(value, dict):
                    for metric, v in value.items():
                        _add(log.evals, metric, iteration, v)
                elif name != "iteration":
                    _add(log.series, name, iteration, value)
    return log


def plot_training(logs: Sequence[TrainingLog]) -> bytes:
    """One panel per loss, the learning rate, seconds per iteration and each evaluation metric; runs overlaid."""
    plt = require_matplotlib()
    losses = sorted({n for log in logs for n in log.series if n.startswith("loss") or n.endswith("loss")})
    others = [n for n in ("lr", "time") if any(n in log.series for log in logs)]
    metrics = sorted({m for log in logs for m in log.evals})
    panels = [("series", n) for n in [*losses, *others]] + [("evals", m) for m in metrics]
    if not panels:
        raise EvaluationInputError(f"no scalars to draw in {', '.join(log.name for log in logs)}")
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    colours = plt.get_cmap("tab10")
    for ax, (kind, name) in zip(axes.ravel(), panels):
        for r, log in enumerate(logs):
            table = log.series if kind == "series" else log.evals
            if name in table:
                its, values = table[name]
                ax.plot(its, values, color=colours(r % 10), label=log.name, marker="o" if kind == "evals" else None,
                        markersize=3, linewidth=1)
        title = {"time": "seconds per iteration", "lr": "learning rate"}.get(name, name)
        ax.set(title=f"eval {name}" if kind == "evals" else title, xlabel="iteration")
        if name == "lr" or (name in losses and all(v > 0 for log in logs for v in log.series.get(name, ([], []))[1])):
            ax.set_yscale("log")
        if len(logs) > 1:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return to_png(fig)
