"""Evaluate COCO bbox results with pycocotools' COCOeval: the 12 standard numbers, per-class AP / AP50,
and the paper's Table 8/9 columns (mAP@.5, mAP@[.5, .95]).

Results: a JSON list of {"image_id", "category_id" (the dataset's ids), "bbox": [x, y, w, h], "score"}, as
``tools/test_det.py`` writes them. Ground truth: ``--data-root`` in the COCO layout with ``--split`` (reads
``annotations/instances_<split>.json``), or ``--data-root`` naming the instances JSON itself (own data).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from detection.data.coco import default_annotation_file
from detection.engine.cli import add_data_root, add_json, add_split, tool_parser
from detection.evaluation.coco import coco_eval, count_inverted_results, load_coco, load_coco_results
from detection.evaluation.tables import coco_stats_table, coco_table, per_class_table
from detection.evaluation.voc import EvaluationInputError
from detection.files import write_json

# After tools/quickstart.py: the generated shapes set is in the COCO layout.
EXAMPLE = ("python tools/eval_coco.py --data-root datasets/shapes --split val "
           "--results output/quickstart/detector/coco_results_val.json --json coco.json")


def build_parser() -> argparse.ArgumentParser:
    parser = tool_parser(__doc__, EXAMPLE)
    add_data_root(parser, "COCO layout (annotations/instances_<split>.json), or that JSON file itself",
                  old=("--annotations",), required=True)
    add_split(parser, "reads annotations/instances_<split>.json", default="val2017")
    parser.add_argument("--results", type=Path, required=True, help="detections in the COCO results format")
    add_json(parser, '{"stats": [12 numbers], "per_class": {name: {AP, AP50}}}')
    parser.add_argument("--name", default="ours", help="row label of the Table 9 row")
    parser.add_argument("--verbose", action="store_true", help="show pycocotools' own output")
    return parser


def annotation_file(data_root: Path, split: str) -> Path:
    """``--data-root``'s ground truth: the file it names, or a COCO root's ``annotations/instances_<split>.json``."""
    return default_annotation_file(data_root, split) if data_root.is_dir() else data_root


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    annotations = annotation_file(args.data_root, args.split)
    try:
        print(f"loading {annotations} ...", file=sys.stderr)
        coco_gt = load_coco(annotations, verbose=args.verbose)
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
        write_json(args.json, result.to_dict())
    return 0


if __name__ == "__main__":
    sys.exit(main())
