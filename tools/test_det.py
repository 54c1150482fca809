#!/usr/bin/env python
"""Run a trained detector on a dataset split, write the dataset's submission files, and evaluate them.

    python tools/test_det.py --config configs/voc/faster_rcnn_r101_c4_0712.yaml --weights model_final.pth \
        --dataset voc --data-root datasets/VOCdevkit --split 2007_test --output-dir output/voc_test

Writes COCO results JSON (dataset category ids, [x, y, w, h]), VOC ``results/comp4_det_<split>_<class>.txt``
(1-based) or ILSVRC DET result lines, then ``metrics.json``, and prints the per-class table. Trailing
``key=value`` arguments override the config stored in the checkpoint (e.g. ``test.pyramid_min_sizes=[400,600,800]``
for multi-scale testing, ``model.roi_heads.box_voting=true``, ``test.flip=true``). Several ``--weights`` test their
ensemble: every model proposes and scores; the first one's config decides the test-time settings.

Sharded over processes (GPUs with nccl, the CPU with gloo), each testing a block of the images; rank 0 writes the same
files and ``metrics.json`` as one process, which also record ``world_size`` and ``images_per_rank``::

    torchrun --nproc_per_node=4 tools/test_det.py --weights model_final.pth --dataset coco --split val2017 ...
"""

from __future__ import annotations

import argparse
import sys

import torch

from backbones.checkpoint import CheckpointError
from backbones.runtime import cleanup, init_distributed, pick_device, setup_logging
from backbones.sharding import PeerFailed
from detection.build import load_detector, load_ensemble_members
from detection.config import ConfigError, load_config
from detection.data import resolve_split
from detection.data.errors import DatasetError
from detection.engine.cli import (
    add_config,
    add_json,
    add_run_arguments,
    add_split,
    add_weights,
    run_options,
    tool_parser,
)
from detection.engine.inference import ImageFailedError
from detection.engine.own_data import add_own_data_arguments, own_data_overrides
from detection.engine.run import test
from detection.engine.run_dir import RunDirError, prepare_output_dir
from detection.errors import EvaluationInputError
from detection.evaluation.analysis.plots import MissingPlotting
from detection.files import ResultWriteError, write_json

EXAMPLE = ("python tools/test_det.py --weights output/quickstart/detector/model_final.pth --dataset shapes "
           "--data-root datasets/shapes --split val --output-dir output/quickstart/test")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    args.overrides += own_data_overrides(args)
    return args


def build_parser() -> argparse.ArgumentParser:
    p = tool_parser(__doc__, EXAMPLE)
    add_weights(p, "written by tools/train_det.py; several: their ensemble (Appendix B)", nargs="+", required=True)
    add_config(p, "default: the one in the checkpoint")
    add_split(p)
    add_json(p, "the metrics; OUTPUT_DIR/metrics.json is always written")
    p.add_argument("--allow-unnamed-classes", action="store_true",
                   help="ensemble checkpoints that record no class names: trust that their classes agree")
    add_own_data_arguments(p, train=False)
    add_run_arguments(p, output_dir="output/test")
    p.add_argument("--analyze", action="store_true",
                   help="also write the error analysis (report.html, TIDE, PR curves, confusion matrix) beside "
                        "metrics.json; needs matplotlib (pip install resdet[plot])")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = pick_device(args.device)
    rank, _ = init_distributed(device)  # (0, 1) without torchrun
    try:
        return _main(args, device, rank)
    finally:
        cleanup()


def _main(args: argparse.Namespace, device: torch.device, rank: int) -> int:
    try:
        prepare_output_dir(args.output_dir)
        setup_logging(args.output_dir, rank)
        cfg = load_config(args.config, args.overrides) if args.config is not None else None
        model, cfg, classes = load_detector(args.weights[0], cfg, args.overrides)
        models = [model] + load_ensemble_members(args.weights[1:], cfg, classes, args.config, args.overrides,
                                                 allow_unnamed=args.allow_unnamed_classes, first=args.weights[0])
    except (ConfigError, CheckpointError, RunDirError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    opts = run_options(args, analyze=args.analyze, weights=list(args.weights))
    try:
        split = resolve_split(args.dataset, args.split, cfg.data.test_split, train=False, root=opts.data_root)
        metrics = test(cfg, opts, models, split, device, classes=classes or None, sharded=True)
        if args.json is not None and rank == 0:
            write_json(args.json, metrics)
    except (DatasetError, ConfigError, EvaluationInputError, MissingPlotting, ImageFailedError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ResultWriteError as exc:  # names the file and the OS's reason; nothing partial left under its name
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # writing results or metrics: disk full, folder made read-only meanwhile
        print(f"error: cannot write to {args.output_dir}: {exc.strerror or exc} ({exc.filename or ''})",
              file=sys.stderr)
        return 1
    except PeerFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stopped: interrupted; no metrics written", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
