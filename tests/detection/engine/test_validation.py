"""Validation losses (detection/engine/validation.py): the training losses on the test split's ground truth, one
image at a time, each image's sampling seeded from its index; crowd / difficult objects left out, images without a
box skipped (said once); and the guard that leaves RNG states, modes and buffers as they were."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from detection.build import build_detector
from detection.config import Config
from detection.data import build_dataset, build_transforms
from detection.engine.run import RunOptions, periodic_evaluator
from detection.engine.validation import ValidationLosses, loss_target, training_untouched

LOSS_KEYS = ["val_loss_box", "val_loss_cls", "val_loss_rpn_box", "val_loss_rpn_cls", "val_total_loss"]


class CrowdOnly(Dataset):
    """The wrapped dataset with every object of image ``crowd_index`` flagged ``iscrowd`` (no box for the losses)."""

    def __init__(self, dataset: Dataset, crowd_index: int) -> None:
        self.dataset, self.crowd_index = dataset, crowd_index

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        image, target = self.dataset[index]
        crowd = torch.full((len(target["labels"]),), index == self.crowd_index, dtype=torch.bool)
        return image, {**target, "iscrowd": crowd}


@pytest.fixture
def test_scale_val(shapes_root: Path, tiny_config: Callable[..., Config]) -> Dataset:
    cfg = tiny_config()
    transforms = build_transforms(train=False, min_sizes=(cfg.input.test_min_size,), max_size=cfg.input.test_max_size,
                                  resize_in_eval=True)  # fmt: skip
    return build_dataset("shapes", shapes_root, "val", transforms)


def test_training_untouched_restores_rng_states_modes_and_buffers() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout())
    model.train()
    model[2].eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(3)
    expected_draw = torch.rand(5)
    torch.manual_seed(3)
    with training_untouched(model):
        model.train()
        with torch.no_grad():
            model(torch.rand(2, 3, 8, 8) * 10)  # a training-mode BatchNorm updates its running statistics
        assert not torch.equal(model[1].running_mean, before["1.running_mean"])
        model.eval()
    assert torch.equal(torch.rand(5), expected_draw)  # as if nothing had drawn in between
    assert [m.training for m in model] == [True, True, False]
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_loss_target_leaves_out_crowd_and_difficult_objects() -> None:
    target = {"boxes": torch.arange(12.0).reshape(3, 4), "labels": torch.tensor([1, 2, 3]),
              "iscrowd": torch.tensor([False, True, False]), "difficult": torch.tensor([False, False, True])}
    kept = loss_target(target, torch.device("cpu"))
    assert torch.equal(kept["labels"], torch.tensor([1])) and torch.equal(kept["boxes"], target["boxes"][:1])


def test_validation_losses_are_the_mean_per_image_training_losses(
    test_scale_val: Dataset, tiny_config: Callable[..., Config], caplog: pytest.LogCaptureFixture
) -> None:
    cfg = tiny_config()
    torch.manual_seed(0)
    model = build_detector(cfg).eval()
    dataset = CrowdOnly(test_scale_val, crowd_index=1)
    losses = ValidationLosses(dataset, device=torch.device("cpu"), seed=cfg.seed)
    torch.manual_seed(11)
    after_seed = torch.get_rng_state()
    with caplog.at_level(logging.INFO, logger="detection.engine.validation"):
        values = losses(model)
        again = losses(model)
    assert torch.equal(torch.get_rng_state(), after_seed) and not model.training
    assert sorted(values) == LOSS_KEYS and values == again  # each image's sampling seeded from its index
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert skipped == [f"validation losses: 1 of {len(dataset)} test images skipped (1 without boxes, 0 unreadable)"]

    per_image = []  # by hand: the model's training forward on each image with boxes, seeded as documented
    model.train()
    with torch.no_grad():
        for index in range(len(dataset)):
            if index == 1:
                continue
            image, target = dataset[index]
            torch.manual_seed(losses.image_seed(index))
            per_image.append(model([image], [{"boxes": target["boxes"], "labels": target["labels"]}]))
    for key in ("loss_box", "loss_cls", "loss_rpn_box", "loss_rpn_cls"):
        mean = sum(float(p[key]) for p in per_image) / len(per_image)
        assert values[f"val_{key}"] == pytest.approx(mean, rel=1e-6), key
    assert values["val_total_loss"] == pytest.approx(sum(v for k, v in values.items() if k != "val_total_loss"))
    assert all(v > 0 for v in values.values())


def test_no_image_with_a_box_gives_no_losses_and_a_warning(
    test_scale_val: Dataset, tiny_config: Callable[..., Config], caplog: pytest.LogCaptureFixture
) -> None:
    class AllCrowd(CrowdOnly):
        def __getitem__(self, index: int) -> Any:
            image, target = self.dataset[index]
            return image, {**target, "iscrowd": torch.ones(len(target["labels"]), dtype=torch.bool)}

    torch.manual_seed(0)
    model = build_detector(tiny_config())
    with caplog.at_level(logging.INFO, logger="detection.engine.validation"):
        assert ValidationLosses(AllCrowd(test_scale_val, 0), device=torch.device("cpu"))(model) == {}
    assert "validation losses: no test image has a box; none are computed" in caplog.text


def test_the_periodic_evaluator_gets_the_losses_on_the_test_split_at_the_test_scale(
    shapes_root: Path, tiny_config: Callable[..., Config], tmp_path: Path
) -> None:
    opts = RunOptions(dataset="shapes", data_root=shapes_root, output_dir=tmp_path)
    cpu = torch.device("cpu")
    cfg = tiny_config("test.eval_period=2")
    evaluator = periodic_evaluator(cfg, opts, "val", cpu)
    assert evaluator is not None and isinstance(evaluator.losses, ValidationLosses)
    dataset: Any = evaluator.losses.dataset
    on_disk = [min(dataset.image_info(i)["height"], dataset.image_info(i)["width"]) for i in range(len(dataset))]
    assert any(size != cfg.input.test_min_size for size in on_disk)  # generated at 64–96 px
    assert all(min(dataset[i][0].shape[-2:]) == cfg.input.test_min_size for i in range(len(dataset)))
    off = tiny_config("test.eval_period=2", "test.val_losses=false")
    assert periodic_evaluator(off, opts, "val", cpu).losses is None
    assert periodic_evaluator(tiny_config(), opts, "val", cpu) is None
