"""The detector's learning-rate schedule from ``cfg.solver`` (detection/engine/trainer.py ``build_lr_schedule``):
the step schedule by default, the cosine one on request, the rate scaled with the batch by
``solver.reference_batch_size``, and the log saying which rate is used and why."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from backbones.loop_schedule import WarmupCosineLR, WarmupStepLR
from detection.build import build_detector
from detection.config import Config, ConfigError, load_config
from detection.engine.trainer import Trainer, build_lr_schedule

ConfigFactory = Callable[..., Config]


def make_trainer(cfg: Config, dataset: Any, output_dir: Path, **kwargs: Any) -> Trainer:
    torch.manual_seed(cfg.seed)
    return Trainer(model=build_detector(cfg), cfg=cfg, dataset=dataset, output_dir=output_dir,
                   device=torch.device("cpu"), classes=dataset.classes, progress=False, **kwargs)  # fmt: skip


def info_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "detection.engine.trainer"]


def test_the_default_is_the_step_schedule_at_base_lr_and_the_log_says_so(
    tmp_path: Path, shapes_train: Any, tiny_config: ConfigFactory, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = tiny_config()
    with caplog.at_level(logging.INFO):
        trainer = make_trainer(cfg, shapes_train, tmp_path)
    s = cfg.solver
    assert trainer.scheduler.lr_at == WarmupStepLR(s.base_lr, s.steps, s.gamma, s.warmup_iters, s.warmup_factor)
    assert trainer.optimizer.param_groups[0]["lr"] == s.base_lr * s.warmup_factor
    assert info_lines(caplog) == [
        "learning rate 0.02 (solver.base_lr, for 2 images per step; solver.reference_batch_size=0: not scaled with "
        "the batch); step schedule: × 0.1 at iterations [60000, 80000], linear warm-up from × 0.001 over 2 "
        "iterations"
    ]


def test_reference_batch_size_scales_the_rate_linearly_and_the_log_derives_it(
    tmp_path: Path, shapes_train: Any, tiny_config: ConfigFactory, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = tiny_config("solver.reference_batch_size=8", "solver.warmup_iters=0")  # 2 images per step
    with caplog.at_level(logging.INFO):
        trainer = make_trainer(cfg, shapes_train, tmp_path)
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.02 * 2 / 8)
    assert info_lines(caplog)[0].startswith(
        "learning rate 0.005 = solver.base_lr 0.02 × 2 images / 8 (solver.reference_batch_size); step schedule")


def test_cosine_schedule_trains_at_the_cosine_rates_scaled_with_the_batch(
    tmp_path: Path, shapes_train: Any, tiny_config: ConfigFactory, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = tiny_config("solver.lr_schedule=cosine", "solver.base_lr_end=0.002", "solver.reference_batch_size=4",
                      "solver.max_iter=4", "solver.checkpoint_period=0")  # fmt: skip
    with caplog.at_level(logging.INFO):
        trainer = make_trainer(cfg, shapes_train, tmp_path, log_period=1)
        trainer.run()
    half = 2 / 4  # 2 images per step, rates tuned for 4
    expected = WarmupCosineLR(0.02 * half, 4, 0.002 * half, warmup_iters=2, warmup_factor=0.001)
    assert trainer.scheduler.lr_at == expected
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["iteration"], r["lr"]) for r in logged] == [(i, expected(i)) for i in range(1, 5)]
    assert trainer.optimizer.param_groups[0]["lr"] == expected(4) == pytest.approx(0.002 * half)
    lines = info_lines(caplog)
    assert lines.count("solver.steps [60000, 80000] are not used by the cosine schedule") == 1
    assert any(line.startswith("learning rate 0.01 = solver.base_lr 0.02 × 2 images / 4 (solver.reference_batch_size)"
                               "; cosine schedule to 0.001 = solver.base_lr_end 0.002 scaled alike at iteration 4")
               for line in lines)  # fmt: skip


def test_an_unknown_schedule_is_one_config_error_naming_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"^invalid config: solver.lr_schedule='linear' must be 'step' or 'cosine'$"):
        load_config(overrides=["solver.lr_schedule=linear"])
    with pytest.raises(ConfigError, match=r"solver.reference_batch_size=-16 must be non-negative"):
        load_config(overrides=["solver.reference_batch_size=-16"])
    with pytest.raises(ConfigError, match=r"solver.base_lr_end=nan must be a non-negative finite number"):
        load_config(overrides=["solver.base_lr_end=.nan"])


def test_the_log_splits_the_batch_over_the_workers(caplog: pytest.LogCaptureFixture) -> None:
    s = load_config(overrides=["solver.ims_per_batch=4", "solver.reference_batch_size=16"]).solver
    with caplog.at_level(logging.INFO):
        build_lr_schedule(s, world_size=2)
    assert ("learning rate 0.005 = solver.base_lr 0.02 × 4 images / 16 (solver.reference_batch_size); 4 images = 2 "
            "workers × 2; step schedule") in info_lines(caplog)[0]
    s.lr_schedule = "linear"  # set in code, past load_config's check
    with pytest.raises(ConfigError, match=r"solver.lr_schedule='linear' must be 'step' or 'cosine'"):
        build_lr_schedule(s)
