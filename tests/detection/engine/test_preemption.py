"""detection/engine/preemption.py in-process: a SIGTERM or SIGINT during a step ends ``Trainer.run`` after that step
with a checkpoint at the current iteration, and the previous signal handlers come back. (End to end, with the exit
line and an exact resume: tests/tools/test_train_det_run_dir.py.)"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest
import torch

from backbones.checkpoint import load_checkpoint
from detection.build import build_detector
from detection.engine.preemption import TrainingInterrupted, stop_signals
from detection.engine.trainer import Trainer


class SignalsItselfAt(Trainer):
    """A trainer that sends ``signum`` to its own process as step ``at`` starts (as a scheduler would, mid-step)."""

    def __init__(self, *args: Any, signum: int, at: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.signum, self.at = signum, at

    def step(self, images: Any, targets: Any) -> Any:
        if self.state.iteration == self.at:
            os.kill(os.getpid(), self.signum)
        return super().step(images, targets)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_mid_step_saves_the_current_iteration_and_restores_handlers(
    shapes_train: Any, tiny_config: Any, tmp_path: Path, signum: int
) -> None:
    cfg = tiny_config("solver.max_iter=6", "solver.checkpoint_period=0")
    torch.manual_seed(cfg.seed)
    trainer = SignalsItselfAt(model=build_detector(cfg), cfg=cfg, dataset=shapes_train, output_dir=tmp_path,
                              device=torch.device("cpu"), classes=shapes_train.classes, progress=False,
                              signum=signum, at=1)
    before = signal.getsignal(signum)
    with pytest.raises(TrainingInterrupted) as info, stop_signals(trainer):
        trainer.run()
    assert signal.getsignal(signum) is before
    assert info.value.exit_code == 128 + signum
    saved = tmp_path / "model_0000002.pth"
    assert str(info.value) == (f"training stopped by {signal.Signals(signum).name} at iteration 2 of 6; checkpoint "
                               f"{saved} saved; continue with --resume")
    assert load_checkpoint(saved)["iteration"] == 2
    assert not (tmp_path / "model_final.pth").exists()
