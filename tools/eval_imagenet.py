"""Evaluate ImageNet (ILSVRC) DET or CLS-LOC results as the official devkit does.

  det: mAP over the 200 classes of devkit/data/map_det.txt; submission lines
       '<image_index> <class_index> <confidence> <xmin> <ymin> <xmax> <ymax>' (1-based pixels).
  loc: top-1 / top-k localisation and classification error from a CSV 'ImageId,PredictionString' with up to
       five 'wnid xmin ymin xmax ymax' groups per image.

``--data-root`` is the ILSVRC folder (``Annotations/``, ``ImageSets/``, ``devkit/``). Also::

    python tools/eval_imagenet.py det --data-root ILSVRC2013_DET --split val2 --results dets.txt
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from detection.engine.cli import HelpFormatter, add_data_root, add_json, add_no_progress, add_split, tool_parser
from detection.evaluation.imagenet_det import evaluate_det_files
from detection.evaluation.imagenet_loc import MAX_GUESSES, evaluate_loc_files
from detection.evaluation.tables import ap_table, markdown_table, pct
from detection.evaluation.voc import EvaluationInputError
from detection.files import write_json

EXAMPLE = ("python tools/eval_imagenet.py loc --data-root datasets/imagenet_loc_gen/ILSVRC "
           "--results output/quickstart_loc/loc_predictions.csv --json loc.json")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def build_parser() -> argparse.ArgumentParser:
    parser = tool_parser(__doc__, EXAMPLE)
    sub = parser.add_subparsers(dest="task", required=True)
    det = sub.add_parser("det", help="DET mAP (eval_detection.m)", formatter_class=HelpFormatter)
    add_split(det, "ImageSets/DET/<split>.txt, e.g. val or val2", default="val")
    loc = sub.add_parser("loc", help="CLS-LOC error (eval_clsloc.m)", formatter_class=HelpFormatter)
    loc.add_argument("--top", type=int, default=MAX_GUESSES, help="k of the top-k errors (1..5, default 5)")
    loc.add_argument("--gt-class", action="store_true", help="also the LOC error on the GT class (Table 13)")
    for p in (det, loc):
        add_data_root(p, "the ILSVRC folder: Annotations/, ImageSets/, devkit/", old=("--ilsvrc-root",), required=True)
        p.add_argument("--results", type=Path, required=True, help="the results file")
        p.add_argument("--blacklist", type=Path,
                       help="devkit blacklist file (det default: the devkit's own, if devkit/data has one)")
        add_json(p)
        add_no_progress(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.task == "det":
            result = evaluate_det_files(
                args.data_root, args.split, args.results, args.blacklist, progress=not args.no_progress
            )
            print(f"ILSVRC DET {args.split}: mAP = {pct(result.mAP)}\n")
            print(ap_table(result.ap, result.mAP, {w: f"{w} {n}" for w, n in result.names.items()}))
        else:
            result = evaluate_loc_files(
                args.data_root, args.results, args.top, args.blacklist, args.gt_class, progress=not args.no_progress
            )
            numbers = result.to_dict()
            print(f"ILSVRC CLS-LOC val: {result.num_images} images, {result.num_blacklisted} blacklisted")
            if result.num_missing:
                print(
                    f"warning: {result.num_missing} images have no predictions (counted as wrong)",
                    file=sys.stderr,
                )
            print(markdown_table(["error (%)", *numbers], [["", *(pct(v) for v in numbers.values())]]))
    except (EvaluationInputError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        write_json(args.json, result.to_dict())
    return 0


if __name__ == "__main__":
    sys.exit(main())
