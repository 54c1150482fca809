"""Learning-rate schedules of the one training loop (``backbones/loop.py``): a schedule is a function of the
iteration, ``lr_at(iteration) -> lr``, which :class:`LRSchedule` sets on every param group before each step.

A new schedule is one more callable here (or anywhere): the loop needs nothing else. One that carries state (the
classifier's warm-up that ends on the training error, ``backbones/train.py`` ``RecipeSchedule``) also gives
``state_dict`` / ``load_state_dict``, and the loop checkpoints it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["LRSchedule", "WarmupCosineLR", "WarmupStepLR", "linear_warmup", "scale_lr_with_batch"]


def linear_warmup(iteration: int, warmup_iters: int, warmup_factor: float) -> float:
    """The warm-up multiplier: ``warmup_factor`` at iteration 0 rising linearly to 1 at ``warmup_iters``."""
    if iteration >= warmup_iters:
        return 1.0
    alpha = iteration / warmup_iters
    return warmup_factor * (1 - alpha) + alpha


def scale_lr_with_batch(lr: float, batch_size: int, reference_batch_size: int) -> float:
    """The linear scaling rule (Goyal et al. 2017): ``lr`` was tuned for ``reference_batch_size`` images per step,
    so ``batch_size`` images use ``lr × batch_size / reference_batch_size``. ``reference_batch_size`` 0: ``lr``."""
    return lr * batch_size / reference_batch_size if reference_batch_size > 0 else lr


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
            factor *= linear_warmup(iteration, self.warmup_iters, self.warmup_factor)
        return factor

    def __call__(self, iteration: int) -> float:
        return self.base_lr * self.factor(iteration)


@dataclass
class WarmupCosineLR:
    """A half cosine from ``base_lr`` (iteration 0) to ``base_lr_end`` (iteration ``max_iter``), times the linear
    warm-up from ``warmup_factor`` to 1 over the first ``warmup_iters``:

        lr(i) = (base_lr_end + (base_lr - base_lr_end) · ½ (1 + cos(π i / max_iter))) · warm-up(i)

    The cosine runs over the whole ``max_iter``, warm-up included, and the warm-up multiplies it: detectron2's
    ``WarmupCosineLR`` (``SOLVER.LR_SCHEDULER_NAME: WarmupCosineLR``), exactly so for ``base_lr_end`` 0. (Its newer
    fvcore-based scheduler instead interpolates during the warm-up towards the cosine's value at its end; the two
    agree from ``warmup_iters`` on.) Past ``max_iter`` the rate stays at ``base_lr_end``.
    """

    base_lr: float
    max_iter: int
    base_lr_end: float = 0.0
    warmup_iters: int = 0
    warmup_factor: float = 1.0

    def __call__(self, iteration: int) -> float:
        progress = min(iteration, self.max_iter) / self.max_iter
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        lr = self.base_lr_end + (self.base_lr - self.base_lr_end) * cosine
        return lr * linear_warmup(iteration, self.warmup_iters, self.warmup_factor)


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
