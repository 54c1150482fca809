#!/usr/bin/env python
"""Test the localiser: classifier top-5 classes, per-class RPN boxes (1-crop and dense), R-CNN rescoring; writes
the challenge CSVs (``ImageId,PredictionString``, ``wnid xmin ymin xmax ymax`` 1-based) and prints their errors.

    python tools/test_loc.py --data-root datasets/imagenet_loc --rpn-weights output/loc/rpn/model_final.pth \
        --classifier output/cls_r101/model_final.pth [--rcnn-weights output/loc/rcnn/model_final.pth] \
        --output-dir output/loc/test [--modes 1crop dense] [--limit N]

Each CSV is also scored by ``python tools/eval_imagenet.py loc --ilsvrc-root <root>/ILSVRC --results FILE``
(``--gt-class`` for the ``*_gt_class.csv`` files).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backbones.checkpoint import CheckpointError  # noqa: E402
from detection.errors import DatasetError, EvaluationInputError  # noqa: E402
from detection.evaluation.tables import markdown_table, pct  # noqa: E402
from detection.localization.predict import MODES, localize_split  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", type=Path, required=True, help="CLS-LOC root (ILSVRC/ and the LOC_* files)")
    p.add_argument("--rpn-weights", type=Path, required=True)
    p.add_argument("--classifier", required=True, help="classification checkpoint predicting the classes")
    p.add_argument("--rcnn-weights", type=Path, help="R-CNN stage weights (adds the rpn_rcnn_dense system)")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--split", default="val", choices=("val", "train"))
    p.add_argument("--limit", type=int, default=0, help="test only the first N images")
    p.add_argument("--output-dir", type=Path, default=Path("output/loc/test"))
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        metrics = localize_split(args.rpn_weights, args.classifier, args.data_root, args.output_dir,
                                 rcnn_weights=args.rcnn_weights, modes=args.modes, split=args.split,
                                 limit=args.limit, progress=not args.no_progress, device=args.device)  # fmt: skip
    except (CheckpointError, DatasetError, EvaluationInputError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    keys = ["gt_class_loc_error", "top1_loc_error", "top5_loc_error", "top5_cls_error"]
    rows = [[system, *(pct(m[k]) for k in keys)] for system, m in metrics.items()]
    print(markdown_table(["system (error %)", *keys], rows))
    print(f"CSV files and metrics.json in {args.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
