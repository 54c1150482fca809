"""The one training loop of the toolkit: classification (``backbones/train.py``), detection
(``detection/engine/trainer.py``) and the Appendix C localiser (``detection/localization/engine.py``) are
subclasses that bring their model, data, losses and evaluation; everything else happens here, top to bottom in
:meth:`TrainLoop.run`:

    batch = next(stream)                      # batches(): the data from state.iteration on
    values = self.step(*batch)                # forward(*batch) -> named losses; AMP, clipping, non-finite checks
    self.log(values)                          # log line (ETA, memory), TensorBoard, metrics.jsonl, wandb
    self.evaluate_if_due()                    # eval_fn(iteration) -> {metric: value}
    self.scheduler.apply(iteration)           # the learning rate of the next step: lr_at(iteration)
    save / stop                               # numbered checkpoints; SIGTERM / SIGINT -> checkpoint, then stop

A learning-rate schedule is a function of the iteration (``lr_at(iteration) -> lr``; :class:`WarmupStepLR` is the
paper's warm-up + step decay; both in ``backbones/loop_schedule.py``); one with ``state_dict`` /
``load_state_dict`` (the classifier's warm-up that ends on the training error) is checkpointed with the loop.
Evaluation is a callable ``eval_fn(iteration) -> dict`` run on every rank (a rank that does not evaluate returns
``{}``) when :meth:`TrainLoop.eval_due`; it may set ``stop_reason`` (early stopping): training then ends after that
iteration as at ``max_iter`` (checkpoint, ``model_final.pth``) and the reason is logged.

Exact resumption: the checkpoint holds model, optimizer, schedule, loss scaler, RNG states and :class:`TrainState`
(iteration, epoch, position in the epoch); each subclass's ``batches()`` restarts its data from that state, and
with ``LoopOptions.seed`` the torch RNG is reseeded before every step (:func:`step_seed`), so the model's own
sampling does not depend on what drew random numbers before it. This is the only place that steps an optimizer.
"""

from __future__ import annotations

import logging
import math
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from backbones import runtime
from backbones.checkpoint import (
    CheckpointError,
    CheckpointRotation,
    get_rng_state,
    load_checkpoint,
    nonfinite_tensors,
    save_checkpoint,
    set_rng_state,
)
from backbones.loop_guard import TrainingInterrupted, stop_signals
from backbones.loop_monitor import IterationTimer, MetricsLog, peak_memory_mb, training_log_line
from backbones.loop_schedule import LRSchedule, WarmupStepLR
from backbones.loop_wandb import WandbLogger, WandbOptions, start_wandb

__all__ = ["LRSchedule", "LoopOptions", "NonFiniteLossError", "TrainLoop", "TrainState", "WarmupStepLR", "step_seed"]

logger = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """A NaN/inf loss or gradient (and not skipped); the weights were left as they were before that step."""


@dataclass
class TrainState:
    iteration: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    skipped_batches: int = 0


def step_seed(seed: int, iteration: int, rank: int) -> int:
    """The torch seed for training step ``iteration`` on worker ``rank``.

    Reseeding before every step makes the model's sampling independent of how much randomness anything else
    drew before it (DataLoader iterators draw a base seed when created: at epoch start in a full run, at the
    resume point in a resumed one)."""
    return ((seed * 1_000_003 + iteration) * 1_000_003 + rank) % 2**63


@dataclass
class LoopOptions:
    max_iter: int
    checkpoint_period: int = 0  # 0: only at the end (and on a stop signal)
    keep_checkpoints: int = 3
    checkpoint_prefix: str = "model"  # model_0000100.pth (detection, localisation), checkpoint_… (classification)
    numbered_final: bool = True  # False: the last iteration leaves model_final.pth only (the localiser's stages)
    amp: bool = False
    clip_grad_norm: float = 0.0
    skip_nonfinite: bool = False
    max_consecutive_skips: int = 10  # this many non-finite batches in a row: diverged, skipping is futile
    seed: int | None = None  # reseed torch before every step from (seed, iteration, rank); None: do not
    log_period: int = 20
    progress: bool = True
    desc: str = "train"
    eval_period: int = 0
    eval_at_end: bool = False
    eval_tag: str = "eval"  # TensorBoard group of the evaluation metrics
    wandb: WandbOptions | None = None  # also log to Weights & Biases (backbones/loop_wandb.py); None: do not


class TrainLoop:
    """SGD (any optimizer) over ``batches()`` to ``options.max_iter``; see the module docstring.

    Subclasses implement :meth:`batches` and may override :meth:`forward` (default: ``ddp_model(*batch)``, which
    must return a dict of named scalar losses), :meth:`after_step`, :meth:`extra_state` / :meth:`load_extra_state`,
    :meth:`final_state`, :meth:`check_resume` and :meth:`eval_due`. ``train_module`` is what DDP wraps and
    ``forward`` calls (default ``model``); ``model`` is what checkpoints hold.
    """

    required_state: tuple[str, ...] = ("optimizer", "scheduler", "iteration", "rng")
    divergence_hint = "lower the learning rate or clip the gradient norm"

    def __init__(self, *, model: nn.Module, optimizer: torch.optim.Optimizer, lr_at: Callable[[int], float],
                 device: torch.device, output_dir: Path, options: LoopOptions, train_module: nn.Module | None = None,
                 eval_fn: Callable[[int], dict[str, Any]] | None = None) -> None:  # fmt: skip
        self.model = model.to(device)
        self.optimizer = optimizer
        self.scheduler = LRSchedule(optimizer, lr_at)
        self.scheduler.apply(0)
        self.device, self.output_dir, self.options = device, Path(output_dir), options
        self.rank, self.world_size = runtime.get_rank(), runtime.get_world_size()
        self.ddp_model = runtime.data_parallel(train_module if train_module is not None else self.model, device)
        self.scaler = runtime.grad_scaler(device, options.amp)
        self.checkpoints = CheckpointRotation(self.output_dir, prefix=options.checkpoint_prefix,
                                              keep=options.keep_checkpoints)  # fmt: skip
        self.eval_fn = eval_fn
        self.state = TrainState()
        self.consecutive_skips = 0
        self.last_checkpoint: Path | None = None
        self.saved_iteration: int | None = None
        self.timer = IterationTimer(window=options.log_period)
        self.writer: Any = None
        self.wandb: WandbLogger | None = None
        self.metrics_log = MetricsLog(None)
        self.stop_signal: int | None = None  # set by loop_guard.stop_signals' SIGTERM / SIGINT handler
        self.stop_reason: str | None = None  # set by eval_fn (or load_extra_state): end training, saying why

    # --- what a subclass brings ------------------------------------------------------------------------------
    def batches(self) -> Iterable[tuple[Any, ...]]:
        """The training batches from ``self.state`` on, each a tuple of :meth:`forward`'s arguments."""
        raise NotImplementedError

    def forward(self, *batch: Any) -> dict[str, torch.Tensor]:
        return self.ddp_model(*batch)

    def after_step(self, values: dict[str, float]) -> None:
        """Called after each step that was taken (not after a skipped one)."""

    def extra_state(self) -> dict[str, Any]:
        """Stored in every numbered checkpoint next to the training state (config, classes, …)."""
        return {}

    def load_extra_state(self, checkpoint: dict[str, Any]) -> None:
        """Read back what :meth:`extra_state` stored, on ``--resume``."""

    def final_state(self) -> dict[str, Any]:
        """What ``model_final.pth`` holds."""
        return {"model": self.model.state_dict(), **self.extra_state()}

    def check_resume(self, path: Path, checkpoint: dict[str, Any], allow_other_config: bool) -> None:
        """Raise if ``checkpoint`` belongs to another run (detection compares config hashes)."""

    def eval_due(self, iteration: int) -> bool:
        o = self.options
        return (o.eval_period > 0 and iteration % o.eval_period == 0) or (o.eval_at_end and iteration == o.max_iter)

    # --- checkpoints ----------------------------------------------------------------------------------------
    def checkpoint_due(self, iteration: int) -> bool:
        o = self.options
        return bool(o.checkpoint_period) and iteration % o.checkpoint_period == 0 and (
            o.numbered_final or iteration < o.max_iter)

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
            "world_size": self.world_size,
            **self.extra_state(),
        }

    def save(self, final: bool = False) -> None:
        self.saved_iteration = self.state.iteration  # on every rank (only rank 0 knows the file)
        if self.rank == 0:
            path = self.checkpoints.path(self.state.iteration)
            if not final or (self.options.numbered_final and self.last_checkpoint != path):  # not twice
                self.last_checkpoint = self.checkpoints.save(self.state.iteration, self.checkpoint_state())
            if final:
                save_checkpoint(self.output_dir / "model_final.pth", self.final_state())
        if final:
            runtime.barrier()

    def resume(self, allow_other_config: bool = False) -> bool:
        """Load the newest loadable numbered checkpoint of the output directory (corrupt or truncated ones are
        skipped with a warning). Returns False when there is none. ``model_final.pth`` holds weights only and is
        never resumed from. Half-written temporaries left by a run killed while saving are deleted. Weights that
        do not fit the model are a one-line :class:`CheckpointError`."""
        if self.rank == 0:
            self.checkpoints.remove_partial_writes()
        path = self.checkpoints.newest()
        if path is None:
            logger.warning("--resume: no usable checkpoint in %s; starting from scratch", self.output_dir)
            return False
        ckpt = load_checkpoint(path)
        missing = [k for k in self.required_state if k not in ckpt]
        if missing:
            raise CheckpointError(path, f"it holds no training state to resume from (missing {', '.join(missing)})")
        self.check_resume(path, ckpt, allow_other_config)
        if (bad := nonfinite_tensors(ckpt["model"])) is not None:  # training on would only spread the NaN
            raise CheckpointError(path, f"{bad}; resume from an earlier checkpoint (move this one away)")
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
        self.state = TrainState(iteration=int(ckpt["iteration"]), epoch=int(ckpt.get("epoch", 0)),
                                batch_in_epoch=int(ckpt.get("batch_in_epoch", 0)),
                                skipped_batches=int(ckpt.get("skipped_batches", 0)))  # fmt: skip
        set_rng_state(ckpt["rng"])
        self.load_extra_state(ckpt)
        self.scheduler.apply(self.state.iteration)
        self.last_checkpoint, self.saved_iteration = path, self.state.iteration
        logger.info("resumed from %s at iteration %d", path, self.state.iteration)
        return True

    # --- training -------------------------------------------------------------------------------------------
    def step(self, *batch: Any) -> dict[str, float] | None:
        """One optimizer step on ``batch``. Returns the loss values (and their sum, ``loss``), or None when a
        non-finite loss or gradient was skipped."""
        with runtime.autocast(self.device, self.options.amp):
            losses = self.forward(*batch)
        loss = sum(losses.values())
        values = {k: float(v.detach()) for k, v in losses.items()}
        local_finite = math.isfinite(float(loss.detach()))
        if runtime.any_true(not local_finite):
            where = " (on another worker)" if local_finite else ""
            return self.non_finite(f"non-finite loss at iteration {self.state.iteration}{where}", values)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        params = [p for p in self.model.parameters() if p.grad is not None]
        if self.options.clip_grad_norm > 0:
            self.scaler.unscale_(self.optimizer)
            grad_norm = nn.utils.clip_grad_norm_(params, self.options.clip_grad_norm)
        elif not self.scaler.is_enabled():
            grad_norm = nn.utils.get_total_norm([p.grad for p in params])
        else:
            grad_norm = None  # the scaler skips steps with inf/NaN gradients itself (normal under fp16)
        # A finite loss can still give inf/NaN gradients; stepping with them would poison the weights and the next
        # checkpoint. After DDP's all-reduce every worker holds the same gradients, so they all agree here.
        if grad_norm is not None and not self.scaler.is_enabled() and not torch.isfinite(grad_norm):
            return self.non_finite(f"non-finite gradient at iteration {self.state.iteration}", values)
        self.scaler.step(self.optimizer)  # the toolkit's one optimizer step
        self.scaler.update()
        self.consecutive_skips = 0
        values["loss"] = sum(values.values())
        return values

    def non_finite(self, message: str, values: dict[str, float]) -> None:
        """Skip the batch (``skip_nonfinite``, up to ``max_consecutive_skips`` in a row) or raise
        :class:`NonFiniteLossError`; the weights are left untouched either way."""
        message += ": " + ", ".join(f"{k}={v:.4g}" for k, v in values.items())
        self.optimizer.zero_grad(set_to_none=True)
        last_good = f"Last good checkpoint: {self.last_checkpoint or 'none'}"
        if not self.options.skip_nonfinite:
            raise NonFiniteLossError(f"{message}. {last_good}")
        self.consecutive_skips += 1
        if self.consecutive_skips >= self.options.max_consecutive_skips:
            raise NonFiniteLossError(
                f"{message}. {self.consecutive_skips} non-finite batches in a row: training has diverged "
                f"({self.divergence_hint}). {last_good}"
            )
        logger.warning("%s; batch skipped", message)
        self.state.skipped_batches += 1
        return None

    def run(self) -> TrainState:
        """Train from ``self.state`` to ``options.max_iter``, or until ``stop_reason`` is set (early stopping: the
        end is then the same as at ``max_iter``); SIGTERM / SIGINT stop it after the step in flight with a
        checkpoint (:class:`TrainingInterrupted`). Writes ``model_final.pth`` at the end."""
        o = self.options
        self.model.train()
        self.metrics_log = MetricsLog(self.output_dir / "metrics.jsonl" if self.rank == 0 else None)
        self.metrics_log.start(self.state.iteration)
        self.writer = runtime.summary_writer(self.output_dir, self.rank)
        self.wandb = start_wandb(o.wandb, self.output_dir, rank=self.rank, resumed=self.state.iteration > 0)
        bar = tqdm(total=o.max_iter, initial=self.state.iteration, disable=not o.progress or self.rank != 0,
                   desc=o.desc, dynamic_ncols=True)  # fmt: skip
        start = time.perf_counter()
        stopped_before = self.stop_reason is not None  # a resumed run that had stopped early
        if stopped_before:
            logger.info("%s; this run had already stopped there: not training on", self.stop_reason)
        try:
            with stop_signals(self):
                stream = self.timer.wrap(iter(self.batches()))
                while self.state.iteration < o.max_iter and self.stop_reason is None:
                    batch = next(stream)
                    if o.seed is not None:
                        torch.manual_seed(step_seed(o.seed, self.state.iteration, self.rank))
                    values = self.step(*batch)
                    self.state.iteration += 1
                    bar.update(1)
                    if values is not None:
                        self.after_step(values)
                        self.log(values, bar)
                    self.evaluate_if_due()  # before the checkpoint, which then holds what evaluation decided
                    self.scheduler.apply(self.state.iteration)
                    if self.checkpoint_due(self.state.iteration):
                        self.save()
                    if runtime.any_true(self.stop_signal is not None):  # every worker stops at the same step
                        bar.close()
                        self.stop()
            bar.close()
            if self.stop_reason is not None and not stopped_before:
                logger.info("%s", self.stop_reason)
            self.save(final=True)
        finally:
            self.close_outputs()
        logger.info("training finished: %d iterations in %.1f s (%d non-finite batches skipped)",
                    self.state.iteration, time.perf_counter() - start, self.state.skipped_batches)
        return self.state

    def close_outputs(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self.wandb is not None:
            self.wandb.finish()
            self.wandb = None
        self.metrics_log.close()

    def stop(self) -> None:
        """Save a checkpoint at the current iteration (unless the periodic one just did) and raise
        :class:`TrainingInterrupted`; every worker gets here at the same iteration (``runtime.any_true``)."""
        path = self.checkpoints.path(self.state.iteration)
        if self.saved_iteration != self.state.iteration:
            self.save()
        self.close_outputs()
        signum = self.stop_signal or signal.SIGTERM
        name = signal.Signals(signum).name if self.stop_signal else "a stop signal on another worker"
        raise TrainingInterrupted(
            f"training stopped by {name} at iteration {self.state.iteration} of {self.options.max_iter}; "
            f"checkpoint {path} saved; continue with --resume", signum)

    def log(self, values: dict[str, float], bar: Any) -> None:
        """Every ``log_period`` iterations and at the last: the log line, TensorBoard ``train/*`` (and wandb's) and
        a line of ``metrics.jsonl`` (loss values averaged over the workers; ``lr`` is the rate from here on)."""
        it, max_iter = self.state.iteration, self.options.max_iter
        lr = self.scheduler.lr_at(it)
        if it % self.options.log_period and it != max_iter:
            bar.set_postfix(loss=f"{values['loss']:.3f}", lr=f"{lr:.2g}", refresh=False)
            return
        values = runtime.all_reduce_mean(values)
        bar.set_postfix(loss=f"{values['loss']:.3f}", lr=f"{lr:.2g}")
        if self.rank != 0:
            return
        memory = peak_memory_mb(self.device)
        logger.info("%s", training_log_line(iteration=it, max_iter=max_iter, values=values, lr=lr, timer=self.timer,
                                            memory_mb=memory))
        self.metrics_log.write({"iteration": it, "lr": lr, "time": self.timer.time, "data_time": self.timer.data_time,
                                "memory_mb": memory, "eta_s": self.timer.eta_seconds(it, max_iter), **values})
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(f"train/{k}", v, it)
            self.writer.add_scalar("train/lr", lr, it)
        if self.wandb is not None:
            self.wandb.log({**{f"train/{k}": v for k, v in values.items()}, "train/lr": lr}, it)

    def evaluate_if_due(self) -> None:
        """``eval_fn`` on every rank (then a barrier) when :meth:`eval_due`; rank 0 records the scalar metrics in
        ``metrics.jsonl``, TensorBoard and wandb (``<eval_tag>/<name>``). A ``stop_reason`` set on any rank stops
        every rank. Evaluation time is not counted as training time."""
        it = self.state.iteration
        if self.eval_fn is None or not self.eval_due(it):
            return
        metrics = self.eval_fn(it)
        self.model.train()
        runtime.barrier()
        if runtime.any_true(self.stop_reason is not None) and self.stop_reason is None:
            self.stop_reason = "stop requested by another worker's evaluation"  # every worker stops together
        self.timer.restart()
        scalars = {k: v for k, v in (metrics or {}).items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}  # fmt: skip
        if self.rank != 0 or not scalars:
            return
        self.metrics_log.write({"iteration": it, "eval": scalars})
        if self.writer is not None:
            for k, v in scalars.items():
                self.writer.add_scalar(f"{self.options.eval_tag}/{k}", v, it)
            self.writer.flush()
        if self.wandb is not None:
            self.wandb.log({f"{self.options.eval_tag}/{k}": v for k, v in scalars.items()}, it)
