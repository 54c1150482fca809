"""Validation losses: the detector's training losses on the test split's ground truth, computed without gradients at
each periodic evaluation (``test.val_losses``), and :func:`training_untouched`, which keeps any evaluation inside a
training run from changing what training does next.

The losses are those of training (``loss_rpn_cls``, ``loss_rpn_box``, ``loss_cls``, ``loss_box``), each the mean
over the test images of that image's loss, reported as ``val_<key>`` plus their sum ``val_total_loss``. The model
runs in training mode (the RPN's and the RoI head's sampling is what the losses are defined on), on images resized
to the test scale, with crowd and difficult objects left out as training leaves them out. Each image's sampling is
seeded from its index in the split, so the values do not depend on the order of the images or on how they are
split over the ranks of a torchrun group (each rank computes its block; the sums are gathered in rank order).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from backbones import runtime
from backbones.checkpoint import get_rng_state, set_rng_state
from backbones.sharding import gather_in_rank_order, shard_range
from detection.data import collate

__all__ = ["IGNORED_FLAGS", "ValidationLosses", "training_untouched"]

logger = logging.getLogger(__name__)

# Objects that training never sees as positives (the training datasets drop them): left out of the losses too.
IGNORED_FLAGS = ("iscrowd", "difficult")


@contextmanager
def training_untouched(model: nn.Module) -> Iterator[None]:
    """Run an evaluation inside a training run without changing what training does next: on exit the RNG states
    (Python, NumPy, torch, CUDA), every submodule's train/eval mode and the model's buffers are as they were (a
    BatchNorm that is not frozen would update its running statistics in a training-mode forward)."""
    rng = get_rng_state()
    modes = [(module, module.training) for module in model.modules()]
    buffers = [(buffer, buffer.detach().clone()) for buffer in model.buffers()]
    try:
        yield
    finally:
        set_rng_state(rng)
        for module, mode in modes:
            module.training = mode
        with torch.no_grad():
            for buffer, saved in buffers:
                buffer.copy_(saved)


def loss_target(target: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
    """The boxes and labels training would see: without the objects flagged in :data:`IGNORED_FLAGS`."""
    keep = torch.ones(len(target["labels"]), dtype=torch.bool)
    for flag in IGNORED_FLAGS:
        if flag in target:
            keep &= ~target[flag].bool()
    return {"boxes": target["boxes"][keep].to(device), "labels": target["labels"][keep].to(device)}


class ValidationLosses:
    """``losses(model) -> {"val_loss_cls": …, …, "val_total_loss": …}`` on ``dataset``, whose images must already
    be at the test scale (``build_transforms(train=False, resize_in_eval=True)``): the model's training-mode
    forward sees them as they are. Images left without a box (none annotated, or crowd / difficult ones only) and
    unreadable images are skipped; how many, is logged at the first call. ``sharded``: a collective, called on
    every rank of the process group; every rank returns the same values. An empty dict when no image has a box."""

    def __init__(self, dataset: Dataset, *, device: torch.device, seed: int = 0, amp: bool = False,
                 num_workers: int = 0, sharded: bool = False) -> None:  # fmt: skip
        self.dataset = dataset
        self.device = device
        self.seed = seed
        self.amp = amp
        self.num_workers = num_workers
        self.sharded = sharded
        self.reported = False

    def image_seed(self, index: int) -> int:
        return (self.seed * 1_000_003 + index) % 2**63

    def __call__(self, model: nn.Module) -> dict[str, float]:
        total = len(self.dataset)  # type: ignore[arg-type]
        rank, world_size = (runtime.get_rank(), runtime.get_world_size()) if self.sharded else (0, 1)
        mine = shard_range(total, rank, world_size)
        with training_untouched(model):
            model.train()
            local = self.sums(model, list(mine))
        parts = gather_in_rank_order(local) if world_size > 1 else [local]
        sums: dict[str, float] = {}
        for part in parts:  # rank order: the same floating-point sums on every rank
            for key, value in part["sums"].items():
                sums[key] = sums.get(key, 0.0) + value
        used = sum(p["used"] for p in parts)
        boxless = sum(p["boxless"] for p in parts)
        unreadable = sum(p["unreadable"] for p in parts)
        if not self.reported:
            self.reported = True
            if boxless or unreadable:
                logger.info("validation losses: %d of %d test images skipped (%d without boxes, %d unreadable)",
                            boxless + unreadable, total, boxless, unreadable)
            if not used:
                logger.warning("validation losses: no test image has a box; none are computed")
        if not used:
            return {}
        values = {f"val_{key}": value / used for key, value in sorted(sums.items())}
        values["val_total_loss"] = sum(values.values())
        return values

    def sums(self, model: nn.Module, indices: list[int]) -> dict[str, Any]:
        """Summed loss values over ``indices`` (one image per forward) and the counts of images used and skipped."""
        sums: dict[str, float] = {}
        used = boxless = unreadable = 0
        loader = DataLoader(Subset(self.dataset, indices), batch_size=1, num_workers=self.num_workers,
                            collate_fn=collate, generator=torch.Generator())  # fmt: skip
        with torch.no_grad():
            for index, (images, targets) in zip(indices, loader):
                if not images:
                    unreadable += 1
                    continue
                target = loss_target(targets[0], self.device)
                if not len(target["labels"]):
                    boxless += 1
                    continue
                torch.manual_seed(self.image_seed(index))
                with runtime.autocast(self.device, self.amp):
                    losses = model([images[0].to(self.device)], [target])
                for key, value in losses.items():
                    sums[key] = sums.get(key, 0.0) + float(value)
                used += 1
        return {"sums": sums, "used": used, "boxless": boxless, "unreadable": unreadable}
