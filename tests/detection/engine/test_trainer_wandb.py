"""``logging.wandb_project`` on a real tiny detector training (detection/engine/run.py ``train``, periodic
evaluation on) with a fake ``wandb`` module (``fake_wandb``, tests/conftest.py): the run holds the config, the
training and evaluation scalars by iteration, is finished, and ``--resume`` continues it. Without wandb: one
warning and the training finishes."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from backbones.loop_wandb import RUN_ID_FILE
from detection.config import Config
from detection.engine.run import RunOptions, train

ConfigFactory = Callable[..., Config]
NOT_INSTALLED = "logging.wandb_project is set but wandb is not installed: pip install wandb"


def wandb_config(tiny_config: ConfigFactory) -> Config:
    return tiny_config("solver.max_iter=4", "solver.checkpoint_period=2", "test.eval_period=2",
                       "logging.wandb_project=shapes-tiny", "logging.wandb_run_name=tiny")  # fmt: skip


def options(shapes_root: Path, output_dir: Path, resume: bool = False) -> RunOptions:
    return RunOptions(dataset="shapes", data_root=shapes_root, output_dir=output_dir, device="cpu", progress=False,
                      evaluate=False, resume=resume)  # fmt: skip


def test_training_logs_to_wandb_and_resume_continues_the_run(
    tmp_path: Path, shapes_root: Path, tiny_config: ConfigFactory, fake_wandb
) -> None:
    cfg, out = wandb_config(tiny_config), tmp_path / "run"
    train(cfg, options(shapes_root, out))
    run_id = (out / RUN_ID_FILE).read_text().strip()
    assert fake_wandb.inits == [{"project": "shapes-tiny", "entity": None, "name": "tiny", "config": cfg.to_dict(),
                                 "dir": str(out), "id": run_id, "resume": "allow"}]  # fmt: skip
    train_logs = [(step, data) for data, step in fake_wandb.logs if "train/loss" in data]
    eval_logs = [(step, data) for data, step in fake_wandb.logs if "eval/mAP50" in data]
    assert [step for step, _ in train_logs] == [4]  # log_period 20: the last iteration only
    assert {"train/lr", "train/loss_rpn_cls", "train/loss_cls"} <= set(train_logs[0][1])
    assert [step for step, _ in eval_logs] == [2, 4]
    assert fake_wandb.finishes == 1

    (out / "model_0000004.pth").unlink()  # as if killed after the checkpoint at 2
    train(cfg, options(shapes_root, out, resume=True))
    assert fake_wandb.inits[1]["id"] == run_id
    assert [step for data, step in fake_wandb.logs[len(train_logs) + len(eval_logs):]] == [4, 4]
    assert fake_wandb.finishes == 2


def test_without_wandb_installed_one_warning_and_training_finishes(
    tmp_path: Path, shapes_root: Path, tiny_config: ConfigFactory, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)
    cfg = tiny_config("solver.max_iter=2", "solver.checkpoint_period=0", "logging.wandb_project=shapes-tiny")
    with caplog.at_level(logging.WARNING):
        train(cfg, options(shapes_root, tmp_path))
    assert [r.getMessage() for r in caplog.records].count(NOT_INSTALLED) == 1
    assert (tmp_path / "model_final.pth").is_file() and not (tmp_path / RUN_ID_FILE).exists()
