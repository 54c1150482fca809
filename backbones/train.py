"""Iteration-based classifier training with the paper's recipes (Sec. 3.4 ImageNet, Sec. 4.2 CIFAR).

One process per device; under `torchrun` the model is wrapped in DistributedDataParallel (nccl on CUDA, gloo on
CPU), each rank reads its own shard of every global batch, and only rank 0 writes files. A run is a pure function
of (config, seed): the batch at iteration t and its augmentation are derived from (seed, epoch, index), so
`resume=True` continues from the latest good checkpoint and reaches the same weights as an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Subset
from tqdm import tqdm

from backbones import runtime
from backbones.checkpoint import CheckpointRotation, get_rng_state, load_checkpoint, save_checkpoint, set_rng_state
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
def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


def train(config: TrainConfig) -> dict[str, Any]:
    """Train a classifier; returns the metrics dict also written (rank 0) to `output_dir/metrics.json`."""
    cfg = config.resolve()
    assert cfg.iters is not None and cfg.batch_size is not None and cfg.arch is not None
    assert cfg.eval_every is not None and cfg.ckpt_every is not None and cfg.lr is not None
    device = runtime.pick_device(cfg.device)
    rank, world = runtime.init_distributed(device)
    out = Path(cfg.output_dir)
    runtime.setup_logging(out, rank)
    if cfg.batch_size % world:
        raise ValueError(f"batch size {cfg.batch_size} is not divisible by {world} ranks")
    per_rank = cfg.batch_size // world

    torch.manual_seed(cfg.seed)  # identical initialisation on every rank
    train_set, val_set, normalizer = build_datasets(cfg, rank)
    normalizer = normalizer.to(device)
    model = build_classifier(cfg.arch, num_classes=len(train_set.classes), base_width=cfg.base_width,
                             shortcut=cfg.shortcut).to(device)  # fmt: skip
    if cfg.sync_bn and world > 1:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    channels_last = device.type == "cuda"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    patience = cfg.plateau_patience if cfg.lr_schedule == "plateau" else None
    schedule = RecipeSchedule(optimizer, cfg.lr, cfg.lr_steps or [], warmup=bool(cfg.warmup),
                              warmup_error=cfg.warmup_error, plateau_patience=patience)  # fmt: skip
    scaler = runtime.grad_scaler(device, cfg.amp)
    run_config = {**dataclasses.asdict(cfg), "normalizer": normalizer.to_config(), "world_size": world}

    start, history = 0, []
    checkpoints = CheckpointRotation(out, prefix="checkpoint", keep=cfg.keep_checkpoints)
    if cfg.resume and rank == 0:
        checkpoints.remove_partial_writes()
    ckpt_path = checkpoints.newest() if cfg.resume else None
    if ckpt_path is not None:
        ckpt = load_checkpoint(ckpt_path)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        schedule.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        start, history = int(ckpt["iteration"]), list(ckpt.get("history", []))
        set_rng_state(ckpt["rng"])
        logger.info("resumed from %s at iteration %d", ckpt_path, start)
    net = runtime.data_parallel(model, device)

    batches = TrainBatchSampler(len(train_set), per_rank, rank=rank, world=world, seed=cfg.seed,
                                start=start, stop=cfg.iters)  # fmt: skip
    loader = DataLoader(train_set, batch_sampler=batches, num_workers=cfg.workers,
                        pin_memory=device.type == "cuda", worker_init_fn=worker_init)  # fmt: skip
    val_loader = eval_loader(val_set, per_rank, cfg.workers, rank, world) if val_set is not None else None

    bar = tqdm(total=cfg.iters, initial=start, disable=rank != 0 or not cfg.progress, dynamic_ncols=True, desc=cfg.arch)
    window = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, errors, images since last eval
    writer = runtime.summary_writer(out, rank)  # TensorBoard scalars, as the detection trainer writes
    t0 = time.time()
    model.train()
    for it, (images, targets) in zip(range(start, cfg.iters), loader):
        lr = schedule.set_lr(it)
        x = normalizer(images.to(device, non_blocking=True))
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = targets.to(device, non_blocking=True)
        with runtime.autocast(device, cfg.amp):
            logits = net(x)
        loss = F.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

        stats = torch.stack([loss.detach().double() * len(y), (logits.argmax(1) != y).sum().double(),
                             torch.tensor(float(len(y)), dtype=torch.float64, device=device)])  # fmt: skip
        window += stats
        if schedule.warming_up:  # every rank must leave warm-up at the same step
            if world > 1:
                dist.all_reduce(stats)
            schedule.observe_train_error(100.0 * stats[1].item() / stats[2].item())
            if not schedule.warming_up:
                logger.info("warm-up done at iteration %d: train error < %g%%, lr back to base", it + 1,
                            cfg.warmup_error)
        if rank == 0 and (it % 10 == 0 or it + 1 == cfg.iters):
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.3g}")
        bar.update(1)

        done = it + 1
        if done % cfg.eval_every == 0 or done == cfg.iters:
            if world > 1:
                dist.all_reduce(window)
            entry: dict[str, Any] = {"iteration": done, "lr": lr,
                                     "train_loss": window[0].item() / max(window[2].item(), 1),
                                     "train_error": 100.0 * window[1].item() / max(window[2].item(), 1)}  # fmt: skip
            window.zero_()
            if val_loader is not None:
                entry.update(evaluate(model, val_loader, normalizer, "center", device=device, amp=cfg.amp))
                schedule.observe_eval_error(entry["top1_error"])
            history.append(entry)
            val = f"  val top-1 {entry['top1_error']:.2f}%  top-5 {entry['top5_error']:.2f}%" if val_loader else ""
            logger.info(f"iter {done:>7}/{cfg.iters}  lr {lr:.3g}  train loss {entry['train_loss']:.4f}  "
                        f"train err {entry['train_error']:.2f}%{val}  ({time.time() - t0:.0f} s)")  # fmt: skip
            if rank == 0:
                _write_json(out / "metrics.json", {"config": run_config, "history": history})
            if writer is not None:
                for key, value in entry.items():
                    if key != "iteration":
                        group = "train" if key.startswith("train") or key == "lr" else "val"
                        writer.add_scalar(f"{group}/{key}", value, done)
                writer.flush()
        if done % cfg.ckpt_every == 0 or done == cfg.iters:
            if rank == 0:
                state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                         "scheduler": schedule.state_dict(), "scaler": scaler.state_dict(), "iteration": done,
                         "rng": get_rng_state(), "config": run_config, "classes": train_set.classes,
                         "history": history}  # fmt: skip
                checkpoints.save(done, state)
            runtime.barrier()
    bar.close()
    if writer is not None:
        writer.close()

    final = history[-1] if history else {}
    metrics = {
        "config": run_config,
        "final": {k: final.get(k) for k in ("iteration", "top1_error", "top5_error", "train_loss", "train_error")},
        "history": history,
        "train_time_s": time.time() - t0,
    }
    if rank == 0:
        save_checkpoint(out / "model_final.pth", {"model": model.state_dict(), "config": run_config,
                                                  "classes": train_set.classes, "iteration": cfg.iters})  # fmt: skip
        _write_json(out / "metrics.json", metrics)
    runtime.barrier()
    return metrics
