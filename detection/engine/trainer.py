"""End-to-end (approximate joint) training of the detector on the toolkit's one loop (``backbones/loop.py``:
iteration-based SGD with warm-up and step or cosine decay, DistributedDataParallel under torchrun, mixed precision,
clipping, atomic checkpoints, preemption and exact resumption). This file brings the detector's data and losses.

Exact resumption: the data order is a pure function of (seed, epoch); each sample's augmentation is seeded from
(seed, epoch, position); the model's own randomness (RPN and RoI sampling) is seeded per step from
(seed, iteration, rank); the checkpoint stores model, optimizer, scheduler, RNG states and the position in the
epoch. A resumed run therefore sees the same batches with the same augmentations and the same sampled anchors and
RoIs as an uninterrupted one, whatever the number of data-loading workers.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from backbones import runtime
from backbones.loop import LoopOptions, NonFiniteLossError, TrainLoop, TrainState, WarmupStepLR, step_seed
from backbones.loop_guard import ignore_stop_signals
from backbones.loop_schedule import WarmupCosineLR, scale_lr_with_batch
from backbones.loop_wandb import WandbOptions
from detection.config import Config, ConfigError, SolverConfig
from detection.data import collate
from detection.data.errors import DatasetError
from detection.data.sampler import GroupedBatchSampler, build_train_sampler
from detection.engine.monitor import PeriodicEvaluator
from detection.engine.run_dir import RunDirError, check_same_run, config_hash

__all__ = [
    "NonFiniteLossError",
    "Trainer",
    "TrainState",
    "build_lr_schedule",
    "build_optimizer",
    "data_stream",
    "lr_factor",
    "step_seed",
]

logger = logging.getLogger(__name__)


class SeededSamples(Dataset):
    """Wraps a dataset so that index ``(i, seed)`` reseeds every RNG the augmentation may use before loading
    sample ``i``: augmentations then depend only on the sample's position in the run, not on worker timing."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        transforms = getattr(self.dataset, "transforms", None)
        if transforms is not None and hasattr(transforms, "set_random_seed"):
            transforms.set_random_seed(seed % 2**32)
        return self.dataset[index]


def epoch_batches(sampler: GroupedBatchSampler, epoch: int, seed: int) -> list[list[tuple[int, int]]]:
    sampler.set_epoch(epoch)
    batches = []
    for position, batch in enumerate(sampler):
        base = (seed * 1_000_003 + epoch) * 1_000_003 + position
        batches.append([(int(i), (base * 31 + k) % 2**62) for k, i in enumerate(batch)])
    return batches


def describe_split(dataset: Dataset, unreadable: int) -> str:
    """``"12 images: 12 unreadable, 3 without usable boxes"``, counting the images dropped when loading the split."""
    boxless = int(getattr(dataset, "num_without_boxes", 0))
    total = len(dataset) + boxless  # type: ignore[arg-type]
    return f"{total} images: {unreadable} unreadable, {boxless} without usable boxes"


def data_stream(
    dataset: Dataset, sampler: GroupedBatchSampler, state: TrainState, seed: int, num_workers: int
) -> Iterator[tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]]:
    """Endless (images, targets) batches from ``state.epoch`` / ``state.batch_in_epoch`` on; updates ``state``.

    Batches whose every image was unreadable are passed over (they still count in ``batch_in_epoch``). A split
    with no image, or a whole epoch without one usable batch, raises :class:`DatasetError` saying what was found,
    instead of looping forever.
    """
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise DatasetError(f"the training split has no usable image ({describe_split(dataset, 0)}); check its "
                           "annotations (crowd and difficult objects are not training boxes)")
    wrapped = SeededSamples(dataset)
    while True:
        whole_epoch = state.batch_in_epoch == 0
        batches = epoch_batches(sampler, state.epoch, seed)[state.batch_in_epoch :]
        loader = DataLoader(
            wrapped,
            batch_sampler=batches,
            num_workers=num_workers,
            collate_fn=collate,
            persistent_workers=False,
            worker_init_fn=ignore_stop_signals,  # the loop decides (backbones/loop_guard.py)
            # Its own generator: creating the iterator must not draw from (and so shift) the global torch RNG.
            generator=torch.Generator().manual_seed(seed * 1_000_003 + state.epoch),
        )
        usable, unreadable = 0, 0
        for images, targets in loader:
            state.batch_in_epoch += 1
            unreadable += getattr(targets, "num_skipped", 0)
            if images:
                usable += 1
                yield images, targets
        if whole_epoch and not usable:
            raise DatasetError(f"no usable training batch in a whole epoch of the training split "
                               f"({describe_split(dataset, unreadable)}); see the warnings above")
        state.epoch += 1
        state.batch_in_epoch = 0


def lr_factor(iteration: int, *, warmup_iters: int, warmup_factor: float, steps: list[int], gamma: float) -> float:
    """Linear warm-up from ``warmup_factor`` to 1, then × ``gamma`` at each step."""
    return WarmupStepLR(1.0, steps, gamma, warmup_iters, warmup_factor).factor(iteration)


def build_lr_schedule(s: SolverConfig, world_size: int = 1) -> WarmupStepLR | WarmupCosineLR:
    """``solver.lr_schedule`` (step or cosine) with the rates scaled by ``solver.reference_batch_size``; logs
    once the learning rate used and how it was derived. ``solver.ims_per_batch`` is the batch of all
    ``world_size`` workers together."""
    base_lr = scale_lr_with_batch(s.base_lr, s.ims_per_batch, s.reference_batch_size)
    if s.reference_batch_size > 0:
        derivation = (f"learning rate {base_lr:g} = solver.base_lr {s.base_lr:g} × {s.ims_per_batch} images / "
                      f"{s.reference_batch_size} (solver.reference_batch_size)")
    else:
        derivation = (f"learning rate {base_lr:g} (solver.base_lr, for {s.ims_per_batch} images per step; "
                      "solver.reference_batch_size=0: not scaled with the batch)")
    if world_size > 1:
        derivation += f"; {s.ims_per_batch} images = {world_size} workers × {s.ims_per_batch // world_size}"
    warmup = f"linear warm-up from × {s.warmup_factor:g} over {s.warmup_iters} iterations" if s.warmup_iters else ""
    schedule: WarmupStepLR | WarmupCosineLR
    if s.lr_schedule == "step":
        schedule = WarmupStepLR(base_lr, list(s.steps), s.gamma, s.warmup_iters, s.warmup_factor)
        shape = f"step schedule: × {s.gamma:g} at iterations {list(s.steps)}" if s.steps else "constant rate"
    elif s.lr_schedule == "cosine":
        base_lr_end = scale_lr_with_batch(s.base_lr_end, s.ims_per_batch, s.reference_batch_size)
        schedule = WarmupCosineLR(base_lr, s.max_iter, base_lr_end, s.warmup_iters, s.warmup_factor)
        scaled = f" = solver.base_lr_end {s.base_lr_end:g} scaled alike" if s.reference_batch_size > 0 else ""
        shape = f"cosine schedule to {base_lr_end:g}{scaled} at iteration {s.max_iter}"
        if s.steps:
            logger.info("solver.steps %s are not used by the cosine schedule", list(s.steps))
    else:
        raise ConfigError(f"invalid config: solver.lr_schedule={s.lr_schedule!r} must be 'step' or 'cosine'")
    logger.info("%s; %s", derivation, ", ".join(part for part in (shape, warmup) if part))
    return schedule


def build_optimizer(model: nn.Module, cfg: Config) -> torch.optim.SGD:
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(
        params, lr=cfg.solver.base_lr, momentum=cfg.solver.momentum, weight_decay=cfg.solver.weight_decay
    )


class Trainer(TrainLoop):
    """The detector on :class:`backbones.loop.TrainLoop`: ``run()`` trains to ``cfg.solver.max_iter``.

    What it adds to the loop: the aspect-ratio grouped, exactly resumable data stream, the detector's losses,
    ``cfg.solver``'s schedule (:func:`build_lr_schedule`), Weights & Biases when ``logging.wandb_project`` is set,
    the config hash checked on ``--resume`` and the periodic evaluation (``evaluator``, set by
    ``detection/engine/run.py`` when ``test.eval_period > 0``; every rank evaluates its block of the test images)
    with early stopping (``test.patience``)."""

    required_state = ("optimizer", "scheduler", "iteration", "epoch", "batch_in_epoch", "rng")
    divergence_hint = "lower solver.base_lr or set solver.clip_grad_norm"

    def __init__(
        self,
        *,
        model: nn.Module,
        cfg: Config,
        dataset: Dataset,
        output_dir: Path,
        device: torch.device,
        classes: list[str],
        amp: bool = False,
        skip_nonfinite: bool = False,
        max_consecutive_skips: int = 10,
        keep_checkpoints: int = 3,
        progress: bool = True,
        log_period: int = 20,
    ) -> None:
        s = cfg.solver
        model = model.to(device)
        options = LoopOptions(
            max_iter=s.max_iter, checkpoint_period=s.checkpoint_period, keep_checkpoints=keep_checkpoints,
            checkpoint_prefix="model", amp=amp, clip_grad_norm=s.clip_grad_norm, skip_nonfinite=skip_nonfinite,
            max_consecutive_skips=max_consecutive_skips, seed=cfg.seed, log_period=log_period, progress=progress,
        )  # fmt: skip
        if cfg.logging.wandb_project:
            options.wandb = WandbOptions(project=cfg.logging.wandb_project, entity=cfg.logging.wandb_entity,
                                         name=cfg.logging.wandb_run_name, config=cfg.to_dict())  # fmt: skip
        schedule = build_lr_schedule(s, runtime.get_world_size())
        super().__init__(model=model, optimizer=build_optimizer(model, cfg), lr_at=schedule, device=device,
                         output_dir=output_dir, options=options, eval_fn=self.evaluate)  # fmt: skip
        self.cfg = cfg
        self.classes = classes
        if s.ims_per_batch % self.world_size:
            raise ValueError(f"solver.ims_per_batch={s.ims_per_batch} is not divisible by {self.world_size} workers")
        self.dataset = dataset
        self.sampler = build_train_sampler(
            dataset,
            kind=cfg.data.sampler,
            repeat_threshold=cfg.data.repeat_threshold,
            batch_size=s.ims_per_batch // self.world_size,
            seed=cfg.seed,
            rank=self.rank,
            world_size=self.world_size,
        )
        # Set by detection/engine/run.py when test.eval_period > 0 (every rank holds one and evaluates its shard).
        self.evaluator: PeriodicEvaluator | None = None
        self.config_hash = config_hash(cfg.to_dict())

    def batches(self) -> Iterator[tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]]:
        return data_stream(self.dataset, self.sampler, self.state, self.cfg.seed, self.cfg.data.num_workers)

    def forward(self, images: list[torch.Tensor], targets: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        images = [i.to(self.device, non_blocking=True) for i in images]
        targets = [{k: (v.to(self.device) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets]
        return self.ddp_model(images, targets)

    # --- checkpoints ----------------------------------------------------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        return {
            "config": self.cfg.to_dict(),
            "config_hash": self.config_hash,
            "classes": list(self.classes),
            "best_metric": self.evaluator.best if self.evaluator is not None else None,
            **({"evaluator": self.evaluator.state_dict()} if self.evaluator is not None else {}),
        }

    def final_state(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "config": self.cfg.to_dict(), "classes": list(self.classes)}

    def check_resume(self, path: Path, checkpoint: dict[str, Any], allow_other_config: bool) -> None:
        """A checkpoint written with another config (:func:`~detection.engine.run_dir.check_same_run`) is refused
        with :class:`RunDirError` unless ``allow_other_config`` (``--resume-anyway``)."""
        other_run = check_same_run(path, checkpoint.get("config"), self.cfg.to_dict())
        if other_run and not allow_other_config:
            raise RunDirError(f"--resume: {other_run}; pass a new --output-dir, or --resume-anyway to continue it "
                              "with this config")
        if other_run:
            logger.warning("--resume-anyway: %s; continuing with this config", other_run)

    def load_extra_state(self, checkpoint: dict[str, Any]) -> None:
        """The evaluator's best value, its iteration and the evaluations without gain (checkpoints from before
        early stopping hold ``best_metric`` only); a run that had stopped early stays stopped."""
        if self.evaluator is None:
            return
        if checkpoint.get("evaluator") is not None:
            self.evaluator.load_state_dict(checkpoint["evaluator"])
        elif checkpoint.get("best_metric") is not None:
            self.evaluator.best = float(checkpoint["best_metric"])
        self.stop_reason = self.evaluator.stop_reason

    # --- periodic evaluation (engine/monitor.py) ------------------------------------------------------------
    def eval_due(self, iteration: int) -> bool:
        return self.evaluator is not None and self.evaluator.due(iteration)

    def evaluate(self, iteration: int) -> dict[str, Any]:
        """``test.eval_period``'s evaluation, on every rank (under torchrun each rank tests its block of the images;
        rank 0 writes the files and ``model_best.pth``; all get the same metrics); asks the loop to stop when
        ``test.patience`` evaluations in a row brought no gain (the same decision on every rank)."""
        if self.evaluator is None:
            return {}
        metrics = self.evaluator(self.model, iteration, checkpoint={
            "model": self.model.state_dict(), "config": self.cfg.to_dict(), "classes": list(self.classes)})
        self.stop_reason = self.evaluator.stop_reason
        return metrics
