"""Evaluate COCO bbox results with pycocotools' COCOeval: the 12 standard numbers, per-class AP / AP50,
and the paper's Table 8/9 columns (mAP@.5, mAP@[.5, .95]).

Results: a JSON list of {"image_id", "category_id" (the dataset's ids), "bbox": [x, y, w, h], "score"}.
Example::

    python tools/eval_coco.py --annotations annotations/instances_minival2014.json \\
        --results dets.json --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from detection.evaluation.coco import coco_eval, count_inverted_results, load_coco, load_coco_results
from detection.evaluation.tables import coco_stats_table, coco_table, per_class_table
from detection.evaluation.voc import EvaluationInputError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--annotations", type=Path, required=True, help="instances_<split>.json")
    parser.add_argument("--results", type=Path, required=True, help="detections in the COCO results format")
    parser.add_argument(
        "--json", type=Path, help='write {"stats": [12 numbers], "per_class": {name: {AP, AP50}}}'
    )
    parser.add_argument("--name", default="ours", help="row label of the Table 9 row")
    parser.add_argument("--verbose", action="store_true", help="show pycocotools' own output")
    args = parser.parse_args(argv)
    try:
        print(f"loading {args.annotations} ...", file=sys.stderr)
        coco_gt = load_coco(args.annotations, verbose=args.verbose)
        results = load_coco_results(args.results)
        print(f"evaluating {len(results)} detections ...", file=sys.stderr)
        result = coco_eval(coco_gt, results, verbose=args.verbose, source=str(args.results))
    except EvaluationInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    inverted = count_inverted_results(results)
    if inverted:
        print(f"warning: {inverted} of {len(results)} results in {args.results} have inverted boxes (negative width "
              "or height in [x, y, w, h]); they match nothing and count as false positives", file=sys.stderr)
    print("COCOeval (bbox), percent:\n")
    print(coco_stats_table(result.stats))
    print("\nPer class (area all, maxDets 100):\n")
    print(per_class_table(result.per_class))
    print("\nTable 9 columns:\n")
    print(coco_table([(args.name, result.to_dict())]))
    if args.json:
        args.json.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
