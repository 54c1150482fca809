"""The training loop's stop hook (``TrainLoop.stop_reason``, backbones/loop.py): an evaluation that sets it ends
training after that iteration the way ``max_iter`` does (checkpoint, ``model_final.pth``, the reason logged); a
loop resumed with the reason already set trains no further."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from backbones.checkpoint import load_checkpoint
from backbones.loop import LoopOptions, TrainLoop, WarmupStepLR


class StopAt(TrainLoop):
    """Least squares; the evaluation every 2 iterations asks to stop from ``stop_at`` on."""

    def __init__(self, out: Path, stop_at: int) -> None:
        torch.manual_seed(0)
        model = nn.Linear(3, 1)
        super().__init__(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                         lr_at=WarmupStepLR(0.1, [], 0.1, 0, 1.0), device=torch.device("cpu"), output_dir=out,
                         options=LoopOptions(max_iter=10, checkpoint_period=3, progress=False, seed=1, eval_period=2),
                         eval_fn=self.evaluate)  # fmt: skip
        self.stop_at = stop_at
        self.evaluated: list[int] = []

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            x = torch.randn(4, 3)
            yield x, x.sum(1, keepdim=True)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss_mse": ((self.ddp_model(x) - y) ** 2).mean()}

    def evaluate(self, iteration: int) -> dict[str, float]:
        self.evaluated.append(iteration)
        if iteration >= self.stop_at:
            self.stop_reason = f"early stop at iter {iteration}: test"
        return {"iteration": float(iteration)}


def test_stop_reason_ends_training_like_max_iter(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    loop = StopAt(tmp_path, stop_at=4)
    with caplog.at_level(logging.INFO, logger="backbones.loop"):
        state = loop.run()
    assert state.iteration == 4 and loop.evaluated == [2, 4]
    assert sorted(p.name for p in tmp_path.glob("model_*.pth")) == ["model_0000003.pth", "model_0000004.pth",
                                                                     "model_final.pth"]  # fmt: skip
    final = load_checkpoint(tmp_path / "model_final.pth")["model"]
    assert all(torch.equal(final[k], v) for k, v in loop.model.state_dict().items())
    assert "early stop at iter 4: test" in caplog.text and "training finished: 4 iterations" in caplog.text

    resumed = StopAt(tmp_path, stop_at=4)
    assert resumed.resume() and resumed.state.iteration == 4
    resumed.stop_reason = "early stop at iter 4: test"  # what a subclass's load_extra_state restores
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="backbones.loop"):
        assert resumed.run().iteration == 4
    assert resumed.evaluated == [] and "this run had already stopped there: not training on" in caplog.text


def test_without_a_stop_reason_the_loop_runs_to_max_iter(tmp_path: Path) -> None:
    loop = StopAt(tmp_path, stop_at=99)
    assert loop.run().iteration == 10 and loop.evaluated == [2, 4, 6, 8, 10]
