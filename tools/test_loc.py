#!/usr/bin/env python
"""Test the localiser: classifier top-5 classes, per-class RPN boxes (1-crop and dense), R-CNN rescoring; writes
the challenge CSVs (``ImageId,PredictionString``, ``wnid xmin ymin xmax ymax`` 1-based) and prints their errors.

``--weights`` is the per-class RPN (``tools/train_loc.py rpn``), ``--cls-weights`` the classifier that predicts
the top-5 classes, ``--rcnn-weights`` the optional R-CNN stage. Each CSV is also scored by
``python tools/eval_imagenet.py loc --data-root <root>/ILSVRC --results FILE`` (``--gt-class`` for the
``*_gt_class.csv`` files). Under ``torchrun --nproc_per_node=N`` each process localises a block of the images and
rank 0 writes the same files (metrics.json records ``world_size`` and ``images_per_rank``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from backbones.checkpoint import CheckpointError
from backbones.runtime import cleanup, init_distributed, pick_device
from backbones.sharding import PeerFailed
from detection.engine.cli import (
    add_data_root,
    add_device,
    add_flag,
    add_json,
    add_no_progress,
    add_output_dir,
    add_split,
    add_weights,
    tool_parser,
)
from detection.errors import DatasetError, EvaluationInputError
from detection.evaluation.tables import markdown_table, pct
from detection.files import write_json
from detection.localization.predict import MODES, localize_split

EXAMPLE = ("python tools/test_loc.py --data-root datasets/imagenet_loc_gen "
           "--weights output/quickstart_loc/rpn/model_final.pth "
           "--cls-weights output/quickstart_loc/classifier/model_final.pth --output-dir output/loc_test")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def build_parser() -> argparse.ArgumentParser:
    p = tool_parser(__doc__, EXAMPLE)
    add_data_root(p, "CLS-LOC layout: ILSVRC/ and the LOC_* files", required=True)
    add_weights(p, "the per-class RPN written by tools/train_loc.py rpn", old=("--rpn-weights",), required=True)
    add_flag(p, "--cls-weights", old=("--classifier",), required=True, metavar="FILE",
             help="classification checkpoint predicting the top-5 classes")
    add_flag(p, "--rcnn-weights", type=Path, metavar="FILE",
             help="R-CNN stage checkpoint (adds the rpn_rcnn_dense system)")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    add_split(p, default="val", choices=("val", "train"))
    p.add_argument("--limit", type=int, default=0, help="test only the first N images")
    add_output_dir(p, "output/loc/test")
    add_device(p)
    add_no_progress(p)
    add_json(p, "the metrics; OUTPUT_DIR/metrics.json is always written")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rank, _ = init_distributed(pick_device(args.device))  # (0, 1) without torchrun
    try:
        metrics = localize_split(args.weights, args.cls_weights, args.data_root, args.output_dir,
                                 rcnn_weights=args.rcnn_weights, modes=args.modes, split=args.split,
                                 limit=args.limit, progress=not args.no_progress, device=args.device,
                                 sharded=True)  # fmt: skip
    except (CheckpointError, DatasetError, EvaluationInputError, ValueError, PeerFailed) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        cleanup()
    if rank != 0:
        return 0
    keys = ["gt_class_loc_error", "top1_loc_error", "top5_loc_error", "top5_cls_error"]
    rows = [[system, *(pct(m[k]) for k in keys)] for system, m in metrics.items()]
    print(markdown_table(["system (error %)", *keys], rows))
    print(f"CSV files and metrics.json in {args.output_dir}")
    if args.json is not None:
        write_json(args.json, metrics)
    return 0


if __name__ == "__main__":
    sys.exit(main())
