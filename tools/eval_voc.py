"""Evaluate PASCAL VOC detection results exactly as the devkit (py-faster-rcnn voc_eval).

``--data-root`` is one VOC year's folder (``Annotations/``, ``ImageSets/Main/``), e.g. ``VOCdevkit/VOC2007``, or
an own VOC-format folder; ``--results`` holds ``comp4_det_<split>_<class>.txt`` as ``tools/test_det.py`` writes them.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from detection.devkit import voc_uses_07_metric
from detection.engine.cli import add_data_root, add_json, add_no_progress, add_split, tool_parser
from detection.evaluation.tables import voc_table
from detection.evaluation.voc import (
    VOC_CLASSES,
    EvaluationInputError,
    count_inverted_detections,
    load_voc_ground_truth,
    plot_pr_curves,
    read_voc_results,
    voc_eval,
)
from detection.files import write_json

EXAMPLE = ("python tools/eval_voc.py --data-root datasets/VOCdevkit/VOC2007 --split test "
           "--results output/voc_test/results --json voc07.json --plot pr.png")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def build_parser() -> argparse.ArgumentParser:
    parser = tool_parser(__doc__, EXAMPLE)
    add_data_root(parser, "one VOC year, e.g. VOCdevkit/VOC2007: Annotations/, ImageSets/", old=("--voc-root",),
                  required=True)
    add_split(parser, "ImageSets/Main/<split>.txt", default="test")
    parser.add_argument(
        "--results",
        type=Path,
        required=True,
        help="folder with comp4_det_<split>_<class>.txt (1-based boxes)",
    )
    parser.add_argument(
        "--metric",
        choices=["07", "area"],
        help="07: 11-point (default for a VOC2007 or older folder); area: VOC2010+ (default otherwise)",
    )
    parser.add_argument("--classes", help="comma-separated class names (default: the 20 VOC classes)")
    parser.add_argument(
        "--allow-missing", action="store_true", help="a missing class file means no detections"
    )
    add_json(parser, '{"mAP", "ap": {class: AP}, "metric"}')
    parser.add_argument("--plot", type=Path, help="draw the per-class precision-recall curves into this PNG")
    parser.add_argument("--name", default="ours", help="row label of the printed table")
    add_no_progress(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    classes = args.classes.split(",") if args.classes else list(VOC_CLASSES)
    year = re.search(r"(?:19|20)\d\d", args.data_root.resolve().name)
    metric = args.metric or ("07" if year and voc_uses_07_metric(year.group()) else "area")
    try:
        ground_truth = load_voc_ground_truth(args.data_root, args.split, progress=not args.no_progress)
        detections = read_voc_results(args.results, args.split, classes, allow_missing=args.allow_missing)
        result = voc_eval(detections, ground_truth, classes, use_07_metric=metric == "07")
    except EvaluationInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    inverted, total = count_inverted_detections(detections)
    if inverted:
        print(f"warning: {inverted} of {total} detections in {args.results} have inverted boxes (xmax < xmin or "
              "ymax < ymin); they match nothing and count as false positives", file=sys.stderr)
    print(f"VOC {args.split}, {len(ground_truth)} images, {metric} metric: mAP = {100 * result.mAP:.1f}\n")
    print(voc_table([(args.name, result.to_dict())], classes))
    if args.json:
        write_json(args.json, result.to_dict())
    if args.plot:
        plot_pr_curves(result, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
