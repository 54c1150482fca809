"""Iteration-based classifier training with the paper's recipes (Sec. 3.4 ImageNet, Sec. 4.2 CIFAR).

The loop itself (AMP, checkpoints, resume, preemption, logging) is `backbones/loop.py`; this file brings the
data, the model's loss, the recipe's schedule and the evaluation. One process per device; under `torchrun` the
model is wrapped in DistributedDataParallel (nccl on CUDA, gloo on CPU), each rank reads its own shard of every
global batch, and only rank 0 writes files. A run is a pure function
of (config, seed): the batch at iteration t and its augmentation are derived from (seed, epoch, index), so
`resume=True` continues from the latest good checkpoint and reaches the same weights as an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Subset

from backbones import runtime
from backbones.classify import arch_depth, build_classifier, evaluate, is_cifar_arch
from backbones.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CenterView,
    CifarDataset,
    ImageFolderDataset,
    KeyedDataset,
    Normalizer,
    PadCropFlip,
    ScaleAugment,
    build_eval_dataset,
    pixel_mean_std,
    worker_init,
)
from backbones.files import write_json
from backbones.loop import LoopOptions, TrainLoop
from backbones.loop_guard import locked_output_dir, signal_safe_worker_init
from backbones.synthetic import write_synthetic_cifar

logger = logging.getLogger(__name__)

DATASETS = ("imagenet", "cifar10", "imagefolder", "synthetic")
# Per-dataset defaults; lr steps are fractions of the run so a shortened --iters keeps the recipe's shape.
RECIPES: dict[str, dict[str, Any]] = {
    "imagenet": dict(arch="resnet50", image_size=224, batch_size=256, lr=0.1, iters=600_000,
                     step_fracs=(0.25, 0.5, 0.75), eval_every=10_000, ckpt_every=5_000),
    "imagefolder": dict(arch="resnet18", image_size=224, batch_size=256, lr=0.1, iters=10_000,
                        step_fracs=(0.5, 0.75), eval_every=None, ckpt_every=None),
    "cifar10": dict(arch="cifar_resnet20", image_size=32, batch_size=128, lr=0.1, iters=64_000,
                    step_fracs=(0.5, 0.75), eval_every=2_000, ckpt_every=2_000),
    "synthetic": dict(arch="cifar_resnet20", image_size=32, batch_size=64, lr=0.1, iters=500,
                      step_fracs=(0.6, 0.85), eval_every=100, ckpt_every=100),
}  # fmt: skip


@dataclass
class TrainConfig:
    """Everything a run depends on; `None` fields take the dataset's recipe value (`resolve`)."""

    dataset: str = "synthetic"
    data_root: str | None = None
    output_dir: str = "output/cls"
    arch: str | None = None
    base_width: int = 64
    shortcut: str | None = None
    image_size: int | None = None
    scale_range: tuple[int, int] | None = None  # ImageNet-style shorter-side range; default image_size*[256,480]/224
    lighting: float = 0.1
    holdout: int = 0  # CIFAR: hold out this many training images as the validation set (paper: 5000)
    iters: int | None = None
    batch_size: int | None = None  # global, over all ranks
    lr: float | None = None
    lr_steps: list[int] | None = None
    lr_schedule: str = "step"  # "step" or "plateau" (divide by 10 when val error stops improving)
    plateau_patience: int = 3
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup: bool | None = None  # None: on for CIFAR nets of depth >= 110 (paper: lr 0.01 until train error < 80%)
    warmup_error: float = 80.0
    eval_every: int | None = None
    ckpt_every: int | None = None
    keep_checkpoints: int = 3
    resume: bool = False
    amp: bool = False
    workers: int = 2
    seed: int = 0
    sync_bn: bool = False
    device: str | None = None
    progress: bool = True  # tqdm bar (False: periodic log lines only)

    def resolve(self) -> TrainConfig:
        """A copy with every recipe default filled in."""
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {DATASETS}, got {self.dataset!r}")
        r = RECIPES[self.dataset]
        c = dataclasses.replace(self)
        c.arch = c.arch or r["arch"]
        c.image_size = c.image_size or (32 if is_cifar_arch(c.arch) else r["image_size"])
        c.iters = c.iters or r["iters"]
        c.batch_size = c.batch_size or r["batch_size"]
        c.lr = c.lr if c.lr is not None else r["lr"]
        if c.lr_steps is None:
            c.lr_steps = [round(f * c.iters) for f in r["step_fracs"]]
        c.eval_every = c.eval_every or r["eval_every"] or max(1, c.iters // 10)
        c.ckpt_every = c.ckpt_every or r["ckpt_every"] or max(1, c.iters // 10)
        if c.warmup is None:
            c.warmup = is_cifar_arch(c.arch) and arch_depth(c.arch) >= 110
        if c.scale_range is None:
            c.scale_range = (round(c.image_size * 256 / 224), round(c.image_size * 480 / 224))
        return c


class RecipeSchedule:
    """Step learning rate with the paper's two refinements; sets the optimizer's lr each iteration.

    lr(t) = base_lr * gamma^(steps passed + plateau drops), times `warmup_factor` while warming up. Warm-up
    (ResNet-110, Sec. 4.2) lasts until the mean training error of the last `window` batches is below
    `warmup_error` %. With `plateau_patience`, lr also drops after that many evaluations without a new best.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, base_lr: float, steps: list[int], *, gamma: float = 0.1,
                 warmup: bool = False, warmup_factor: float = 0.1, warmup_error: float = 80.0, window: int = 10,
                 plateau_patience: int | None = None):  # fmt: skip
        self.optimizer, self.base_lr, self.steps, self.gamma = optimizer, base_lr, sorted(steps), gamma
        self.warmup_factor, self.warmup_error, self.window = warmup_factor, warmup_error, window
        self.plateau_patience = plateau_patience
        self.warming_up, self.recent_errors = warmup, []
        self.drops, self.best, self.bad_evals = 0, float("inf"), 0

    def lr_at(self, iteration: int) -> float:
        n = sum(iteration >= s for s in self.steps) + self.drops
        return self.base_lr * self.gamma**n * (self.warmup_factor if self.warming_up else 1.0)

    def set_lr(self, iteration: int) -> float:
        lr = self.lr_at(iteration)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def observe_train_error(self, error: float) -> None:
        self.recent_errors = [*self.recent_errors, error][-self.window :]
        if len(self.recent_errors) == self.window and sum(self.recent_errors) / self.window < self.warmup_error:
            self.warming_up = False

    def observe_eval_error(self, error: float) -> None:
        if self.plateau_patience is None:
            return
        if error < self.best - 1e-6:
            self.best, self.bad_evals = error, 0
        else:
            self.bad_evals += 1
            if self.bad_evals >= self.plateau_patience:
                self.drops, self.bad_evals = self.drops + 1, 0

    def __call__(self, iteration: int) -> float:  # the loop's schedule: a function of the iteration
        return self.lr_at(iteration)

    def state_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("warming_up", "recent_errors", "drops", "best", "bad_evals")}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            setattr(self, k, v)


# ------------------------------------------------------------------------------------------------------- data
def build_datasets(cfg: TrainConfig, rank: int = 0) -> tuple[KeyedDataset, KeyedDataset | None, Normalizer]:
    """(train set with the recipe's augmentation, validation set with centre views or None, input normaliser)."""
    size = cfg.image_size
    assert size is not None and cfg.scale_range is not None
    if cfg.dataset in ("cifar10", "synthetic"):
        root = cfg.data_root
        if cfg.dataset == "cifar10" and root is None:
            raise ValueError("--dataset cifar10 needs --data-root (the cifar-10-batches-py folder)")
        if cfg.dataset == "synthetic":  # generated into --data-root, or the output dir; kept if already there
            root = root or str(Path(cfg.output_dir) / "data" / "synthetic_cifar")
            if rank == 0:
                write_synthetic_cifar(root)
            runtime.barrier()
        train = CifarDataset(root, "train", PadCropFlip(crop=size), holdout=cfg.holdout, seed=cfg.seed)
        val = build_eval_dataset(cfg.dataset, root, CenterView(size, size), cfg.holdout)
        mean, std = pixel_mean_std(train.images)  # the paper's per-pixel mean
        return train, val, Normalizer(mean, std)
    root = Path(cfg.data_root or "")
    if not (root / "train").is_dir():
        raise FileNotFoundError(f"--data-root {root} must contain train/<class>/ (and val/<class>/ to evaluate)")
    train_view = ScaleAugment(crop=size, scale_range=cfg.scale_range, lighting=cfg.lighting)
    train = ImageFolderDataset(root / "train", train_view, seed=cfg.seed)
    val = None
    if (root / "val").is_dir():
        val = build_eval_dataset(cfg.dataset, root, CenterView(size, round(size * 256 / 224)))
        if val.classes != train.classes:
            raise ValueError(f"val/ classes differ from train/ classes under {root}")
    return train, val, Normalizer(IMAGENET_MEAN, IMAGENET_STD)


class TrainBatchSampler:
    """Yields per-rank batches of `(index, epoch)` keys for iterations `start, start+1, …, stop-1`.

    Each epoch is a `DistributedSampler` permutation (seeded by `seed + epoch`, last partial batch dropped), so
    the batch of iteration t is fixed by t alone and a resumed run reads exactly what the original would have.
    """

    def __init__(self, size: int, batch_size: int, *, rank: int, world: int, seed: int, start: int, stop: int):
        self.sampler = DistributedSampler(range(size), world, rank, shuffle=True, seed=seed, drop_last=True)
        self.batch_size, self.start, self.stop = batch_size, start, stop
        self.per_epoch = self.sampler.num_samples // batch_size
        if self.per_epoch == 0:
            raise ValueError(f"{size} training images cannot fill one batch of {batch_size} x {world} ranks")

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch, order = -1, []
        for it in range(self.start, self.stop):
            if it // self.per_epoch != epoch:
                epoch = it // self.per_epoch
                self.sampler.set_epoch(epoch)
                order = list(self.sampler)
            pos = (it % self.per_epoch) * self.batch_size
            yield [(i, epoch) for i in order[pos : pos + self.batch_size]]


def eval_loader(dataset: KeyedDataset, batch_size: int, workers: int, rank: int, world: int) -> DataLoader:
    """This rank's shard (`rank::world`, no padding) of `dataset`, in order."""
    shard = Subset(dataset, range(rank, len(dataset), world))
    return DataLoader(shard, batch_size=batch_size, num_workers=workers, pin_memory=torch.cuda.is_available(),
                      worker_init_fn=worker_init)  # fmt: skip


# ------------------------------------------------------------------------------------------------------ train
class ClassifierLoop(TrainLoop):
    """The classifier on :class:`backbones.loop.TrainLoop`: cross-entropy on keyed batches, the recipe's schedule
    (:class:`RecipeSchedule`) and, every ``eval_every`` iterations and at the end, a history entry (training
    loss and error since the last one, validation errors) in ``metrics.json``."""

    def __init__(self, cfg: TrainConfig, model: nn.Module, train_set: KeyedDataset, val_set: KeyedDataset | None,
                 normalizer: Normalizer, device: torch.device, run_config: dict[str, Any]) -> None:  # fmt: skip
        assert cfg.iters is not None and cfg.batch_size is not None and cfg.lr is not None
        optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                    weight_decay=cfg.weight_decay)  # fmt: skip
        patience = cfg.plateau_patience if cfg.lr_schedule == "plateau" else None
        self.recipe = RecipeSchedule(optimizer, cfg.lr, cfg.lr_steps or [], warmup=bool(cfg.warmup),
                                     warmup_error=cfg.warmup_error, plateau_patience=patience)  # fmt: skip
        options = LoopOptions(max_iter=cfg.iters, checkpoint_period=cfg.ckpt_every or 0,
                              keep_checkpoints=cfg.keep_checkpoints, checkpoint_prefix="checkpoint", amp=cfg.amp,
                              progress=cfg.progress, desc=cfg.arch or "train", eval_period=cfg.eval_every or 0,
                              eval_at_end=True, eval_tag="val")  # fmt: skip
        super().__init__(model=model, optimizer=optimizer, lr_at=self.recipe, device=device,
                         output_dir=Path(cfg.output_dir), options=options, eval_fn=self.record_history)  # fmt: skip
        self.cfg, self.train_set, self.normalizer, self.run_config = cfg, train_set, normalizer, run_config
        self.per_rank = cfg.batch_size // self.world_size
        self.channels_last = device.type == "cuda"
        self.val_loader = (eval_loader(val_set, self.per_rank, cfg.workers, self.rank, self.world_size)
                           if val_set is not None else None)  # fmt: skip
        self.history: list[dict[str, Any]] = []
        self.window = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, errors, images since last eval
        self.window_sum = self.window.clone()
        self.last_step: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # (loss, logits, targets)
        self.t0 = time.time()

    def batches(self) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        sampler = TrainBatchSampler(len(self.train_set), self.per_rank, rank=self.rank, world=self.world_size,
                                    seed=self.cfg.seed, start=self.state.iteration, stop=self.options.max_iter)
        return DataLoader(self.train_set, batch_sampler=sampler, num_workers=self.cfg.workers,
                          pin_memory=self.device.type == "cuda",
                          worker_init_fn=signal_safe_worker_init(worker_init))  # fmt: skip

    def forward(self, images: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.normalizer(images.to(self.device, non_blocking=True))
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = targets.to(self.device, non_blocking=True)
        logits = self.ddp_model(x)
        loss = F.cross_entropy(logits.float(), y)
        self.last_step = (loss, logits, y)
        return {"loss_cls": loss}

    def after_step(self, values: dict[str, float]) -> None:
        assert self.last_step is not None
        loss, logits, y = self.last_step
        stats = torch.stack([loss.detach().double() * len(y), (logits.argmax(1) != y).sum().double(),
                             torch.tensor(float(len(y)), dtype=torch.float64, device=self.device)])  # fmt: skip
        self.window += stats
        if self.recipe.warming_up:  # every rank must leave warm-up at the same step
            if self.world_size > 1:
                dist.all_reduce(stats)
            self.recipe.observe_train_error(100.0 * stats[1].item() / stats[2].item())
            if not self.recipe.warming_up:
                logger.info("warm-up done at iteration %d: train error < %g%%, lr back to base",
                            self.state.iteration, self.cfg.warmup_error)

    def record_history(self, done: int) -> dict[str, Any]:
        """A history entry (all ranks take part); returns the validation metrics for the loop to record."""
        if self.world_size > 1:
            dist.all_reduce(self.window)
        w = self.window
        lr = self.optimizer.param_groups[0]["lr"]  # the rate of the step just taken
        entry: dict[str, Any] = {"iteration": done, "lr": lr, "train_loss": w[0].item() / max(w[2].item(), 1),
                                 "train_error": 100.0 * w[1].item() / max(w[2].item(), 1)}  # fmt: skip
        self.window.zero_()
        val: dict[str, Any] = {}
        if self.val_loader is not None:
            val = evaluate(self.model, self.val_loader, self.normalizer, "center", device=self.device,
                           amp=self.cfg.amp)  # fmt: skip
            entry.update(val)
            self.recipe.observe_eval_error(entry["top1_error"])
        self.history.append(entry)
        text = f"  val top-1 {entry['top1_error']:.2f}%  top-5 {entry['top5_error']:.2f}%" if val else ""
        logger.info(f"iter {done:>7}/{self.cfg.iters}  lr {lr:.3g}  train loss {entry['train_loss']:.4f}  "
                    f"train err {entry['train_error']:.2f}%{text}  ({time.time() - self.t0:.0f} s)")  # fmt: skip
        if self.rank == 0:
            write_json(self.output_dir / "metrics.json", {"config": self.run_config, "history": self.history})
        if self.writer is not None:
            for key in ("train_loss", "train_error"):
                self.writer.add_scalar(f"train/{key}", entry[key], done)
        return val

    def save(self, final: bool = False) -> None:
        # The statistics since the last history entry, summed over the ranks: a stop between two evaluations must
        # resume them (rank 0 takes the sum back, the others start from zero; the next entry sums all ranks).
        self.window_sum = self.window.clone()
        if self.world_size > 1:
            dist.all_reduce(self.window_sum)
        super().save(final)

    def extra_state(self) -> dict[str, Any]:
        return {"config": self.run_config, "classes": self.train_set.classes, "history": self.history,
                "window": self.window_sum.tolist()}  # fmt: skip

    def load_extra_state(self, checkpoint: dict[str, Any]) -> None:
        self.history = list(checkpoint.get("history", []))
        if "window" in checkpoint and self.rank == 0:
            self.window = torch.tensor(checkpoint["window"], dtype=torch.float64, device=self.device)

    def final_state(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "config": self.run_config, "classes": self.train_set.classes,
                "iteration": self.options.max_iter}  # fmt: skip


def train(config: TrainConfig) -> dict[str, Any]:
    """Train a classifier; returns the metrics dict also written (rank 0) to `output_dir/metrics.json`."""
    cfg = config.resolve()
    assert cfg.batch_size is not None and cfg.arch is not None
    device = runtime.pick_device(cfg.device)
    rank, world = runtime.init_distributed(device)
    out = Path(cfg.output_dir)
    with locked_output_dir(out, rank):
        runtime.setup_logging(out, rank)
        if cfg.batch_size % world:
            raise ValueError(f"batch size {cfg.batch_size} is not divisible by {world} ranks")
        torch.manual_seed(cfg.seed)  # identical initialisation on every rank
        train_set, val_set, normalizer = build_datasets(cfg, rank)
        normalizer = normalizer.to(device)
        model = build_classifier(cfg.arch, num_classes=len(train_set.classes), base_width=cfg.base_width,
                                 shortcut=cfg.shortcut).to(device)  # fmt: skip
        if cfg.sync_bn and world > 1:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        if device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        run_config = {**dataclasses.asdict(cfg), "normalizer": normalizer.to_config(), "world_size": world}
        loop = ClassifierLoop(cfg, model, train_set, val_set, normalizer, device, run_config)
        if cfg.resume:
            loop.resume()
        loop.run()

    history = loop.history
    final = history[-1] if history else {}
    metrics = {
        "config": run_config,
        "final": {k: final.get(k) for k in ("iteration", "top1_error", "top5_error", "train_loss", "train_error")},
        "history": history,
        "train_time_s": time.time() - loop.t0,
    }
    if rank == 0:
        write_json(out / "metrics.json", metrics)
    runtime.barrier()
    return metrics
