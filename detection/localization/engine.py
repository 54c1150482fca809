"""Training the two stages of the localiser (``tools/train_loc.py``).

- ``rpn``: the classification network fine-tuned as a per-class RPN on random crops of the training images that
  have boxes (``solver.batch_size`` images per iteration, 8 anchors each).
- ``rcnn``: the trained RPN's ``rcnn.proposals`` best boxes for the ground-truth class of every training image (dense
  test views) plus the ground-truth boxes are the RoIs; RoI-centric mini-batches of ``rcnn_solver.batch_size``
  warped crops fine-tune a fresh copy of the classification network with per-class cls/reg fc layers.

Both train on the toolkit's one loop (:class:`LocLoop`, a :class:`backbones.loop.TrainLoop`): ``python`` or
``torchrun`` (DDP, each rank a shard of every batch), ``amp=True`` for mixed precision, a locked output folder,
``log.txt`` / ``metrics.jsonl`` / TensorBoard, numbered checkpoints and ``model_final.pth``; SIGTERM / SIGINT save a
checkpoint at the current iteration and stop, and ``resume=True`` continues from the newest good checkpoint
exactly: the batch of iteration t is a pure function of (seed, t) and the torch RNG is reseeded before every step
(``backbones.loop.step_seed``), so a resumed run reads and samples what the uninterrupted one would have.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from backbones import load_weights, runtime
from backbones.checkpoint import load_checkpoint, save_checkpoint
from backbones.classify import build_classifier
from backbones.data import IMAGENET_MEAN, IMAGENET_STD, Normalizer, worker_init
from backbones.loop import LoopOptions, TrainLoop
from backbones.loop_guard import locked_output_dir, signal_safe_worker_init
from backbones.train import TrainBatchSampler
from detection.data.io import read_image
from detection.devkit import from_devkit_boxes
from detection.localization.config import LocConfig, SolverLocConfig, loc_config_from_dict
from detection.localization.data import LocRecord, LocTrainDataset, collate_loc, read_cls_loc
from detection.localization.inference import RPNOutputs, dense_views, rcnn_targets, warp_crops
from detection.localization.model import PerClassRPN, RCNNLocalizer
from detection.modeling.anchors import AnchorGenerator

__all__ = ["build_net", "build_rpn", "build_rcnn", "load_normalizer", "train_rpn", "train_rcnn"]

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- building


def build_net(cfg: LocConfig, weights: str | None = None) -> nn.Module:
    """The classification network ``net.arch`` with ``weights`` (default ``net.weights``; "none" keeps the He
    initialisation), its fc dropped: both stages read conv5 only (and DDP refuses a parameter without gradient), so
    a classifier of any number of classes (torchvision's 1000) serves."""
    net = build_classifier(cfg.net.arch, num_classes=cfg.num_classes, base_width=cfg.net.base_width)
    source = weights or cfg.net.weights
    if source != "none":
        load_weights(net, source, ignore=("fc.",))
    net.fc = nn.Identity()
    return net


def build_rpn(cfg: LocConfig, weights: str | None = None) -> PerClassRPN:
    """The per-class RPN on the classification network's conv5 (its fc dropped)."""
    anchors = AnchorGenerator(cfg.rpn.anchor_sizes, cfg.rpn.aspect_ratios, cfg.rpn.stride)
    return PerClassRPN(build_net(cfg, weights), cfg.num_classes, anchors, fg_iou=cfg.rpn.fg_iou,
                       bg_iou=cfg.rpn.bg_iou, anchors_per_image=cfg.rpn.anchors_per_image,
                       positive_fraction=cfg.rpn.positive_fraction)  # fmt: skip


def build_rcnn(cfg: LocConfig, weights: str | None = None) -> RCNNLocalizer:
    """The R-CNN stage: the classification network (its fc dropped) with per-class cls/reg fc layers."""
    return RCNNLocalizer(build_net(cfg, weights), cfg.num_classes)


def load_normalizer(weights: str) -> Normalizer:
    """The input normalisation a classifier checkpoint was trained with (its ``config.normalizer``), else
    torchvision's ImageNet mean/std."""
    if weights not in ("torchvision", "none") and Path(weights).is_file():
        saved = (load_checkpoint(weights).get("config") or {}).get("normalizer")
        if saved:
            return Normalizer(saved["mean"], saved["std"])
    return Normalizer(IMAGENET_MEAN, IMAGENET_STD)


class _Losses(nn.Module):
    """Routes ``forward`` to ``model.losses`` so that DistributedDataParallel's hooks see the loss computation."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *args: Any) -> dict[str, Tensor]:
        return self.model.losses(*args)


# ---------------------------------------------------------------------------------------------- the loop


def _lr_at(solver: SolverLocConfig, it: int) -> float:
    lr = solver.lr * 0.1 ** sum(it >= s for s in solver.steps)
    if it < solver.warmup_iters:
        lr *= (it + 1) / solver.warmup_iters
    return lr


class LocLoop(TrainLoop):
    """One stage of the localiser on :class:`backbones.loop.TrainLoop`: SGD on ``model.losses(*batch)`` over
    ``make_batches(start)`` (the batches from iteration ``start`` on) with :func:`_lr_at`'s schedule. Numbered
    checkpoints serve ``--resume`` of an unfinished stage; a finished one leaves ``model_final.pth``."""

    def __init__(self, model: nn.Module, make_batches: Callable[[int], Iterable[tuple[Any, ...]]],
                 solver: SolverLocConfig, out: Path, *, device: torch.device, state_extra: dict[str, Any],
                 amp: bool, seed: int, progress: bool, desc: str) -> None:  # fmt: skip
        model.to(device)
        optimizer = torch.optim.SGD(model.parameters(), lr=solver.lr, momentum=solver.momentum,
                                    weight_decay=solver.weight_decay)  # fmt: skip
        options = LoopOptions(max_iter=solver.max_iter, checkpoint_period=solver.checkpoint_period,
                              keep_checkpoints=solver.keep_checkpoints, checkpoint_prefix="model", amp=amp,
                              seed=seed, log_period=solver.log_period, progress=progress, desc=desc,
                              numbered_final=False)  # fmt: skip
        super().__init__(model=model, optimizer=optimizer, lr_at=functools.partial(_lr_at, solver), device=device,
                         output_dir=out, options=options, train_module=_Losses(model))  # fmt: skip
        self.make_batches, self.state_extra = make_batches, state_extra

    def batches(self) -> Iterable[tuple[Any, ...]]:
        return self.make_batches(self.state.iteration)

    def extra_state(self) -> dict[str, Any]:
        return dict(self.state_extra)

    def final_state(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "iteration": self.options.max_iter, **self.state_extra}


@dataclass
class StageRun:
    """Where and how a stage trains: device, this worker's rank and the worker count, and the tool's flags."""

    device: torch.device
    rank: int
    world: int
    resume: bool = False
    amp: bool = False
    progress: bool = True


@contextlib.contextmanager
def _stage_run(out: Path, device_name: str, **flags: bool) -> Iterator[StageRun]:
    """Join torchrun's workers (if any) and, on rank 0, check and lock the output folder for the stage."""
    device = runtime.pick_device(device_name)
    rank, world = runtime.init_distributed(device)
    with locked_output_dir(out, rank):
        runtime.setup_logging(out, rank)
        yield StageRun(device, rank, world, **flags)
    runtime.cleanup()


def _train_stage(model: nn.Module, make_batches: Callable[[int], Iterable[tuple[Any, ...]]],
                 solver: SolverLocConfig, out: Path, run: StageRun, *, seed: int, state_extra: dict[str, Any],
                 desc: str) -> Path:  # fmt: skip
    """Train one stage (``run.resume``: from the newest good checkpoint); returns ``out/model_final.pth``."""
    loop = LocLoop(model, make_batches, solver, out, device=run.device, state_extra=state_extra, amp=run.amp,
                   seed=seed, progress=run.progress, desc=desc)  # fmt: skip
    if run.resume:
        loop.resume()
    loop.run()
    return out / "model_final.pth"


# ---------------------------------------------------------------------------------------------- stage 1: RPN


def train_rpn(cfg: LocConfig, data_root: Path, out: Path, *, resume: bool = False, progress: bool = True,
              device_name: str = "auto", amp: bool = False) -> Path:  # fmt: skip
    """Fine-tune the classification network (``net.weights``) as the per-class RPN; returns the final weights.
    ``amp``: mixed precision (``backbones.runtime.amp_dtype``)."""
    with _stage_run(out, device_name, resume=resume, amp=amp, progress=progress) as run:
        return _train_rpn(cfg, data_root, out, run)


def _train_rpn(cfg: LocConfig, data_root: Path, out: Path, run: StageRun) -> Path:
    device, rank, world = run.device, run.rank, run.world
    data = read_cls_loc(data_root, "train")
    _check_classes(cfg, data.wnids)
    torch.manual_seed(cfg.seed)
    model = build_rpn(cfg)
    normalizer = load_normalizer(cfg.net.weights).to(device)
    dataset = LocTrainDataset(data.records, data.wnids, cfg.input.crop, tuple(cfg.input.scale_range), cfg.seed)
    if cfg.solver.batch_size % world:
        raise ValueError(f"solver.batch_size {cfg.solver.batch_size} is not divisible by {world} ranks")
    logger.info("per-class RPN: %d training images with boxes, %d classes", len(dataset), cfg.num_classes)

    def batches(start: int) -> Any:
        sampler = TrainBatchSampler(len(dataset), cfg.solver.batch_size // world, rank=rank, world=world,
                                    seed=cfg.seed, start=start, stop=cfg.solver.max_iter)  # fmt: skip
        loader = DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.workers, collate_fn=collate_loc,
                            worker_init_fn=signal_safe_worker_init(worker_init))  # fmt: skip
        for images, boxes, labels in loader:
            yield normalizer(images.to(device)), [b.to(device) for b in boxes], labels.to(device)

    extra = {"config": cfg.to_dict(), "classes": data.wnids, "normalizer": normalizer.to_config(), "stage": "rpn"}
    return _train_stage(model, batches, cfg.solver, out, run, seed=cfg.seed, state_extra=extra, desc="rpn")


def _check_classes(cfg: LocConfig, wnids: list[str]) -> None:
    if len(wnids) != cfg.num_classes:
        raise ValueError(f"the synset mapping lists {len(wnids)} classes but num_classes={cfg.num_classes}; "
                         f"set num_classes={len(wnids)}")  # fmt: skip


def load_rpn(path: Path, device: torch.device) -> tuple[PerClassRPN, LocConfig, Normalizer]:
    """A trained per-class RPN (``model_final.pth`` of stage ``rpn``), its config and input normaliser."""
    ckpt = load_checkpoint(path)
    cfg = loc_config_from_dict(ckpt["config"])
    rpn = build_rpn(cfg, weights="none")
    rpn.load_state_dict(ckpt["model"])
    normalizer = Normalizer(ckpt["normalizer"]["mean"], ckpt["normalizer"]["std"])
    return rpn.to(device).eval(), cfg, normalizer.to(device)


# ---------------------------------------------------------------------------------------------- stage 2: R-CNN


@torch.no_grad()
def rpn_proposals(rpn: PerClassRPN, record: LocRecord, label: int, cfg: LocConfig, normalizer: nn.Module,
                  image: np.ndarray | None = None) -> Tensor:  # fmt: skip
    """The RPN's ``rcnn.proposals`` best boxes ``[P, 4]`` for class ``label`` over the dense views of an image."""
    if image is None:
        image, _ = read_image(record.path)
    outputs = RPNOutputs(rpn, dense_views(image, cfg.input.dense_scales, cfg.input.dense_flip), normalizer,
                         image.shape[:2])  # fmt: skip
    boxes, scores = outputs.candidates(label)
    return boxes[scores.topk(min(cfg.rcnn.proposals, len(scores))).indices]


class RoIDataset(Dataset):
    """RoI-centric samples: ``dataset[j]`` → ``(uint8-valued float crop [3, S, S], label, positive, target [4])``
    for RoI j of the pool (proposals and GT boxes of every training image, each against its own class)."""

    CACHE_IMAGES = 1024

    def __init__(self, records: list[LocRecord], wnids: list[str], proposals: list[Tensor], fg_iou: float,
                 warp_size: int, context: int = 0) -> None:  # fmt: skip
        self.records, self.warp_size, self.context = records, warp_size, context
        self.rois, self.owner, self.positive, self.targets = [], [], [], []
        for i, (record, props) in enumerate(zip(records, proposals)):
            gt = torch.from_numpy(from_devkit_boxes([b for w, b in record.boxes if w == wnids[record.label]]))
            rois = torch.cat((props, gt))
            positive, targets = rcnn_targets(rois, gt, fg_iou)
            self.rois.append(rois)
            self.positive.append(positive)
            self.targets.append(targets)
            self.owner.append(torch.full((len(rois),), i))
        self.rois_all, self.owner_all = torch.cat(self.rois), torch.cat(self.owner)
        self.positive_all, self.targets_all = torch.cat(self.positive), torch.cat(self.targets)
        self._cache: dict[int, Tensor] = {}  # decoded images, per worker process

    def _image(self, index: int) -> Tensor:
        if index not in self._cache:
            if len(self._cache) >= self.CACHE_IMAGES:
                self._cache.pop(next(iter(self._cache)))
            image, _ = read_image(self.records[index].path)
            self._cache[index] = torch.from_numpy(image.transpose(2, 0, 1).copy())
        return self._cache[index]

    def __len__(self) -> int:
        return len(self.rois_all)

    def __getitem__(self, j: int) -> tuple[Tensor, int, bool, Tensor]:
        owner = int(self.owner_all[j])
        crop = warp_crops(self._image(owner), self.rois_all[j : j + 1], self.warp_size, self.context)[0]
        return crop, self.records[owner].label, bool(self.positive_all[j]), self.targets_all[j]


class RoIBatchSampler:
    """Per-rank RoI index batches for iterations ``start … stop-1``: ``positive_fraction`` of the global batch
    drawn from the positive RoIs, the rest from the negatives, uniformly with replacement, seeded by
    ``(seed, iteration)`` (so resuming is exact). Rank r takes every world-th index of the global batch."""

    def __init__(self, positive: Tensor, batch_size: int, positive_fraction: float, *, rank: int, world: int,
                 seed: int, start: int, stop: int) -> None:  # fmt: skip
        self.pos, self.neg = positive.nonzero().squeeze(1), (~positive).nonzero().squeeze(1)
        self.batch_size, self.fraction = batch_size, positive_fraction
        self.rank, self.world, self.seed, self.start, self.stop = rank, world, seed, start, stop

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self) -> Any:
        for it in range(self.start, self.stop):
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + it)
            num_pos = round(self.batch_size * self.fraction) if len(self.neg) else self.batch_size
            picks = [self.pos[torch.randint(len(self.pos), (num_pos,), generator=g)]] if len(self.pos) else []
            if len(self.neg):
                num_neg = self.batch_size - (num_pos if picks else 0)
                picks.append(self.neg[torch.randint(len(self.neg), (num_neg,), generator=g)])
            yield torch.cat(picks)[self.rank :: self.world].tolist()


def train_rcnn(cfg: LocConfig, data_root: Path, rpn_weights: Path, out: Path, *, resume: bool = False,
               progress: bool = True, device_name: str = "auto", amp: bool = False) -> Path:  # fmt: skip
    """Stage 2: proposals from the trained RPN (cached in ``out/proposals.pth``), then R-CNN fine-tuning of the
    classification network ``net.weights``; returns the final weights."""
    with _stage_run(out, device_name, resume=resume, amp=amp, progress=progress) as run:
        return _train_rcnn(cfg, data_root, rpn_weights, out, run)


def _train_rcnn(cfg: LocConfig, data_root: Path, rpn_weights: Path, out: Path, run: StageRun) -> Path:
    device, rank, world = run.device, run.rank, run.world
    data = read_cls_loc(data_root, "train")
    _check_classes(cfg, data.wnids)
    cache = out / "proposals.pth"
    if cache.is_file():
        proposals = list(load_checkpoint(cache)["proposals"])
    else:
        rpn, _, rpn_normalizer = load_rpn(rpn_weights, device)
        proposals = [
            rpn_proposals(rpn, r, r.label, cfg, rpn_normalizer)
            for r in tqdm(data.records, desc="proposals", disable=not run.progress or rank != 0)
        ]
        if rank == 0:
            save_checkpoint(cache, {"proposals": proposals, "rpn": str(rpn_weights)})
        del rpn
    torch.manual_seed(cfg.seed)
    model = build_rcnn(cfg)
    normalizer = load_normalizer(cfg.net.weights).to(device)
    rois = RoIDataset(data.records, data.wnids, proposals, cfg.rcnn.fg_iou, cfg.rcnn.warp_size,
                      cfg.rcnn.context_pad)
    logger.info("R-CNN: %d RoIs (%d positive) from %d images", len(rois), int(rois.positive_all.sum()),
                len(data.records))
    solver = cfg.rcnn_solver
    if solver.batch_size % world:
        raise ValueError(f"rcnn_solver.batch_size {solver.batch_size} is not divisible by {world} ranks")

    def batches(start: int) -> Any:
        sampler = RoIBatchSampler(rois.positive_all, solver.batch_size, cfg.rcnn.positive_fraction, rank=rank,
                                  world=world, seed=cfg.seed, start=start, stop=solver.max_iter)  # fmt: skip
        loader = DataLoader(rois, batch_sampler=sampler, num_workers=cfg.workers,
                            worker_init_fn=signal_safe_worker_init(worker_init))
        for crops, labels, positive, targets in loader:
            yield normalizer(crops.to(device)), labels.to(device), positive.to(device), targets.to(device)

    extra = {"config": cfg.to_dict(), "classes": data.wnids, "normalizer": normalizer.to_config(), "stage": "rcnn"}
    return _train_stage(model, batches, solver, out, run, seed=cfg.seed, state_extra=extra, desc="rcnn")


def load_rcnn(path: Path, device: torch.device) -> tuple[RCNNLocalizer, Normalizer]:
    ckpt = load_checkpoint(path)
    rcnn = build_rcnn(loc_config_from_dict(ckpt["config"]), weights="none")
    rcnn.load_state_dict(ckpt["model"])
    normalizer = Normalizer(ckpt["normalizer"]["mean"], ckpt["normalizer"]["std"])
    return rcnn.to(device).eval(), normalizer.to(device)
