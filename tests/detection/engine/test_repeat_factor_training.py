"""data.sampler=repeat_factor in the Trainer: the sampler the config names, images of rare classes repeated, and a
resumed run that continues the same repeated epochs (the same weights as an uninterrupted one)."""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from backbones.checkpoint import load_checkpoint
from detection.build import build_detector
from detection.config import Config
from detection.data.sampler import RepeatFactorSampler
from detection.engine.trainer import Trainer, epoch_batches


def make_trainer(cfg: Config, dataset: Any, output_dir: Path) -> Trainer:
    torch.manual_seed(cfg.seed)
    return Trainer(model=build_detector(cfg), cfg=cfg, dataset=dataset, output_dir=output_dir,
                   device=torch.device("cpu"), classes=dataset.classes, progress=False)


def test_repeat_factor_training_resumes_into_the_same_epochs(
    shapes_train: Any, tiny_config: Callable[..., Config], tmp_path: Path
) -> None:
    cfg = tiny_config("data.sampler=repeat_factor", "data.repeat_threshold=0.9", "solver.max_iter=12",
                      "solver.checkpoint_period=6")
    full = make_trainer(cfg, shapes_train, tmp_path / "full")
    assert isinstance(full.sampler, RepeatFactorSampler)
    counts = Counter(i for batch in epoch_batches(full.sampler, 0, cfg.seed) for i, _ in batch)
    assert max(counts.values()) >= 2 and full.sampler.expected_epoch_size > len(shapes_train)
    full.run()

    resumed_dir = tmp_path / "resumed"
    resumed_dir.mkdir()
    shutil.copy(tmp_path / "full" / "model_0000006.pth", resumed_dir)
    resumed = make_trainer(cfg, shapes_train, resumed_dir)
    assert resumed.resume() and resumed.state.iteration == 6
    resumed.run()
    a, b = load_checkpoint(tmp_path / "full" / "model_0000012.pth"), load_checkpoint(resumed_dir / "model_0000012.pth")
    assert (a["epoch"], a["batch_in_epoch"]) == (b["epoch"], b["batch_in_epoch"])
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
