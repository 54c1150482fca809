"""Test-only fault injection for subprocess runs of the tools: put this folder on ``PYTHONPATH`` and set
``RESDET_TEST_FAULT=<rank>:<iteration>:<action>``; Python imports ``sitecustomize`` at start-up, before the tool.

At training step ``iteration`` on worker ``rank`` (``Trainer.state.iteration``, 0-based), ``action`` is
``raise`` (a RuntimeError naming rank and iteration), ``kill`` (SIGKILL to the worker itself: a hard crash, no
Python clean-up), ``nan`` (every loss of that step becomes NaN), ``term`` or ``int`` (SIGTERM / SIGINT to the worker
itself as the step starts: preemption and Ctrl-C, arriving mid-step). Nothing is patched when the variable is unset,
so the product itself carries no test hooks.
"""

from __future__ import annotations

import os

_SPEC = os.environ.get("RESDET_TEST_FAULT")


def _install(spec: str) -> None:
    import signal
    from typing import Any

    from detection.engine import trainer as trainer_module
    from detection.modeling.faster_rcnn import FasterRCNN

    rank_text, iteration_text, action = spec.split(":")
    rank, iteration = int(rank_text), int(iteration_text)
    original_step = trainer_module.Trainer.step
    original_forward = FasterRCNN.forward
    poisoned = [False]

    def forward(self: FasterRCNN, *args: Any, **kwargs: Any) -> Any:
        out = original_forward(self, *args, **kwargs)
        if poisoned[0]:
            out = {k: v * float("nan") for k, v in out.items()}
        return out

    def step(self: trainer_module.Trainer, images: Any, targets: Any) -> Any:
        hit = self.rank == rank and self.state.iteration == iteration
        if hit and action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if hit and action in ("term", "int"):
            os.kill(os.getpid(), signal.SIGTERM if action == "term" else signal.SIGINT)
        if hit and action == "raise":
            raise RuntimeError(f"injected fault on rank {rank} at iteration {iteration}")
        poisoned[0] = hit and action == "nan"
        try:
            return original_step(self, images, targets)
        finally:
            poisoned[0] = False

    FasterRCNN.forward = forward  # type: ignore[method-assign]
    trainer_module.Trainer.step = step  # type: ignore[method-assign]


if _SPEC:
    _install(_SPEC)
