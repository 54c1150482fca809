"""End-to-end (approximate joint) training of the detector: iteration-based SGD with warm-up and step decay,
DistributedDataParallel under torchrun, mixed precision, atomic checkpoints and exact resumption.

Exact resumption: the data order is a pure function of (seed, epoch); each sample's augmentation is seeded from
(seed, epoch, position); the model's own randomness (RPN and RoI sampling) is seeded per step from
(seed, iteration, rank); the checkpoint stores model, optimizer, scheduler, RNG states and the position in the
epoch. A resumed run therefore sees the same batches with the same augmentations and the same sampled anchors and
RoIs as an uninterrupted one, whatever the number of data-loading workers.
"""

from __future__ import annotations

import logging
import math
import random
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from backbones import runtime
from backbones.checkpoint import (
    CheckpointError,
    CheckpointRotation,
    get_rng_state,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
)
from detection.config import Config
from detection.data import collate
from detection.data.errors import DatasetError
from detection.data.sampler import GroupedBatchSampler, build_train_sampler
from detection.engine.monitor import IterationTimer, PeriodicEvaluator, peak_memory_mb, training_log_line
from detection.engine.preemption import TrainingInterrupted, ignore_stop_signals
from detection.engine.run_dir import RunDirError, check_same_run, config_hash

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    pass


@dataclass
class TrainState:
    iteration: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    skipped_batches: int = 0


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


def step_seed(seed: int, iteration: int, rank: int) -> int:
    """The torch seed for training step ``iteration`` on worker ``rank``.

    Reseeding before every step makes the model's sampling independent of how much randomness anything else
    drew before it (DataLoader iterators draw a base seed when created: at epoch start in a full run, at the
    resume point in a resumed one)."""
    return ((seed * 1_000_003 + iteration) * 1_000_003 + rank) % 2**63


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
            worker_init_fn=ignore_stop_signals,  # the trainer decides (engine/preemption.py)
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
    factor = gamma ** sum(1 for s in steps if iteration >= s)
    if iteration < warmup_iters:
        alpha = iteration / warmup_iters
        factor *= warmup_factor * (1 - alpha) + alpha
    return factor


def build_optimizer(model: nn.Module, cfg: Config) -> torch.optim.SGD:
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(
        params, lr=cfg.solver.base_lr, momentum=cfg.solver.momentum, weight_decay=cfg.solver.weight_decay
    )


class Trainer:
    """Holds the model, optimizer and data for one training run. ``run()`` trains to ``cfg.solver.max_iter``."""

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
        self.cfg = cfg
        self.device = device
        self.output_dir = output_dir
        self.classes = classes
        self.amp = amp
        self.skip_nonfinite = skip_nonfinite
        # Isolated bad batches are skipped; this many in a row means the weights diverged and skipping is futile.
        self.max_consecutive_skips = max_consecutive_skips
        self.consecutive_skips = 0
        self.checkpoints = CheckpointRotation(output_dir, prefix="model", keep=keep_checkpoints)
        self.progress = progress
        self.log_period = log_period
        self.rank, self.world_size = runtime.get_rank(), runtime.get_world_size()
        self.model = model.to(device)
        self.optimizer = build_optimizer(self.model, cfg)
        s = cfg.solver
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda it: lr_factor(
                it, warmup_iters=s.warmup_iters, warmup_factor=s.warmup_factor, steps=s.steps, gamma=s.gamma
            ),
        )
        self.ddp_model = runtime.data_parallel(self.model, device)
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
        self.state = TrainState()
        self.scaler = runtime.grad_scaler(device, amp)
        self.writer = None
        self.last_checkpoint: Path | None = None
        self.timer = IterationTimer(window=log_period)
        # Set by detection/engine/run.py when test.eval_period > 0 (every rank holds one; rank 0 evaluates).
        self.evaluator: PeriodicEvaluator | None = None
        self.config_hash = config_hash(cfg.to_dict())
        self.stop_signal: int | None = None  # set by preemption.stop_signals' SIGTERM / SIGINT handler

    # --- checkpoints ----------------------------------------------------------------------------------------
    def checkpoint_state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "iteration": self.state.iteration,
            "epoch": self.state.epoch,
            "batch_in_epoch": self.state.batch_in_epoch,
            "skipped_batches": self.state.skipped_batches,
            "rng": get_rng_state(),
            "config": self.cfg.to_dict(),
            "config_hash": self.config_hash,
            "classes": list(self.classes),
            "world_size": self.world_size,
            "best_metric": self.evaluator.best if self.evaluator is not None else None,
        }

    def save(self, final: bool = False) -> None:
        if self.rank != 0:
            return
        state = self.checkpoint_state()
        self.last_checkpoint = self.checkpoints.save(self.state.iteration, state)
        if final:
            save_checkpoint(self.output_dir / "model_final.pth", {k: state[k] for k in ("model", "config", "classes")})

    def resume(self, allow_other_config: bool = False) -> bool:
        """Load the newest loadable ``model_<iteration>.pth`` in the output directory (corrupt or truncated ones
        are skipped with a warning). Returns False when there is none. ``model_final.pth`` holds weights only and
        is never resumed from. Half-written temporaries left by a run killed while saving are deleted.

        A checkpoint written with another config (:func:`~detection.engine.run_dir.check_same_run`) is refused
        with :class:`RunDirError` unless ``allow_other_config`` (``--resume-anyway``); weights that do not fit
        this config's model are a one-line :class:`CheckpointError` either way."""
        if self.rank == 0:
            self.checkpoints.remove_partial_writes()
        path = self.checkpoints.newest()
        if path is None:
            logger.warning("--resume: no usable checkpoint in %s; starting from scratch", self.output_dir)
            return False
        ckpt = load_checkpoint(path)
        required = ("optimizer", "scheduler", "iteration", "epoch", "batch_in_epoch", "rng")
        missing = [k for k in required if k not in ckpt]
        if missing:
            raise CheckpointError(path, f"it holds no training state to resume from (missing {', '.join(missing)})")
        other_run = check_same_run(path, ckpt.get("config"), self.cfg.to_dict())
        if other_run and not allow_other_config:
            raise RunDirError(f"--resume: {other_run}; pass a new --output-dir, or --resume-anyway to continue it "
                              "with this config")
        if other_run:
            logger.warning("--resume-anyway: %s; continuing with this config", other_run)
        if ckpt.get("world_size", 1) != self.world_size:
            logger.warning("checkpoint was written with %s workers, resuming with %s: the data order will differ",
                           ckpt.get("world_size"), self.world_size)
        try:
            self.model.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:  # another architecture: shapes or keys do not fit
            lines = str(exc).strip().splitlines()
            raise CheckpointError(path, "its weights do not fit the configured model: " + " ".join(lines[:2])) from None
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if "scaler" in ckpt:
            self.scaler.load_state_dict(ckpt["scaler"])
        self.state = TrainState(
            iteration=int(ckpt["iteration"]),
            epoch=int(ckpt["epoch"]),
            batch_in_epoch=int(ckpt["batch_in_epoch"]),
            skipped_batches=int(ckpt.get("skipped_batches", 0)),
        )
        set_rng_state(ckpt["rng"])
        if self.evaluator is not None and ckpt.get("best_metric") is not None:
            self.evaluator.best = float(ckpt["best_metric"])
        self.last_checkpoint = path
        logger.info("resumed from %s at iteration %d", path, self.state.iteration)
        return True

    # --- training -------------------------------------------------------------------------------------------
    def step(self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]]) -> dict[str, float] | None:
        """One SGD step. Returns the loss values, or None when a non-finite loss was skipped."""
        images = [i.to(self.device, non_blocking=True) for i in images]
        targets = [{k: (v.to(self.device) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets]
        with runtime.autocast(self.device, self.amp):
            losses = self.ddp_model(images, targets)
        loss = sum(losses.values())
        values = {k: float(v.detach()) for k, v in losses.items()}
        local_finite = math.isfinite(float(loss.detach()))
        if runtime.any_true(not local_finite):
            where = " (on another worker)" if local_finite else ""
            return self.non_finite(f"non-finite loss at iteration {self.state.iteration}{where}", values)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        params = [p for p in self.model.parameters() if p.grad is not None]
        if self.cfg.solver.clip_grad_norm > 0:
            self.scaler.unscale_(self.optimizer)
            grad_norm = nn.utils.clip_grad_norm_(params, self.cfg.solver.clip_grad_norm)
        elif not self.scaler.is_enabled():
            grad_norm = nn.utils.get_total_norm([p.grad for p in params])
        else:
            grad_norm = None  # the scaler skips steps with inf/NaN gradients itself (normal under fp16)
        # A finite loss can still give inf/NaN gradients; stepping with them would poison the weights and the next
        # checkpoint. After DDP's all-reduce every worker holds the same gradients, so they all agree here.
        if grad_norm is not None and not self.scaler.is_enabled() and not torch.isfinite(grad_norm):
            return self.non_finite(f"non-finite gradient at iteration {self.state.iteration}", values)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.consecutive_skips = 0
        values["loss"] = sum(values.values())
        return values

    def non_finite(self, message: str, values: dict[str, float]) -> None:
        """Skip the batch (``skip_nonfinite``, up to ``max_consecutive_skips`` in a row) or raise
        ``NonFiniteLossError``; the weights are left untouched either way."""
        message += ": " + ", ".join(f"{k}={v:.4g}" for k, v in values.items())
        self.optimizer.zero_grad(set_to_none=True)
        last_good = f"Last good checkpoint: {self.last_checkpoint or 'none'}"
        if not self.skip_nonfinite:
            raise NonFiniteLossError(f"{message}. {last_good}")
        self.consecutive_skips += 1
        if self.consecutive_skips >= self.max_consecutive_skips:
            raise NonFiniteLossError(
                f"{message}. {self.consecutive_skips} non-finite batches in a row: training has diverged (lower "
                f"solver.base_lr or set solver.clip_grad_norm). {last_good}"
            )
        logger.warning("%s; batch skipped", message)
        self.state.skipped_batches += 1
        self.scheduler.step()  # the learning rate follows the iteration count, skipped or not
        return None

    def run(self) -> TrainState:
        from tqdm import tqdm

        s = self.cfg.solver
        self.model.train()
        stream = self.timer.wrap(
            data_stream(self.dataset, self.sampler, self.state, self.cfg.seed, self.cfg.data.num_workers)
        )
        if self.rank == 0:
            self.writer = _summary_writer(self.output_dir)
        bar = tqdm(
            total=s.max_iter, initial=self.state.iteration, disable=not self.progress or self.rank != 0,
            desc="train", dynamic_ncols=True,
        )
        start = time.perf_counter()
        while self.state.iteration < s.max_iter:
            images, targets = next(stream)
            if not images:
                continue
            torch.manual_seed(step_seed(self.cfg.seed, self.state.iteration, self.rank))
            values = self.step(images, targets)
            self.state.iteration += 1
            bar.update(1)
            if values is not None:
                self.log(values, bar)
            self.evaluate_if_due()  # before the checkpoint, which then holds the best value so far
            if s.checkpoint_period and self.state.iteration % s.checkpoint_period == 0:
                self.save()
            if runtime.any_true(self.stop_signal is not None):  # set under preemption.stop_signals()
                bar.close()
                self.stop()
        bar.close()
        self.save(final=True)
        if self.writer is not None:
            self.writer.close()
        logger.info("training finished: %d iterations in %.1f s (%d non-finite batches skipped)",
                    s.max_iter, time.perf_counter() - start, self.state.skipped_batches)
        return self.state

    # --- preemption (engine/preemption.py) -------------------------------------------------------------
    def stop(self) -> None:
        """Save a checkpoint at the current iteration (unless the periodic one just did) and raise
        :class:`TrainingInterrupted`; every worker gets here at the same iteration (``runtime.any_true``)."""
        path = self.checkpoints.path(self.state.iteration)
        if self.last_checkpoint != path:
            self.save()
        if self.writer is not None:
            self.writer.close()
        signum = self.stop_signal or signal.SIGTERM
        name = signal.Signals(signum).name if self.stop_signal else "a stop signal on another worker"
        raise TrainingInterrupted(
            f"training stopped by {name} at iteration {self.state.iteration} of {self.cfg.solver.max_iter}; "
            f"checkpoint {path} saved; continue with --resume", signum)

    def log(self, values: dict[str, float], bar: Any) -> None:
        it = self.state.iteration
        lr = self.optimizer.param_groups[0]["lr"]
        if it % self.log_period and it != self.cfg.solver.max_iter:
            bar.set_postfix(loss=f"{values['loss']:.3f}", lr=f"{lr:.2g}", refresh=False)
            return
        values = runtime.all_reduce_mean(values)
        bar.set_postfix(loss=f"{values['loss']:.3f}", lr=f"{lr:.2g}")
        if self.rank == 0:
            logger.info("%s", training_log_line(iteration=it, max_iter=self.cfg.solver.max_iter, values=values, lr=lr,
                                                timer=self.timer, memory_mb=peak_memory_mb(self.device)))
            if self.writer is not None:
                for k, v in values.items():
                    self.writer.add_scalar(f"train/{k}", v, it)
                self.writer.add_scalar("train/lr", lr, it)

    def evaluate_if_due(self) -> None:
        """Periodic evaluation (``test.eval_period``) on rank 0 while the other workers wait; its time is not
        counted as training time."""
        if self.evaluator is None or not self.evaluator.due(self.state.iteration):
            return
        if self.rank == 0:
            self.evaluator(self.model, self.state.iteration, writer=self.writer,
                           checkpoint={"model": self.model.state_dict(), "config": self.cfg.to_dict(),
                                       "classes": list(self.classes)})
        runtime.barrier()
        self.timer.restart()


def _summary_writer(output_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is a dependency, but a broken install should not stop training
        logger.warning('tensorboard is not installed (pip install -e ".[tensorboard]"); scalars go to log.txt only')
        return None
    return SummaryWriter(log_dir=str(output_dir / "tensorboard"))
