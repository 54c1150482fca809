"""backbones/loop_schedule.py: the cosine schedule with warm-up (against hand-computed values and torch's own
CosineAnnealingLR) and the linear scaling of the rate with the batch."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from backbones.loop_schedule import LRSchedule, WarmupCosineLR, WarmupStepLR, linear_warmup, scale_lr_with_batch


def test_cosine_without_warmup_by_hand() -> None:
    lr = WarmupCosineLR(0.1, max_iter=8)
    half_way_up = 0.1 * 0.5 * (1 + math.cos(math.pi / 4))  # iteration 2 of 8: a quarter of the half cosine
    assert lr(0) == pytest.approx(0.1)
    assert lr(2) == pytest.approx(half_way_up)
    assert lr(4) == pytest.approx(0.05)  # half way: half the rate
    assert lr(8) == pytest.approx(0.0, abs=1e-12)
    assert lr(12) == lr(8)  # past max_iter it stays at the end rate


def test_cosine_ends_at_base_lr_end_and_matches_torch_cosine_annealing() -> None:
    base, end, max_iter = 0.02, 0.002, 10
    lr = WarmupCosineLR(base, max_iter=max_iter, base_lr_end=end)
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=base)
    torch_schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max_iter, eta_min=end)
    for iteration in range(max_iter + 1):
        assert lr(iteration) == pytest.approx(optimizer.param_groups[0]["lr"], rel=1e-9), iteration
        optimizer.step()
        torch_schedule.step()
    assert lr(max_iter) == pytest.approx(end)


def test_cosine_warmup_multiplies_the_cosine_as_detectron2s_warmup_cosine_lr() -> None:
    """detectron2's WarmupCosineLR: base_lr × warm-up factor × ½(1 + cos(π i / max_iter)), the cosine counted
    from iteration 0 (not from the end of the warm-up)."""
    lr = WarmupCosineLR(0.1, max_iter=8, warmup_iters=2, warmup_factor=0.5)
    cosine = WarmupCosineLR(0.1, max_iter=8)
    assert lr(0) == pytest.approx(0.5 * 0.1)
    assert lr(1) == pytest.approx(0.75 * cosine(1))  # half way through the warm-up: factor 0.5 + (1 - 0.5) / 2
    assert [lr(i) for i in range(2, 9)] == [cosine(i) for i in range(2, 9)]


def test_linear_warmup_is_the_step_schedules() -> None:
    step = WarmupStepLR(1.0, steps=[], warmup_iters=4, warmup_factor=0.2)
    assert [linear_warmup(i, 4, 0.2) for i in range(6)] == [step(i) for i in range(6)]
    assert linear_warmup(0, 0, 0.2) == 1.0  # no warm-up


def test_scale_lr_with_batch() -> None:
    assert scale_lr_with_batch(0.02, 4, 16) == pytest.approx(0.005)
    assert scale_lr_with_batch(0.02, 32, 16) == pytest.approx(0.04)
    assert scale_lr_with_batch(0.02, 4, 0) == 0.02  # 0: not scaled


def test_lr_schedule_sets_the_cosine_rate_on_every_param_group() -> None:
    optimizer = torch.optim.SGD([{"params": [nn.Parameter(torch.zeros(1))]},
                                 {"params": [nn.Parameter(torch.zeros(1))]}], lr=1.0)  # fmt: skip
    lr = WarmupCosineLR(0.1, max_iter=8)
    assert LRSchedule(optimizer, lr).apply(4) == lr(4)
    assert [g["lr"] for g in optimizer.param_groups] == [lr(4), lr(4)]
