"""What ``tools/train_det.py`` and ``tools/test_det.py`` do, as functions: build datasets and the model from a
config, train (resumably, on one or several workers), then run inference, write the dataset's submission files,
evaluate and write ``metrics.json``."""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from backbones.loop_guard import locked_output_dir
from backbones.runtime import barrier, cleanup, get_rank, get_world_size, init_distributed, pick_device, setup_logging
from backbones.sharding import PeerFailed, broadcast_from_first
from detection.build import build_detector, build_test_detector, load_backbone_weights
from detection.config import Config
from detection.data import build_dataset, resolve_split
from detection.data.transforms import DetectionTransform, build_transforms
from detection.engine.evaluate import evaluate_predictions, summarize_metrics
from detection.engine.inference import Predictions, run_inference
from detection.engine.monitor import PeriodicEvaluator
from detection.engine.own_data import (
    check_classes,
    check_data_root,
    own_data_kwargs,
    own_split_name,
    report_empty_images,
)
from detection.engine.run_dir import clear_previous_results, provenance, refuse_foreign_checkpoints
from detection.engine.trainer import Trainer
from detection.engine.validation import ValidationLosses
from detection.fast.optimize import optimize_for_inference, optimize_for_training
from detection.files import write_json
from detection.weights.transfer import load_detector_weights

logger = logging.getLogger("detection")


@dataclass
class RunOptions:
    dataset: str
    data_root: Path
    output_dir: Path
    device: str = "auto"
    amp: bool = False
    strict: bool = False
    progress: bool = True
    resume: bool = False
    resume_anyway: bool = False  # --resume even from a checkpoint written with another config
    skip_nonfinite: bool = False
    deterministic: bool = False
    evaluate: bool = True
    optimize: bool = True  # detection/fast/optimize.py for training and (on a copy) for testing: same numbers, faster
    test_split: str = ""
    analyze: bool = False  # tools/test_det.py --analyze: report.html beside metrics.json (detection/engine/analysis.py)
    weights: list[Path] = field(default_factory=list)  # the checkpoints tested, recorded in metrics.json
    dataset_kwargs: dict[str, Any] = field(default_factory=dict)


def share_cpu_with_workers(device: torch.device, num_workers: int) -> None:
    """On the CPU, leave a core to each data-loading worker: PyTorch's OpenMP threads slow down many times over
    (measured 10–40× on 2 cores) when another busy process takes one of their cores."""
    if device.type == "cpu" and num_workers > 0:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        torch.set_num_threads(max(1, min(torch.get_num_threads(), cores - num_workers)))


def make_dataset(opts: RunOptions, cfg: Config, split: str, train: bool, classes: list[str] | None = None,
                 transforms: DetectionTransform | None = None) -> Any:
    """The dataset of ``opts.dataset`` (own data from ``cfg.data``'s fields, docs/custom_data.md); ``classes``
    (a checkpoint's) fix the label order of a VOC-format folder; ``transforms`` replace the training / testing
    ones built from ``cfg.input``."""
    i = cfg.input
    if transforms is None:
        transforms = build_transforms(
            train=train, min_sizes=tuple(i.train_min_sizes), max_size=i.train_max_size, flip_prob=i.flip_prob
        )
    own = own_data_kwargs(opts.dataset, cfg.data, train=train, classes=classes)
    check_data_root(opts.dataset, opts.data_root, own)
    split = own_split_name(opts.dataset, cfg.data, train=train) or split
    dataset = build_dataset(
        opts.dataset, opts.data_root, split, transforms, train=train, strict=opts.strict,
        **{**cfg.data.extra, **own, **opts.dataset_kwargs},
    )
    for part in getattr(dataset, "datasets", [dataset]):
        part.max_pixels = cfg.input.max_image_pixels
    return dataset


def train(cfg: Config, opts: RunOptions) -> dict[str, Any] | None:
    """Train to ``cfg.solver.max_iter`` (or an early stop, ``test.patience``) and evaluate on the test split (under
    torchrun sharded over the ranks, every rank returning the metrics). Returns the metrics.

    Before any work, rank 0 checks that ``opts.output_dir`` is a writable folder, locks it for this run
    (``train.lock``) and, without ``opts.resume``, refuses a folder holding another run's checkpoints
    (:mod:`detection.engine.run_dir`)."""
    device = pick_device(opts.device)
    rank, world_size = init_distributed(device)
    with locked_output_dir(opts.output_dir, rank):
        if rank == 0 and not opts.resume:
            refuse_foreign_checkpoints(opts.output_dir)
        return _train(cfg, opts, device, rank, world_size)


def _train(cfg: Config, opts: RunOptions, device: torch.device, rank: int, world_size: int) -> dict[str, Any] | None:
    setup_logging(opts.output_dir, rank)
    if opts.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.manual_seed(cfg.seed)
    share_cpu_with_workers(device, cfg.data.num_workers)
    train_split = resolve_split(opts.dataset, cfg.data.train_split, train=True, root=opts.data_root)
    test_split = resolve_split(opts.dataset, opts.test_split, cfg.data.test_split, train=False,
                               root=opts.data_root)
    dataset = make_dataset(opts, cfg, train_split, train=True)
    train_split = own_split_name(opts.dataset, cfg.data, train=True) or train_split  # own JSONs: named by their files
    check_classes(cfg, dataset.classes, f"{opts.dataset} {train_split}")
    logger.info("training on %s %s: %d images, %d classes, %d worker(s), device %s",
                opts.dataset, train_split, len(dataset), len(dataset.classes), world_size, device)
    report_empty_images(dataset, keep_empty=cfg.data.keep_empty)
    if rank == 0:
        opts.output_dir.mkdir(parents=True, exist_ok=True)
        write_json(opts.output_dir / "config.json", cfg.to_dict())
    model = build_detector(cfg)
    if opts.optimize:  # frozen BN folded into each conv's weight at every step, channels-last: same parameters
        optimize_for_training(model)
    trainer = Trainer(
        model=model, cfg=cfg, dataset=dataset, output_dir=opts.output_dir, device=device, classes=dataset.classes,
        amp=opts.amp, skip_nonfinite=opts.skip_nonfinite, progress=opts.progress,
    )
    trainer.evaluator = periodic_evaluator(cfg, opts, test_split, device)
    if not (opts.resume and trainer.resume(allow_other_config=opts.resume_anyway)):
        load_backbone_weights(trainer.model, cfg)
        if cfg.model.weights:  # e.g. COCO-trained weights for VOC fine-tuning (Tables 10/11, "baseline+++")
            load_detector_weights(trainer.model, cfg.model.weights, classes=dataset.classes)
    trainer.run()  # SIGTERM / Ctrl-C: a checkpoint at the current iteration, then TrainingInterrupted
    skipped = len(getattr(dataset, "skipped", []))
    if skipped:
        logger.warning("%d unreadable training images were skipped (see the warnings above)", skipped)
    metrics = None
    if opts.evaluate:
        metrics = test(cfg, opts, trainer.model, test_split, device, sharded=world_size > 1)
    barrier()
    cleanup()
    return metrics


def periodic_evaluator(cfg: Config, opts: RunOptions, split: str, device: torch.device) -> PeriodicEvaluator | None:
    """Evaluation on ``split`` every ``test.eval_period`` iterations (None when 0); each writes its files and
    ``metrics.json`` under ``output_dir/eval/iter_<iteration>/``. Under torchrun it is a collective: each rank
    tests its block of the images and computes the validation losses (``test.val_losses``) of the same block, and
    every rank gets the same metrics. ``test.patience`` is its early stopping."""
    if cfg.test.eval_period <= 0:
        return None
    sharded = get_world_size() > 1

    def evaluate(model: torch.nn.Module, iteration: int) -> dict[str, Any]:
        out = opts.output_dir / "eval" / f"iter_{iteration:07d}"
        return test(cfg, dataclasses.replace(opts, output_dir=out, progress=False), model, split, device,
                    sharded=sharded)

    losses = None
    if cfg.test.val_losses:  # the test split at the test scale, with its ground truth, as training would see it
        at_test_scale = build_transforms(train=False, min_sizes=(cfg.input.test_min_size,),
                                         max_size=cfg.input.test_max_size, resize_in_eval=True)  # fmt: skip
        dataset = make_dataset(opts, cfg, split, train=False, transforms=at_test_scale)
        losses = ValidationLosses(dataset, device=device, seed=cfg.seed, amp=opts.amp,
                                  num_workers=cfg.data.num_workers, sharded=sharded)  # fmt: skip
    return PeriodicEvaluator(evaluate, period=cfg.test.eval_period, metric=cfg.test.best_metric,
                             output_dir=opts.output_dir, patience=cfg.test.patience, losses=losses)


def test(
    cfg: Config,
    opts: RunOptions,
    model: torch.nn.Module | Sequence[torch.nn.Module],
    split: str,
    device: torch.device | None = None,
    classes: list[str] | None = None,
    *,
    sharded: bool = False,
) -> dict[str, Any]:
    """Inference on ``split`` (several models: their ensemble), submission files and metrics under
    ``opts.output_dir``; prints the table. ``classes``: the model's class names (a checkpoint's); data with other
    names is an error.

    ``sharded``: call on every rank of a torchrun process group (a collective); each rank tests a block of the
    images, rank 0 writes the files and ``metrics.json`` (the same as one process, plus ``world_size`` and
    ``images_per_rank``) and every rank returns those metrics."""
    device = device or pick_device(opts.device)
    dataset = make_dataset(opts, cfg, split, train=False, classes=classes)
    if get_rank() == 0 or not sharded:  # one process clears; the others only compute
        clear_previous_results(opts.output_dir)
    split = own_split_name(opts.dataset, cfg.data, train=False) or split
    check_classes(cfg, dataset.classes, f"{opts.dataset} {split}", model_classes=classes)
    models = [model] if isinstance(model, torch.nn.Module) else list(model)
    for member in models:
        member.to(device)
    if opts.optimize:
        models = [optimize_for_inference(copy.deepcopy(member)) for member in models]
    model = build_test_detector(models, cfg)  # the image pyramid, flips, the ensemble, as configured
    share_cpu_with_workers(device, cfg.data.num_workers)
    predictions = run_inference(
        model, dataset, device=device, batch_size=1, num_workers=cfg.data.num_workers, amp=opts.amp,
        progress=opts.progress, sharded=sharded, strict=opts.strict,
    )
    if get_rank() != 0 and sharded:  # rank 0 writes; the others return its metrics
        metrics = broadcast_from_first(None)
        if metrics is None:
            raise PeerFailed("rank 0 could not write the results (its error is above)")
        return metrics
    try:
        metrics = _score(cfg, opts, dataset, predictions, split)
    except BaseException:
        if sharded:
            broadcast_from_first(None)
        raise
    if sharded:
        broadcast_from_first(metrics)
    return metrics


def _score(cfg: Config, opts: RunOptions, dataset: Any, predictions: Predictions, split: str) -> dict[str, Any]:
    """Submission files, ``metrics.json`` and the printed table of ``predictions`` (on one rank)."""
    metrics, table = evaluate_predictions(opts.dataset, dataset, predictions, opts.output_dir, split)
    # The wall time per image of the whole (possibly sharded) run: throughput, not one rank's latency.
    metrics["seconds_per_image"] = predictions.seconds / max(len(predictions.outputs), 1)
    metrics.update(world_size=predictions.world_size, images_per_rank=predictions.images_per_rank)
    weights = opts.weights or [p for p in [opts.output_dir / "model_final.pth"] if p.is_file()]
    metrics["provenance"] = provenance(cfg.to_dict(), weights)
    metrics = summarize_metrics(metrics)
    write_json(opts.output_dir / "metrics.json", metrics)
    score = "not scored" if metrics["mAP50"] is None else f"{metrics['metric']} = {100 * metrics['mAP50']:.1f}"
    failed = f", {len(metrics['failed_images'])} the model failed on" if metrics["failed_images"] else ""
    print(f"\n{opts.dataset} {split}: {score}  ({metrics['images']} images, {metrics['skipped_images']} unreadable"
          f"{failed})\n")
    print(table)
    logger.info("metrics written to %s", opts.output_dir / "metrics.json")
    if opts.analyze and metrics["mAP50"] is not None:
        from detection.engine.analysis import write_analysis

        report = write_analysis(dataset, metrics, opts.output_dir, split)
        if report is not None:
            print(f"analysis report: {report}")
    return metrics
