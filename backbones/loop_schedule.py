"""Learning-rate schedules of the one training loop (``backbones/loop.py``): a schedule is a function of the
iteration, ``lr_at(iteration) -> lr``, which :class:`LRSchedule` sets on every param group before each step.

A new schedule is one more callable here (or anywhere): the loop needs nothing else. One that carries state (the
classifier's warm-up that ends on the training error, ``backbones/train.py`` ``RecipeSchedule``) also gives
``state_dict`` / ``load_state_dict``, and the loop checkpoints it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["LRSchedule", "WarmupStepLR"]


@dataclass
class WarmupStepLR:
    """``base_lr`` × linear warm-up from ``warmup_factor`` to 1 over ``warmup_iters`` × ``gamma`` at each step."""

    base_lr: float
    steps: list[int] = field(default_factory=list)
    gamma: float = 0.1
    warmup_iters: int = 0
    warmup_factor: float = 1.0

    def factor(self, iteration: int) -> float:
        factor = self.gamma ** sum(1 for s in self.steps if iteration >= s)
        if iteration < self.warmup_iters:
            alpha = iteration / self.warmup_iters
            factor *= self.warmup_factor * (1 - alpha) + alpha
        return factor

    def __call__(self, iteration: int) -> float:
        return self.base_lr * self.factor(iteration)


class LRSchedule:
    """Sets every param group's learning rate to ``lr_at(iteration)``. ``last_epoch`` is the iteration last
    applied (torch's scheduler name for it)."""

    def __init__(self, optimizer: torch.optim.Optimizer, lr_at: Callable[[int], float]) -> None:
        self.optimizer, self.lr_at, self.last_epoch = optimizer, lr_at, 0

    def apply(self, iteration: int) -> float:
        lr = self.lr_at(iteration)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.last_epoch = iteration
        return lr

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"last_epoch": self.last_epoch}
        if hasattr(self.lr_at, "state_dict"):
            state["lr_at"] = self.lr_at.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last_epoch = int(state.get("last_epoch", 0))
        if "lr_at" in state and hasattr(self.lr_at, "load_state_dict"):
            self.lr_at.load_state_dict(state["lr_at"])
