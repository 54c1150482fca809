"""backbones/loop.py on a toy regression: the schedule, metrics.jsonl (format, and cut back on --resume so a resumed
run's file equals an uninterrupted one's), exact resumption after a crash and after SIGTERM, and the one optimizer
step in the toolkit."""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from backbones.loop import LoopOptions, LRSchedule, TrainLoop, WarmupStepLR
from backbones.loop_guard import TrainingInterrupted

ROOT = Path(__file__).resolve().parents[2]
TIMING = ("time", "data_time", "memory_mb", "eta_s")


class ToyLoop(TrainLoop):
    """Least squares on batches that are a pure function of the iteration; ``fail_at`` raises in that step,
    ``signal_at`` sends SIGTERM to this process as that step starts."""

    def __init__(self, out: Path, *, fail_at: int = -1, signal_at: int = -1, **options: Any) -> None:
        torch.manual_seed(0)
        model = nn.Linear(3, 1)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        defaults: dict[str, Any] = dict(max_iter=8, checkpoint_period=3, log_period=1, progress=False, seed=5,
                                        eval_period=3)  # fmt: skip
        super().__init__(model=model, optimizer=optimizer, lr_at=WarmupStepLR(0.1, [5], 0.1, 2, 0.5),
                         device=torch.device("cpu"), output_dir=out, options=LoopOptions(**{**defaults, **options}),
                         eval_fn=self.mse)  # fmt: skip
        self.fail_at, self.signal_at = fail_at, signal_at

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for it in range(self.state.iteration, self.options.max_iter):
            g = torch.Generator().manual_seed(it)
            x = torch.randn(4, 3, generator=g)
            yield x, x.sum(1, keepdim=True)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.state.iteration == self.fail_at:
            raise RuntimeError("crash")
        if self.state.iteration == self.signal_at:
            os.kill(os.getpid(), signal.SIGTERM)
        noise = 0.01 * torch.randn(1)  # the torch RNG, reseeded per step: a resumed run must draw the same
        return {"loss_mse": ((self.ddp_model(x) - y) ** 2).mean() + noise.abs().sum()}

    def mse(self, iteration: int) -> dict[str, float]:
        x = torch.ones(2, 3)
        with torch.no_grad():
            return {"mse": float(((self.model(x) - 3) ** 2).mean()), "note": "text is not a metric"}  # type: ignore


def records(out: Path, timing: bool = False) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return lines if timing else [{k: v for k, v in r.items() if k not in TIMING} for r in lines]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> ToyLoop:
    loop = ToyLoop(tmp_path_factory.mktemp("reference"))
    loop.run()
    return loop


def test_warmup_step_schedule() -> None:
    lr = WarmupStepLR(0.1, steps=[5, 7], gamma=0.1, warmup_iters=2, warmup_factor=0.5)
    assert [lr(i) for i in range(9)] == pytest.approx([0.05, 0.075, 0.1, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = LRSchedule(optimizer, lr)
    assert schedule.apply(5) == optimizer.param_groups[0]["lr"] == lr(5) and schedule.last_epoch == 5


def test_metrics_jsonl_has_a_line_per_log_step_and_per_evaluation(reference: ToyLoop) -> None:
    lines = records(reference.output_dir, timing=True)
    logged = [r for r in lines if "eval" not in r]
    assert [r["iteration"] for r in logged] == list(range(1, 9))
    assert set(logged[-1]) == {"iteration", "lr", *TIMING, "loss_mse", "loss"}
    assert logged[-1]["lr"] == pytest.approx(0.01) and logged[0]["lr"] == pytest.approx(0.075)  # the rate from here on
    assert logged[-1]["eta_s"] == 0 and logged[0]["time"] is None  # not measured yet: null, not NaN
    evaluated = [r for r in lines if "eval" in r]
    assert [(r["iteration"], set(r["eval"])) for r in evaluated] == [(3, {"mse"}), (6, {"mse"})]
    assert [r["iteration"] for r in lines] == sorted(r["iteration"] for r in lines)


def test_resume_after_a_crash_cuts_metrics_back_and_matches_the_uninterrupted_run(
    reference: ToyLoop, tmp_path: Path
) -> None:
    crashed = ToyLoop(tmp_path, fail_at=4)
    with pytest.raises(RuntimeError, match="crash"):
        crashed.run()
    assert [r["iteration"] for r in records(tmp_path)][-1] == 4  # logged after the checkpoint at 3
    resumed = ToyLoop(tmp_path)
    assert resumed.resume() and resumed.state.iteration == 3
    resumed.run()
    assert records(tmp_path) == records(reference.output_dir)
    for name, value in reference.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], value), name


def test_sigterm_saves_the_current_iteration_then_resume_is_exact(reference: ToyLoop, tmp_path: Path) -> None:
    stopped = ToyLoop(tmp_path, signal_at=4)
    with pytest.raises(TrainingInterrupted, match=r"SIGTERM at iteration 5 of 8; checkpoint .*model_0000005"):
        stopped.run()
    resumed = ToyLoop(tmp_path)
    assert resumed.resume() and resumed.state.iteration == 5
    resumed.run()
    assert records(tmp_path) == records(reference.output_dir)
    assert torch.equal(resumed.model.weight, reference.model.weight)


def test_a_fresh_run_starts_a_fresh_metrics_file(reference: ToyLoop, tmp_path: Path) -> None:
    (tmp_path / "metrics.jsonl").write_text('{"iteration": 99, "loss": 1.0}\n')
    ToyLoop(tmp_path).run()
    assert records(tmp_path) == records(reference.output_dir)


def test_one_place_steps_an_optimizer() -> None:
    calls = re.compile(r"(optimizer|scaler)\.step\(")
    files = [p for folder in ("backbones", "detection") for p in sorted((ROOT / folder).rglob("*.py"))]
    found = [f"{p.relative_to(ROOT)}:{i}" for p in files for i, line in enumerate(p.read_text().splitlines(), 1)
             if calls.search(line)]  # fmt: skip
    assert len(found) == 1 and found[0].startswith("backbones/loop.py"), found
