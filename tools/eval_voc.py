"""Evaluate PASCAL VOC detection results exactly as the devkit (py-faster-rcnn voc_eval).

Example::

    python tools/eval_voc.py --voc-root VOCdevkit/VOC2007 --split test --results output/results \\
        --json voc07.json --plot pr.png
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from detection.devkit import voc_uses_07_metric
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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--voc-root", type=Path, required=True, help="e.g. VOCdevkit/VOC2007 (Annotations/, ImageSets/)"
    )
    parser.add_argument("--split", default="test", help="ImageSets/Main/<split>.txt (default: test)")
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
    parser.add_argument("--json", type=Path, help='write {"mAP", "ap": {class: AP}, "metric"} here')
    parser.add_argument("--plot", type=Path, help="draw the per-class precision-recall curves into this PNG")
    parser.add_argument("--name", default="ours", help="row label of the printed table")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    classes = args.classes.split(",") if args.classes else list(VOC_CLASSES)
    year = re.search(r"(?:19|20)\d\d", args.voc_root.resolve().name)
    metric = args.metric or ("07" if year and voc_uses_07_metric(year.group()) else "area")
    try:
        ground_truth = load_voc_ground_truth(args.voc_root, args.split, progress=True)
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
        args.json.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    if args.plot:
        plot_pr_curves(result, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
