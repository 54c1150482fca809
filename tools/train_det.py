#!/usr/bin/env python
"""Train Faster R-CNN (ResNet C4) end to end, then evaluate on the dataset's test split.

    python tools/train_det.py --dataset coco --data-root datasets/coco --config configs/coco/faster_rcnn_r50_c4.yaml
    torchrun --nproc_per_node=8 tools/train_det.py --dataset voc --data-root datasets/VOCdevkit \
        --config configs/voc/faster_rcnn_r101_c4_0712.yaml --amp

Trailing ``key=value`` arguments override the config (e.g. ``solver.base_lr=0.01``).
"""

from __future__ import annotations

import argparse
import sys

from torch.distributed.elastic.multiprocessing.errors import record

from backbones.checkpoint import CheckpointError, CheckpointWriteError
from backbones.weights import WeightsError
from detection.config import ConfigError, load_config
from detection.data import DatasetError
from detection.engine.cli import add_config, add_run_arguments, run_options, tool_parser
from detection.engine.own_data import add_own_data_arguments, own_data_overrides
from detection.engine.preemption import TrainingInterrupted
from detection.engine.run import train
from detection.engine.run_dir import RunDirError
from detection.engine.trainer import NonFiniteLossError

EXAMPLE = "python tools/train_det.py --dataset shapes --config configs/quickstart.yaml solver.max_iter=100"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    args.overrides += own_data_overrides(args)
    return args


def build_parser() -> argparse.ArgumentParser:
    p = tool_parser(__doc__, EXAMPLE)
    add_config(p)
    p.add_argument("--resume", action="store_true", help="continue from the newest good checkpoint in --output-dir")
    p.add_argument("--resume-anyway", action="store_true",
                   help="--resume even from a checkpoint written with another config (e.g. a longer max_iter)")
    p.add_argument("--skip-nonfinite", action="store_true", help="skip batches whose loss is NaN/inf")
    p.add_argument("--deterministic", action="store_true", help="deterministic kernels (exact resumption on CPU)")
    p.add_argument("--no-eval", action="store_true", help="do not evaluate after training")
    add_own_data_arguments(p)
    add_run_arguments(p, output_dir="output/train")
    return p


@record  # under torchrun, a failing worker's exception becomes the job's "Root Cause" summary
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    opts = run_options(
        args, resume=args.resume or args.resume_anyway, resume_anyway=args.resume_anyway,
        skip_nonfinite=args.skip_nonfinite, deterministic=args.deterministic, evaluate=not args.no_eval,
    )
    try:
        train(cfg, opts)
    except TrainingInterrupted as exc:
        print(f"stopped: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:  # before training started (loading data, building the model): nothing to save
        print("stopped: interrupted before training started; nothing was saved", file=sys.stderr)
        return 130
    except (ConfigError, RunDirError, CheckpointWriteError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1
    except (CheckpointError, WeightsError, DatasetError, NonFiniteLossError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
